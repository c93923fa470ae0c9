"""cpu fused softmax cross-entropy against the ref backend."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref, use_backend
from conftest import assert_close

SHAPES = [(1, 1), (1, 7), (13, 7), (64, 10), (3, 1001), (257, 3)]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-16)}


def _case(rng, shape, dtype, scale=3.0):
    logits = (scale * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    return logits, labels


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_match_ref(shape, dtype, eps, rng):
    logits, labels = _case(rng, shape, dtype)
    loss_ref, p_ref = ref.softmax_xent_forward(logits.astype(np.float64), labels, eps)
    loss, p = cpu.softmax_xent_forward(logits, labels, eps)
    assert isinstance(loss, float)
    assert p.dtype == dtype and p.shape == shape
    # The loss is summed in float64 from the (exact) float32 logits.
    assert loss == pytest.approx(loss_ref, rel=1e-12, abs=1e-12)
    assert_close(p, p_ref, what="probs", **TOL[dtype])
    d = cpu.softmax_xent_backward(p, labels, eps)
    d_ref = ref.softmax_xent_backward(p.astype(np.float64), labels, eps)
    assert d.dtype == dtype and d.shape == shape
    assert_close(d, d_ref, what="dlogits", **TOL[dtype])


def test_label_smoothing_by_hand():
    logits = np.array([[1.0, 2.0, 3.0]])
    eps = 0.3
    logp = logits - np.log(np.exp(logits).sum())
    q = np.array([[eps / 3, eps / 3 + 1 - eps, eps / 3]])
    loss, p = cpu.softmax_xent_forward(logits, np.array([1]), eps)
    assert loss == pytest.approx(-(q * logp).sum(), rel=1e-14)
    assert_close(cpu.softmax_xent_backward(p, np.array([1]), eps), p - q, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_are_stable(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=dtype)
    loss, p = cpu.softmax_xent_forward(logits, np.array([0, 0]), 0.0)
    assert loss == pytest.approx(1e4, rel=1e-12)
    assert np.all(np.isfinite(p))
    assert_close(p, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_nan_logit_gives_nan_loss_and_row():
    logits = np.zeros((3, 4))
    logits[1, 2] = np.nan
    loss, p = cpu.softmax_xent_forward(logits, np.array([0, 1, 2]), 0.1)
    assert np.isnan(loss)
    assert np.isnan(p[1]).all()
    assert_close(p[[0, 2]], np.full((2, 4), 0.25))


@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_out_of_range_labels_raise_in_op_and_loss(bad):
    logits = np.zeros((3, 4), dtype=np.float32)
    labels = np.array([0, bad, 2])
    with pytest.raises(ValueError, match=f"label {bad} at index 1 is out of range"):
        cpu.softmax_xent_forward(logits, labels, 0.0)
    with pytest.raises(ValueError, match=f"label {bad} at index 1 is out of range"):
        cpu.softmax_xent_backward(np.full((3, 4), 0.25, np.float32), labels, 0.0)
    with use_backend("cpu"):
        with pytest.raises(ValueError, match="SoftmaxCrossEntropy: label"):
            tn.SoftmaxCrossEntropy().forward(logits, labels)


def test_bad_shapes_and_types_raise():
    with pytest.raises(TypeError, match="logits must be float32 or float64"):
        cpu.softmax_xent_forward(np.zeros((2, 3), np.int64), np.zeros(2, np.int64), 0.0)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        cpu.softmax_xent_forward(np.zeros(3), np.zeros(3, np.int64), 0.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        cpu.softmax_xent_forward(np.zeros((2, 3)), np.zeros(3, np.int64), 0.0)


def test_int32_labels_and_inputs_untouched(rng):
    logits, labels = _case(rng, (5, 4), np.float32)
    logits0 = logits.copy()
    loss32, p32 = cpu.softmax_xent_forward(logits, labels.astype(np.int32), 0.1)
    loss64, p64 = cpu.softmax_xent_forward(logits, labels, 0.1)
    assert loss32 == loss64 and np.array_equal(p32, p64)
    assert np.array_equal(logits, logits0)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_loss_layer_on_cpu_matches_ref(eps, rng):
    logits, labels = _case(rng, (13, 7), np.float64)
    out = {}
    for name in ("cpu", "ref"):
        with use_backend(name):
            f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
            out[name] = f.forward(logits, labels), f.backward()
    assert out["cpu"][0] == pytest.approx(out["ref"][0], rel=1e-13)
    assert_close(out["cpu"][1], out["ref"][1], rtol=1e-13, atol=1e-16)
