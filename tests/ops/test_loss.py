"""The softmax cross-entropy ops on every backend against the float64 reference,
and the loss layers (SoftmaxCrossEntropy, MSELoss) and accuracy: values,
gradients, errors, torch parity."""
import math
import warnings

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close
from cudasim import requires_cuda
from harness import FLOATS, Backend
from tinynet.backends import ref, use_backend
from tinynet.ops.loss.cases import SMOOTHING, XENT

# The cpu kernels are tighter than the harness's tolerance.
TIGHT = {"cpu": {np.float32: dict(rtol=2e-6, atol=1e-7),
                 np.float64: dict(rtol=1e-13, atol=1e-16)}}
HOST = ["ref", "cpu"]


def assert_matches(backend, got, want, dtype, what):
    """``backend.assert_matches``, and within ``TIGHT`` where the backend has it."""
    backend.assert_matches(got, want, dtype, what)
    if backend.name in TIGHT:
        assert_close(backend.get(got), want, what=f"{backend.name} {what}",
                     **TIGHT[backend.name][dtype])


def loss_value(backend, loss):
    """The loss as a Python float: a float on a host backend, a 0-d float64 device
    array on a device one."""
    if backend.device == "cpu":
        assert isinstance(loss, float), type(loss)
        return loss
    assert backend.ops.is_native(loss) and loss.shape == () and loss.dtype == np.float64
    return float(loss)


def xent(backend, logits, labels, eps):
    """(loss, probs, dlogits) of ``backend`` for host arrays; the backward reads
    this backend's probs."""
    labels = backend.put(labels, np.int64)
    loss, probs = backend.ops.softmax_xent_forward(backend.put(logits), labels, eps)
    return loss_value(backend, loss), probs, backend.ops.softmax_xent_backward(probs, labels, eps)


# -- the ops against the reference ---------------------------------------------------------

@pytest.mark.parametrize("eps", SMOOTHING)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", XENT, ids=[c.name for c in XENT])
def test_forward_backward_match_ref(backend, case, dtype, eps, rng):
    logits, labels = case.draw(rng, dtype)
    loss, p, d = xent(backend, logits, labels, eps)
    loss_ref, p_ref = ref.softmax_xent_forward(logits.astype(np.float64), labels, eps)
    # Every backend sums the loss in float64 from the (exact) float32 logits.
    assert loss == pytest.approx(loss_ref, rel=1e-12, abs=1e-12)
    assert_matches(backend, p, p_ref, dtype, "probs")
    d_ref = ref.softmax_xent_backward(backend.get(p).astype(np.float64), labels, eps)
    assert_matches(backend, d, d_ref, dtype, "dlogits")


