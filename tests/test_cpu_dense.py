"""The cpu backend's Dense ops against the ref backend: odd shapes, with and
without bias and dx, float32 and float64, db summed in float64."""
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from tinynet.backends.cpu import dense as cpu_dense
from conftest import assert_close

SHAPES = [(1, 1, 1), (3, 5, 4), (7, 33, 17), (65, 130, 9)]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _inputs(rng, shape, dtype):
    N, I, O = shape
    arrays = (rng.standard_normal((N, I)), rng.standard_normal((O, I)) / np.sqrt(I),
              rng.standard_normal(O), rng.standard_normal((N, O)))
    return tuple(a.astype(dtype) for a in arrays)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_forward_matches_ref(rng, shape, dtype, bias):
    x, W, b, _ = _inputs(rng, shape, dtype)
    b = b if bias else None
    b_copy = None if b is None else b.copy()
    y = cpu.dense_forward(x, W, b)
    y_ref = ref.dense_forward(x.astype(np.float64), W.astype(np.float64),
                              None if b is None else b.astype(np.float64))
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert_close(y, y_ref, what="y", **_tol(dtype))
    if b is not None:
        assert np.array_equal(b, b_copy)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_matches_ref(rng, shape, dtype, bias, need_dx):
    x, W, _, dy = _inputs(rng, shape, dtype)
    grads = cpu.dense_backward(x, W, dy, bias, need_dx)
    grads_ref = ref.dense_backward(x.astype(np.float64), W.astype(np.float64),
                                   dy.astype(np.float64), bias, need_dx)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        if g_ref is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == g_ref.shape, name
        assert_close(g, g_ref, what=name, **_tol(dtype))


def test_dense_accepts_non_contiguous_inputs(rng):
    x, W, b, dy = _inputs(rng, (6, 8, 5), np.float64)
    xt = np.asfortranarray(x)
    assert_close(cpu.dense_forward(xt, W, b), ref.dense_forward(x, W, b), rtol=1e-12, atol=1e-12)
    grads = cpu.dense_backward(xt, np.asfortranarray(W), np.asfortranarray(dy), True, True)
    for g, g_ref in zip(grads, ref.dense_backward(x, W, dy, True, True)):
        assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


def test_bias_grad_sums_in_float64():
    # 2**24 followed by ones: a float32 running sum stays at 2**24.
    dy = np.ones((1001, 2), dtype=np.float32)
    dy[0] = 2.0 ** 24
    db = np.empty(2, dtype=np.float32)
    cpu_dense._bias_grad(dy, db)
    assert db[0] == db[1] == 2.0 ** 24 + 1000
    _, _, db = cpu.dense_backward(np.ones((1001, 3), np.float32), np.ones((2, 3), np.float32),
                                  dy, True, False)
    assert db[0] == 2.0 ** 24 + 1000


def test_nan_propagates(rng):
    x, W, b, dy = _inputs(rng, (3, 5, 4), np.float32)
    x[1, 2] = np.nan
    y = cpu.dense_forward(x, W, b)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    dx, dW, db = cpu.dense_backward(x, W, dy, True, True)
    assert np.isnan(dW[:, 2]).all() and np.isfinite(db).all() and np.isfinite(dx).all()


def test_layer_on_cpu_backend(rng):
    import tinynet as tn
    with tn.use_backend("cpu"):
        layer = tn.Dense(5, 4)
        layer.requires_input_grad = False
        y = layer.forward(rng.standard_normal((3, 5)).astype(np.float32))
        assert layer.backward(np.ones_like(y)) is None
        assert np.all(layer.bias.grad == 3)


def test_every_op_is_a_cpu_implementation():
    assert sorted(cpu_dense.__all__) == sorted(ref.dense.__all__)
    for name in ref.dense.__all__:
        assert getattr(cpu, name).__module__ == "tinynet.backends.cpu.dense", name
