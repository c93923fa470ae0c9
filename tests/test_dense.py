"""Dense and Flatten: the reference ops, gradients, torch parity and bad input."""
import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import check_grads, assert_close


def _dense64(in_features, out_features, bias=True):
    return tn.Dense(in_features, out_features, bias=bias).to(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_forward_op_is_x_Wt_plus_b(rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    W = rng.standard_normal((4, 5)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = ref.dense_forward(x, W, b)
    expected = np.array([[sum(float(x[n, i]) * float(W[o, i]) for i in range(5)) + float(b[o])
                          for o in range(4)] for n in range(3)])
    assert y.dtype == dtype and y.shape == (3, 4)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(y, expected, rtol=tol, atol=tol)
    assert_close(ref.dense_forward(x, W, None), expected - b.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_backward_op(rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    W = rng.standard_normal((4, 5)).astype(dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    dx, dW, db = ref.dense_backward(x, W, dy, True, True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert dx.dtype == dW.dtype == db.dtype == dtype
    assert_close(dx, dy.astype(np.float64) @ W, rtol=tol, atol=tol, what="dx")
    assert_close(dW, dy.astype(np.float64).T @ x, rtol=tol, atol=tol, what="dW")
    assert_close(db, dy.astype(np.float64).sum(axis=0), rtol=tol, atol=tol, what="db")


def test_dense_backward_op_skips_dx_and_db(rng):
    x, W, dy = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal((3, 4))
    dx, dW, db = ref.dense_backward(x, W, dy, False, False)
    assert dx is None and db is None
    assert_close(dW, dy.T @ x)


def test_dense_parameters():
    layer = tn.Dense(5, 4)
    assert layer.weight.shape == (4, 5) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert layer.weight.name == "weight" and layer.bias.name == "bias"
    assert layer.parameters() == [layer.weight, layer.bias]
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert np.all(layer.bias.data == 0)
    assert np.all(layer.weight.grad == 0) and np.all(layer.bias.grad == 0)
    no_bias = tn.Dense(5, 4, bias=False)
    assert no_bias.bias is None and no_bias.parameters() == [no_bias.weight]


def test_dense_weight_is_he_uniform():
    tn.init.seed(7)
    layer = tn.Dense(50, 400)
    bound = math.sqrt(6.0 / 50)
    w = layer.weight.data
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3.0)) < 0.05 * bound
    tn.init.seed(7)
    assert np.array_equal(tn.Dense(50, 400).weight.data, w)


def test_dense_extra_repr():
    assert repr(tn.Dense(3, 4)) == "Dense(in_features=3, out_features=4, bias=True)"
    assert repr(tn.Dense(3, 4, bias=False)) == "Dense(in_features=3, out_features=4, bias=False)"


@pytest.mark.parametrize("args, error", [((0, 4), ValueError), ((3, -1), ValueError),
                                         ((3.0, 4), TypeError), ((True, 4), TypeError)])
def test_dense_bad_constructor(args, error):
    with pytest.raises(error, match="Dense"):
        tn.Dense(*args)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradcheck(rng, bias):
    layer = tn.Dense(5, 4, bias=bias)
    check_grads(layer, rng.standard_normal((3, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_keeps_dtype(rng, dtype):
    layer = tn.Dense(5, 4).to(dtype)
    y = layer.forward(rng.standard_normal((3, 5)).astype(dtype))
    dx = layer.backward(np.ones((3, 4), dtype=dtype))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == dtype


@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_torch_linear(rng, bias):
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(5, 4, bias=bias).double()
    layer = _dense64(5, 4, bias=bias)
    layer.weight.data[...] = lin.weight.detach().numpy()
    if bias:
        layer.bias.data[...] = lin.bias.detach().numpy()
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    xt = torch.tensor(x, requires_grad=True)
    yt = lin(xt)
    yt.backward(torch.tensor(dy))
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    assert_close(layer.weight.grad, lin.weight.grad.numpy(), rtol=1e-12, atol=1e-12, what="dW")
    if bias:
        assert_close(layer.bias.grad, lin.bias.grad.numpy(), rtol=1e-12, atol=1e-12, what="db")


@pytest.mark.parametrize("shape", [(5,), (3, 5, 1), (3, 4)])
def test_dense_rejects_wrong_shape(rng, shape):
    layer = tn.Dense(5, 4)
    with pytest.raises(ValueError, match=r"Dense.*\(N, 5\)"):
        layer.forward(rng.standard_normal(shape).astype(np.float32))


def test_dense_rejects_wrong_dtype(rng):
    layer = tn.Dense(5, 4)
    with pytest.raises(TypeError, match="Dense"):
        layer.forward(rng.standard_normal((3, 5)))
    with pytest.raises(TypeError, match="Dense"):
        layer.forward(np.ones((3, 5), dtype=np.int64))


def test_dense_backward_before_forward():
    with pytest.raises(RuntimeError, match="Dense"):
        tn.Dense(5, 4).backward(np.ones((3, 4), dtype=np.float32))


def test_dense_rejects_bad_dy(rng):
    layer = tn.Dense(5, 4)
    layer.forward(rng.standard_normal((3, 5)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Dense.*\(3, 4\)"):
        layer.backward(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Dense"):
        layer.backward(np.ones((3, 4), dtype=np.float64))


def test_dense_without_input_grad(rng):
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    full = _dense64(5, 4)
    full.forward(x)
    full.backward(dy)
    layer = _dense64(5, 4)
    layer.weight.data[...] = full.weight.data
    layer.requires_input_grad = False
    layer.forward(x)
    assert layer.backward(dy) is None
    assert_close(layer.weight.grad, full.weight.grad, what="dW")
    assert_close(layer.bias.grad, full.bias.grad, what="db")
    assert np.any(layer.weight.grad != 0)


def test_dense_backward_accumulates(rng):
    layer = _dense64(5, 4)
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    layer.forward(x)
    dx1 = layer.backward(dy)
    dW1, db1 = layer.weight.grad.copy(), layer.bias.grad.copy()
    dx2 = layer.backward(dy)
    assert_close(dx2, dx1, what="dx is not accumulated")
    assert_close(layer.weight.grad, 2 * dW1, what="dW")
    assert_close(layer.bias.grad, 2 * db1, what="db")
    layer.zero_grad()
    assert np.all(layer.weight.grad == 0) and np.all(layer.bias.grad == 0)


def test_flatten_forward_backward(rng):
    x = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    layer = tn.Flatten()
    y = layer.forward(x)
    assert y.shape == (3, 40) and y.dtype == np.float32
    assert np.array_equal(y, x.reshape(3, 40))
    dy = rng.standard_normal((3, 40)).astype(np.float32)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and np.array_equal(dx, dy.reshape(x.shape))
    assert not np.shares_memory(dx, dy)
    assert repr(layer) == "Flatten()"


def test_flatten_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 1, 4))
    assert np.array_equal(tn.Flatten().forward(x), torch.nn.Flatten()(torch.tensor(x)).numpy())


def test_flatten_gradcheck(rng):
    check_grads(tn.Flatten(), rng.standard_normal((3, 2, 3)))


def test_flatten_bad_input():
    layer = tn.Flatten()
    with pytest.raises(ValueError, match="Flatten"):
        layer.forward(np.ones(5, dtype=np.float32))
    with pytest.raises(RuntimeError, match="Flatten"):
        layer.backward(np.ones((3, 4), dtype=np.float32))
    layer.forward(np.ones((3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        layer.backward(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Flatten"):
        layer.backward(np.ones((3, 4), dtype=np.float64))


def test_flatten_without_input_grad():
    layer = tn.Flatten()
    layer.requires_input_grad = False
    layer.forward(np.ones((3, 2, 2)))
    assert layer.backward(np.ones((3, 4))) is None


def test_flatten_then_dense_gradcheck(rng):
    model = tn.Sequential(tn.Flatten(), tn.Dense(12, 4))
    check_grads(model, rng.standard_normal((3, 3, 2, 2)))