@pytest.mark.parametrize("dtype", FLOATS)
def test_huge_logits_are_stable(backend, dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, p, d = xent(backend, logits, np.array([0, 0]), 0.0)
    assert loss == pytest.approx(1e4, rel=1e-12)
    p = backend.get(p)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(backend.get(d)))
    assert_close(p, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_label_smoothing_by_hand(backend):
    logits = np.array([[1.0, 2.0, 3.0]])
    eps = 0.3
    logp = logits - np.log(np.exp(logits).sum())
    q = np.array([[eps / 3, eps / 3 + 1 - eps, eps / 3]])
    loss, p, d = xent(backend, logits, np.array([1]), eps)
    assert loss == pytest.approx(-(q * logp).sum(), rel=1e-14)
    assert_close(backend.get(d), backend.get(p) - q, rtol=1e-14)


def test_nan_logit_gives_nan_loss_and_row(backend):
    logits = np.zeros((3, 4))
    logits[1, 2] = np.nan
    with np.errstate(invalid="ignore"):
        loss, p, _ = xent(backend, logits, np.array([0, 1, 2]), 0.1)
    p = backend.get(p)
    assert np.isnan(loss)
    assert np.isnan(p[1]).all()
    assert_close(p[[0, 2]], np.full((2, 4), 0.25))


def test_inputs_untouched(backend, rng):
    logits, labels = XENT[2].draw(rng, np.float32)
    x = backend.put(logits)
    labels_b = backend.put(labels)
    _, probs = backend.ops.softmax_xent_forward(x, labels_b, 0.1)
    backend.ops.softmax_xent_backward(probs, labels_b, 0.1)
    assert np.array_equal(backend.get(x), logits) and np.array_equal(backend.get(labels_b), labels)


@pytest.mark.parametrize("name", HOST)
def test_int32_labels(name, rng):
    ops = Backend(name).ops
    logits, labels = XENT[2].draw(rng, np.float32)
    loss32, p32 = ops.softmax_xent_forward(logits, labels.astype(np.int32), 0.1)
    loss64, p64 = ops.softmax_xent_forward(logits, labels, 0.1)
    assert loss32 == loss64 and np.array_equal(p32, p64)
    d32 = ops.softmax_xent_backward(p64, labels.astype(np.int32), 0.1)
    assert np.array_equal(d32, ops.softmax_xent_backward(p64, labels, 0.1))


def test_bad_shapes_and_types_raise(backend):
    ops, put = backend.ops, backend.put
    with pytest.raises(TypeError, match="softmax_xent_forward: logits must be float32 or float64"):
        ops.softmax_xent_forward(put(np.zeros((2, 3), np.int64)), put(np.zeros(2, np.int64)), 0.0)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        ops.softmax_xent_forward(put(np.zeros(3)), put(np.zeros(3, np.int64)), 0.0)
    with pytest.raises(ValueError, match=r"softmax_xent_forward: labels must have shape \(N,\)"):
        ops.softmax_xent_forward(put(np.zeros((3, 4))), put(np.array([0, 1], np.int64)), 0.0)


# -- a label outside [0, K): cpu raises, cuda gives NaN ------------------------------------

@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_out_of_range_labels_raise_on_cpu(bad):
    cpu = Backend("cpu").ops
    logits = np.zeros((3, 4), dtype=np.float32)
    labels = np.array([0, bad, 2])
    with pytest.raises(ValueError, match=f"label {bad} at index 1 is out of range"):
        cpu.softmax_xent_forward(logits, labels, 0.0)
    with pytest.raises(ValueError, match=f"label {bad} at index 1 is out of range"):
        cpu.softmax_xent_backward(np.full((3, 4), 0.25, np.float32), labels, 0.0)
    with use_backend("cpu"):
        with pytest.raises(ValueError, match="SoftmaxCrossEntropy: label"):
            tn.SoftmaxCrossEntropy().forward(logits, labels)


@pytest.mark.parametrize("bad", [-1, 4])
@pytest.mark.cuda
@requires_cuda
@pytest.mark.usefixtures("small_blocks")
def test_a_label_out_of_range_makes_the_cuda_loss_nan(bad):
    cuda = Backend("cuda")
    loss, _ = cuda.ops.softmax_xent_forward(cuda.put(np.zeros((3, 4))),
                                            cuda.put(np.array([0, bad, 1])), 0.0)
    assert math.isnan(float(loss))


@pytest.mark.cuda
@requires_cuda
@pytest.mark.usefixtures("small_blocks")
def test_cuda_labels_are_int64_on_the_device():
    cuda = Backend("cuda")
    logits = cuda.put(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="softmax_xent_backward: labels must"):
        cuda.ops.softmax_xent_backward(logits, cuda.put(np.array([0, 1, 2], np.int32)), 0.0)
    with pytest.raises(TypeError, match="softmax_xent_forward: labels .*host"):
        cuda.ops.softmax_xent_forward(logits, np.array([0, 1, 2]), 0.0)


# -- SoftmaxCrossEntropy -----------------------------------------------------------------

def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar function f at x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        g[i] = (plus - minus) / (2 * h)
    return g


def logits_labels(rng, n=5, k=7, dtype=np.float64):
    return (2 * rng.standard_normal((n, k))).astype(dtype), rng.integers(0, k, size=n)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_loss_layer_matches_the_ref_layer(backend, eps, rng):
    logits, labels = logits_labels(rng, n=13, k=7)
    out = {}
    for b in (backend, Backend("ref")):
        with b.active():
            f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
            loss = f.forward(b.put(logits), b.put(labels))
            out[b.name] = float(loss), b.get(f.backward())
    assert out[backend.name][0] == pytest.approx(out["ref"][0], rel=1e-13)
    assert_close(out[backend.name][1], out["ref"][1], rtol=1e-13, atol=1e-16)


def test_xent_value_by_hand():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]])
    labels = np.array([0, 1])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(logp[0, 0] + logp[1, 1]) / 2
    loss = tn.SoftmaxCrossEntropy().forward(logits, labels)
    assert isinstance(loss, float)
    assert_close(loss, expected, rtol=1e-14)


