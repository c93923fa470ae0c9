"""Activation layers and their reference ops: values, gradients, dtypes, errors, torch."""
import math
import warnings

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import check_grads, assert_close

ELEMENTWISE = [tn.ReLU, tn.LeakyReLU, tn.Sigmoid, tn.Tanh, tn.GELU]


def away_from_zero(rng, shape, margin=0.1):
    """Random values with |x| > margin, so ReLU's kink is never within a step."""
    u = rng.standard_normal(shape)
    return np.sign(u) * (margin + np.abs(u))


# -- reference ops -----------------------------------------------------------

def test_relu_values_and_nan():
    x = np.array([-2.0, -0.0, 0.5, 3.0, np.nan])
    y = ref.relu_forward(x)
    assert_close(y[:4], [0.0, 0.0, 0.5, 3.0])
    assert np.isnan(y[4])


def test_relu_backward_masks_nonpositive():
    x = np.array([-2.0, 0.0, 0.5, 3.0])
    dy = np.array([1.0, 2.0, 3.0, 4.0])
    assert_close(ref.relu_backward(x, dy), [0.0, 0.0, 3.0, 4.0])


def test_leaky_relu_values():
    x = np.array([-2.0, 0.5])
    assert_close(ref.leaky_relu_forward(x, 0.1), [-0.2, 0.5])
    assert_close(ref.leaky_relu_backward(x, np.array([3.0, 4.0]), 0.1), [0.3, 4.0])
    assert np.isnan(ref.leaky_relu_forward(np.array([np.nan]), 0.1)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_stable_for_large_inputs(dtype):
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ref.sigmoid_forward(x)
    assert y.dtype == dtype
    assert np.all(np.isfinite(y))
    assert_close(y[[0, 2, 4]], [0.0, 0.5, 1.0])
    assert 0.0 < y[1] < 1e-40


def test_sigmoid_and_tanh_values():
    x = np.array([-1.5, 0.3, 2.0])
    assert_close(ref.sigmoid_forward(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert_close(ref.tanh_forward(x), np.tanh(x), rtol=1e-14)
    y, dy = ref.sigmoid_forward(x), np.array([1.0, -2.0, 0.5])
    assert_close(ref.sigmoid_backward(y, dy), dy * y * (1 - y), rtol=1e-14)
    y = np.tanh(x)
    assert_close(ref.tanh_backward(y, dy), dy * (1 - y**2), rtol=1e-14)


def test_gelu_exact_erf_form():
    x = np.array([-3.0, -1.0, 0.0, 1.0, 2.5])
    phi_cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert_close(ref.gelu_forward(x), x * phi_cdf, rtol=1e-14)
    # Phi(1) = 0.8413447460685429, so gelu(1) = Phi(1).
    assert_close(ref.gelu_forward(np.array([1.0])), [0.8413447460685429], rtol=1e-14)
    pdf = np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    assert_close(ref.gelu_backward(x, np.ones_like(x)), phi_cdf + x * pdf, rtol=1e-14)


def test_gelu_extreme_and_nan():
    x = np.array([-1e200, 1e200, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ref.gelu_forward(x)
        dx = ref.gelu_backward(x, np.ones_like(x))
    assert_close(y[:2], [0.0, 1e200])
    assert_close(dx[:2], [0.0, 1.0])
    assert np.isnan(y[2]) and np.isnan(dx[2])


def test_softmax_sums_to_one_and_is_stable():
    x = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ref.softmax_forward(x, 1)
    assert y.dtype == np.float32
    assert_close(y.sum(axis=1), [1.0, 1.0])
    assert_close(y[0], [1.0, 0.0, 0.0])
    e = np.exp([1.0, 2.0, 3.0])
    assert_close(y[1], e / e.sum())


def test_softmax_axis_and_backward(rng):
    x = rng.standard_normal((2, 4, 3))
    y = ref.softmax_forward(x, 1)
    assert_close(y.sum(axis=1), np.ones((2, 3)))
    dy = rng.standard_normal(x.shape)
    dx = ref.softmax_backward(y, dy, 1)
    # Explicit Jacobian of one column: J = diag(y) - y y^T.
    col = y[0, :, 1]
    jac = np.diag(col) - np.outer(col, col)
    assert_close(dx[0, :, 1], jac @ dy[0, :, 1], rtol=1e-12)


ALL_OPS = [
    (ref.relu_forward, lambda x, y, dy: ref.relu_backward(x, dy)),
    (lambda x: ref.leaky_relu_forward(x, 0.2), lambda x, y, dy: ref.leaky_relu_backward(x, dy, 0.2)),
    (ref.sigmoid_forward, lambda x, y, dy: ref.sigmoid_backward(y, dy)),
    (ref.tanh_forward, lambda x, y, dy: ref.tanh_backward(y, dy)),
    (ref.gelu_forward, lambda x, y, dy: ref.gelu_backward(x, dy)),
    (lambda x: ref.softmax_forward(x, 1), lambda x, y, dy: ref.softmax_backward(y, dy, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fwd,bwd", ALL_OPS)
def test_ops_keep_dtype_and_do_not_write_inputs(fwd, bwd, dtype, rng):
    x = rng.standard_normal((3, 5)).astype(dtype)
    dy = rng.standard_normal((3, 5)).astype(dtype)
    x0, dy0 = x.copy(), dy.copy()
    y = fwd(x)
    dx = bwd(x, y, dy)
    assert y.dtype == dtype and dx.dtype == dtype
    assert y.shape == x.shape and dx.shape == x.shape
    assert np.array_equal(x, x0) and np.array_equal(dy, dy0)


# -- layers: gradients ---------------------------------------------------------

@pytest.mark.parametrize("make", [tn.ReLU, lambda: tn.LeakyReLU(0.1)])
def test_piecewise_linear_gradcheck(make, rng):
    check_grads(make(), away_from_zero(rng, (3, 6, 5)))


@pytest.mark.parametrize("make", [tn.Sigmoid, tn.Tanh, tn.GELU])
def test_smooth_gradcheck(make, rng):
    check_grads(make(), 2 * rng.standard_normal((3, 6, 5)))


def test_softmax_gradcheck_2d(rng):
    check_grads(tn.Softmax(dim=1), rng.standard_normal((3, 5)))


def test_softmax_gradcheck_4d(rng):
    check_grads(tn.Softmax(dim=1), rng.standard_normal((2, 4, 3, 3)))


def test_softmax_gradcheck_negative_dim(rng):
    check_grads(tn.Softmax(dim=-1), rng.standard_normal((2, 3, 4)))


# -- layers: contract ------------------------------------------------------------

@pytest.mark.parametrize("cls", ELEMENTWISE + [tn.Softmax])
def test_backward_before_forward_raises(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward(np.ones((2, 3)))


@pytest.mark.parametrize("cls", ELEMENTWISE + [tn.Softmax])
def test_bad_dy_shape_raises(cls, rng):
    layer = cls()
    layer.forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        layer.backward(np.ones((3, 2)))


@pytest.mark.parametrize("cls", ELEMENTWISE + [tn.Softmax])
def test_bad_input_raises(cls):
    with pytest.raises(TypeError, match=cls.__name__):
        cls().forward(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=cls.__name__):
        cls().forward([[1.0, 2.0]])
    with pytest.raises(ValueError, match=cls.__name__):
        cls().forward(np.array(1.0))


@pytest.mark.parametrize("cls", ELEMENTWISE + [tn.Softmax])
def test_requires_input_grad_false_returns_none(cls, rng):
    layer = cls()
    layer.requires_input_grad = False
    layer.forward(rng.standard_normal((2, 3)))
    assert layer.backward(np.ones((2, 3))) is None


@pytest.mark.parametrize("cls", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4, 5)])
def test_elementwise_any_rank_float32(cls, shape, rng):
    layer = cls()
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones(shape, dtype=np.float32))
    assert y.shape == shape and y.dtype == np.float32
    assert dx.shape == shape and dx.dtype == np.float32


def test_backward_returns_fresh_array(rng):
    layer = tn.ReLU()
    x = np.abs(rng.standard_normal((2, 3))) + 0.1
    layer.forward(x)
    dy = np.ones((2, 3))
    dx = layer.backward(dy)
    assert dx is not dy and not np.shares_memory(dx, dy)


def test_softmax_dim_validation(rng):
    with pytest.raises(ValueError, match="dim=1"):
        tn.Softmax().forward(rng.standard_normal(4))
    with pytest.raises(ValueError, match="dim=-3"):
        tn.Softmax(dim=-3).forward(rng.standard_normal((2, 3)))
    y = tn.Softmax(dim=0).forward(rng.standard_normal(4))
    assert_close(y.sum(), 1.0)


def test_reprs():
    assert repr(tn.ReLU()) == "ReLU()"
    assert repr(tn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(tn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(tn.Sigmoid()) == "Sigmoid()"
    assert repr(tn.Tanh()) == "Tanh()"
    assert repr(tn.GELU()) == "GELU()"
    assert repr(tn.Softmax()) == "Softmax(dim=1)"


def test_no_parameters():
    for cls in ELEMENTWISE + [tn.Softmax]:
        assert cls().parameters() == []
        assert cls().state_dict() == {}


# -- torch ---------------------------------------------------------------------

def _torch_pair(torch_module, layer, x, dy):
    """(y, dx) of a torch module and of a tinynet layer, in float64."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_module(xt)
    yt.backward(torch.tensor(dy))
    y = layer.forward(x)
    dx = layer.backward(dy)
    return (yt.detach().numpy(), xt.grad.numpy()), (y, dx)


def _torch_cases():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    return [
        ("ReLU", nn.ReLU(), tn.ReLU()),
        ("LeakyReLU", nn.LeakyReLU(0.01), tn.LeakyReLU()),
        ("LeakyReLU0.3", nn.LeakyReLU(0.3), tn.LeakyReLU(0.3)),
        ("Sigmoid", nn.Sigmoid(), tn.Sigmoid()),
        ("Tanh", nn.Tanh(), tn.Tanh()),
        ("GELU", nn.GELU(approximate="none"), tn.GELU()),
        ("Softmax", nn.Softmax(dim=1), tn.Softmax(dim=1)),
    ]


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3, 3)])
def test_against_torch_float64(shape, rng):
    torch = pytest.importorskip("torch")
    x = 3 * away_from_zero(rng, shape, margin=0.01)
    dy = rng.standard_normal(shape)
    for name, tmod, layer in _torch_cases():
        (yt, dxt), (y, dx) = _torch_pair(tmod, layer, x, dy)
        assert_close(y, yt, rtol=1e-12, atol=1e-14, what=f"{name} forward")
        assert_close(dx, dxt, rtol=1e-12, atol=1e-14, what=f"{name} backward")


def test_softmax_default_dim_matches_torch_implicit_dim(rng):
    torch = pytest.importorskip("torch")
    for shape in [(3, 5), (2, 4, 3, 3)]:
        x = rng.standard_normal(shape)
        expected = torch.softmax(torch.tensor(x), dim=1).numpy()
        assert_close(tn.Softmax().forward(x), expected, rtol=1e-12)


def test_float32_close_to_torch(rng):
    torch = pytest.importorskip("torch")
    x = (3 * rng.standard_normal((4, 7))).astype(np.float32)
    dy = rng.standard_normal((4, 7)).astype(np.float32)
    for name, tmod, layer in _torch_cases():
        (yt, dxt), (y, dx) = _torch_pair(tmod, layer, x, dy)
        assert y.dtype == np.float32 and dx.dtype == np.float32
        assert_close(y, yt, rtol=1e-5, atol=1e-6, what=f"{name} forward float32")
        assert_close(dx, dxt, rtol=1e-5, atol=1e-6, what=f"{name} backward float32")


def test_nan_propagates_like_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[np.nan, -1.0, 2.0]])
    dy = np.array([[1.0, 1.0, 1.0]])
    for name, tmod, layer in _torch_cases():
        (yt, dxt), (y, dx) = _torch_pair(tmod, layer, x, dy)
        assert_close(y, yt, what=f"{name} forward with NaN")
        assert_close(dx, dxt, what=f"{name} backward with NaN")