def test_xent_smoothing_value_by_hand():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]])
    labels = np.array([0, 1])
    eps, k = 0.2, 3
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    q = np.full((2, k), eps / k)
    q[[0, 1], labels] += 1 - eps
    f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
    assert_close(f.forward(logits, labels), -(q * logp).sum() / 2, rtol=1e-14)
    assert_close(f.backward(), (np.exp(logp) - q) / 2, rtol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_xent_numerical_gradient(eps, rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
    f.forward(logits, labels)
    analytic = f.backward()
    numeric = numeric_grad(lambda z: tn.SoftmaxCrossEntropy(eps).forward(z, labels), logits)
    assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_xent_call_is_forward(rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy()
    assert f(logits, labels) == f.forward(logits, labels)


def test_xent_keeps_dtype_and_inputs(rng):
    logits, labels = logits_labels(rng, dtype=np.float32)
    logits0 = logits.copy()
    f = tn.SoftmaxCrossEntropy()
    f.forward(logits, labels)
    dlogits = f.backward()
    assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    assert np.array_equal(logits, logits0)
    # Each row of dlogits sums to 0: sum(p) = sum(q) = 1.
    assert_close(dlogits.sum(axis=1), np.zeros(5), atol=1e-7)


@pytest.mark.parametrize("dtype", FLOATS)
def test_xent_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 2])
    f = tn.SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = f.forward(logits, labels)
        dlogits = f.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    # Row losses: 0, 1e4 + log 2, log 3.
    assert_close(loss, (1e4 + np.log(2) + np.log(3)) / 3, rtol=1e-6)


def test_xent_nan_row_gives_nan_loss():
    logits = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0]])
    f = tn.SoftmaxCrossEntropy()
    loss = f.forward(logits, np.array([2, 1]))
    assert np.isnan(loss)
    dlogits = f.backward()
    assert np.all(np.isfinite(dlogits[0])) and np.all(np.isnan(dlogits[1]))


@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_xent_label_out_of_range_raises(bad):
    logits = np.zeros((3, 3))
    with pytest.raises(ValueError, match=f"label {bad} at index 1"):
        tn.SoftmaxCrossEntropy().forward(logits, np.array([0, bad, 2]))


def test_xent_bad_types_and_shapes_raise():
    f = tn.SoftmaxCrossEntropy()
    logits = np.zeros((3, 4))
    with pytest.raises(TypeError, match="labels"):
        f.forward(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="logits"):
        f.forward(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="logits"):
        f.forward([[0.0, 1.0]], np.array([0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        f.forward(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        f.forward(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        f.forward(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        f.forward(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2.0])
def test_xent_bad_label_smoothing_raises(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        tn.SoftmaxCrossEntropy(label_smoothing=eps)


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="SoftmaxCrossEntropy.backward called before forward"):
        tn.SoftmaxCrossEntropy().backward()
    with pytest.raises(RuntimeError, match="MSELoss.backward called before forward"):
        tn.MSELoss().backward()


def test_failed_forward_keeps_no_stale_gradient(rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy()
    f.forward(logits, labels)
    with pytest.raises(ValueError):
        f.forward(logits, labels + 100)
    with pytest.raises(RuntimeError):
        f.backward()
    g = tn.MSELoss()
    g.forward(logits, logits)
    with pytest.raises(ValueError):
        g.forward(logits, logits[:2])
    with pytest.raises(RuntimeError):
        g.backward()


def test_xent_ref_ops_directly(rng):
    logits, labels = logits_labels(rng, n=4, k=3)
    loss, probs = ref.softmax_xent_forward(logits, labels, 0.0)
    e = np.exp(logits)
    assert_close(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    assert_close(loss, -np.mean(np.log(probs[np.arange(4), labels])), rtol=1e-12)
    onehot = np.eye(3)[labels]
    assert_close(ref.softmax_xent_backward(probs, labels, 0.0), (probs - onehot) / 4, rtol=1e-12)


def test_reprs():
    assert repr(tn.SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    assert repr(tn.SoftmaxCrossEntropy(0.1)) == "SoftmaxCrossEntropy(label_smoothing=0.1)"
    assert repr(tn.MSELoss()) == "MSELoss()"


# -- MSELoss -------------------------------------------------------------------------------

def test_mse_value_and_gradient_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.5, 2.0], [2.0, 4.0]])
    f = tn.MSELoss()
    loss = f(pred, target)
    assert isinstance(loss, float)
    assert_close(loss, (0.25 + 1.0) / 4, rtol=1e-14)
    assert_close(f.backward(), 2 * (pred - target) / 4, rtol=1e-14)


def test_mse_numerical_gradient(rng):
    pred = rng.standard_normal((3, 4, 2))
    target = rng.standard_normal((3, 4, 2))
    f = tn.MSELoss()
    f.forward(pred, target)
    numeric = numeric_grad(lambda z: tn.MSELoss().forward(z, target), pred)
    assert_close(f.backward(), numeric, rtol=1e-6, atol=1e-8)


def test_mse_keeps_dtype(rng):
    pred = rng.standard_normal((4, 3)).astype(np.float32)
    target = rng.standard_normal((4, 3)).astype(np.float32)
    f = tn.MSELoss()
    f.forward(pred, target)
    assert f.backward().dtype == np.float32


def test_mse_shape_mismatch_raises():
    f = tn.MSELoss()
    with pytest.raises(ValueError, match="MSELoss: target must have pred's shape"):
        f.forward(np.zeros((3,)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="MSELoss"):
        f.forward(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="MSELoss: target"):
        f.forward(np.zeros(3), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="MSELoss: pred"):
        f.forward([0.0, 1.0], np.zeros(2))


# -- accuracy ------------------------------------------------------------------------------

def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert tn.accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert tn.accuracy(logits, np.array([1, 0, 1, 0])) == 1.0
    assert isinstance(tn.accuracy(logits, np.array([0, 0, 0, 0])), float)
    assert "accuracy" in tn.losses.__all__
    with pytest.raises(ValueError, match="accuracy"):
        tn.accuracy(logits, np.array([1, 0]))


# -- torch ---------------------------------------------------------------------------------

def _torch_loss(torch_loss, x, target):
    """The torch loss of x (float64) and its gradient."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    lt = torch_loss(torch)(xt, torch.tensor(target))
    lt.backward()
    return lt.item(), xt.grad.numpy()


def _assert_like_torch(loss, x, target, torch_loss):
    want, grad = _torch_loss(torch_loss, x, target)
    assert_close(loss.forward(x, target), want, rtol=1e-12)
    assert_close(loss.backward(), grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_xent_against_torch(eps, rng):
    logits, labels = logits_labels(rng, n=6, k=5)
    _assert_like_torch(tn.SoftmaxCrossEntropy(label_smoothing=eps), logits, labels,
                       lambda torch: torch.nn.CrossEntropyLoss(label_smoothing=eps))


def test_xent_huge_logits_against_torch():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    _assert_like_torch(tn.SoftmaxCrossEntropy(), logits, np.array([1, 2]),
                       lambda torch: torch.nn.CrossEntropyLoss())


def test_mse_against_torch(rng):
    pred = rng.standard_normal((3, 4, 5))
    target = rng.standard_normal((3, 4, 5))
    _assert_like_torch(tn.MSELoss(), pred, target, lambda torch: torch.nn.MSELoss())
