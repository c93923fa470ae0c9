"""The activation ops on every backend against the float64 reference, and the
activation layers: values, gradients, dtypes, errors, torch parity."""
import contextlib
import math
import warnings

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads
from cudasim import SIMULATOR
from harness import FLOATS, Backend
from tinynet.backends import ref
from tinynet.backends.cpu_jit import EXP_NORMAL_COEFFICIENTS
from tinynet.ops.activation.cases import (ELEMENTWISE, SHAPES, SOFTMAX, SOFTMAX_ROWS,
                                          Elementwise)

# The cpu kernels are tighter than the harness's tolerance: a few float32 ulps
# of values of order 1 (float32 GELU's erfc approximation is good to about
# 1e-6 relative), and float64 within 1e-13.
TIGHT = {"cpu": {np.float32: dict(rtol=2e-6, atol=1e-6),
                 np.float64: dict(rtol=1e-13, atol=1e-15)}}
HOST = ["ref", "cpu"]
LAYERS = [tn.ReLU, tn.LeakyReLU, tn.Sigmoid, tn.Tanh, tn.GELU]


def _ids(cases):
    return [c.name for c in cases]


def assert_matches(backend, got, want, dtype, what):
    """``backend.assert_matches``, and within ``TIGHT`` where the backend has it."""
    backend.assert_matches(got, want, dtype, what)
    if backend.name in TIGHT:
        assert_close(backend.get(got), want, what=f"{backend.name} {what}",
                     **TIGHT[backend.name][dtype])


@contextlib.contextmanager
def no_warnings(backend):
    """Warnings are errors, except the cuda simulator's: it runs kernels on numpy
    scalars, which warn where a GPU computes inf or NaN silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if SIMULATOR and backend.name == "cuda" else "error")
        yield


def run(backend, case, x, dy):
    """(y, dx) of the elementwise ``case`` on ``backend`` for host arrays x, dy; the
    backward reads this backend's own y or x, as a layer caches it. NumPy's
    warnings on inf and NaN inputs are silenced."""
    forward = getattr(backend.ops, f"{case.op}_forward")
    backward = getattr(backend.ops, f"{case.op}_backward")
    xb = backend.put(x)
    with np.errstate(all="ignore"):
        y = forward(xb, *case.args)
        return y, backward(y if case.reads_y else xb, backend.put(dy), *case.args)


def reference(case, x, y, dy):
    """The ref's y and dx in float64, the backward fed with ``y`` when it reads y."""
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        y_ref = getattr(ref, f"{case.op}_forward")(x64, *case.args)
        u = np.asarray(y, np.float64) if case.reads_y else x64
        dx_ref = getattr(ref, f"{case.op}_backward")(u, dy.astype(np.float64), *case.args)
    return y_ref, dx_ref


def host(backend, *arrays):
    """The backend's results as numpy arrays."""
    return [backend.get(a) for a in arrays]


# -- elementwise ops against the reference ------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids(SHAPES))
@pytest.mark.parametrize("case", ELEMENTWISE, ids=_ids(ELEMENTWISE))
def test_elementwise_matches_ref(backend, case, shape, dtype, rng):
    x, dy = shape.draw(rng, dtype)
    y, dx = run(backend, case, x, dy)
    # Both backwards read the same y (this backend's), so the check measures
    # the backward kernel alone.
    y_ref, dx_ref = reference(case, x, backend.get(y), dy)
    assert_matches(backend, y, y_ref, dtype, f"{case.name} y")
    assert_matches(backend, dx, dx_ref, dtype, f"{case.name} dx")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ELEMENTWISE[:3], ids=_ids(ELEMENTWISE[:3]))
def test_piecewise_linear_ops_give_the_refs_bits(backend, case, dtype, rng):
    x, dy = SHAPES[3].draw(rng, dtype)
    y_ref, dx_ref = run(Backend("ref"), case, x, dy)
    y, dx = host(backend, *run(backend, case, x, dy))
    np.testing.assert_array_equal(y.view(np.uint8), y_ref.view(np.uint8))
    np.testing.assert_array_equal(dx.view(np.uint8), dx_ref.view(np.uint8))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=_ids(ELEMENTWISE))
def test_nan_propagates_like_ref(backend, case, dtype):
    x = np.array([np.nan, -1.0, 2.0, np.nan], dtype=dtype)
    dy = np.array([1.0, np.nan, 1.0, -2.0], dtype=dtype)
    y, dx = host(backend, *run(backend, case, x, dy))
    y_ref, dx_ref = reference(case, x, y, dy)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
    assert np.isnan(y[0]) and np.isnan(y[3])


@pytest.mark.parametrize("dtype", FLOATS)
def test_saturation_and_tiny_inputs(backend, dtype):
    x = backend.put(np.array([-1e4, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1e4], dtype=dtype))
    s = backend.get(backend.ops.sigmoid_forward(x))
    assert_close(s, [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0], atol=1e-12, rtol=0)
    # exp(-100) = 3.7e-44 is a float32 subnormal (spacing 1.4e-45): it must
    # not flush to 0.
    assert_close(s[1], 3.720075976020836e-44, rtol=0.05, atol=0)
    t = backend.get(backend.ops.tanh_forward(x))
    assert_close(t, [-1.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 1.0], rtol=1e-6, atol=0)
    minus_zero = backend.put(np.array([-0.0], dtype=dtype))
    assert np.signbit(backend.get(backend.ops.tanh_forward(minus_zero))[0])


SOFTMAX_OP = Elementwise("softmax", "softmax", (1,), True)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ELEMENTWISE + (SOFTMAX_OP,), ids=_ids(ELEMENTWISE) + ["softmax"])
def test_ops_keep_dtype_and_inputs_and_return_fresh_arrays(backend, case, dtype, rng):
    x, dy = SHAPES[2].draw(rng, dtype, special=False)
    xb, dyb = backend.put(x), backend.put(dy)
    forward = getattr(backend.ops, f"{case.op}_forward")
    y = forward(xb, *case.args)
    dx = getattr(backend.ops, f"{case.op}_backward")(y if case.reads_y else xb, dyb, *case.args)
    assert y.dtype == dtype and dx.dtype == dtype
    assert y.shape == x.shape and dx.shape == x.shape
    # Overwriting the results leaves the inputs as they were: fresh arrays.
    y[...] = 7
    dx[...] = 7
    assert np.array_equal(backend.get(xb), x) and np.array_equal(backend.get(dyb), dy)


@pytest.mark.parametrize("name", HOST)
def test_noncontiguous_input_is_accepted(name, rng):
    b = Backend(name)
    x = rng.standard_normal((6, 8))[:, ::2]
    dy = rng.standard_normal((6, 4))
    assert_close(b.ops.gelu_forward(x), ref.gelu_forward(x), rtol=1e-13)
    assert_close(b.ops.relu_backward(x, dy), ref.relu_backward(x, dy))
    assert_close(b.ops.softmax_forward(x, 1), ref.softmax_forward(x, 1), rtol=1e-13)


@pytest.mark.parametrize("name", HOST)
def test_backward_reads_the_cache_in_dys_dtype(name, rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5))
    dx = Backend(name).ops.relu_backward(x, dy)
    assert dx.dtype == np.float64
    assert_close(dx, np.where(x <= 0, 0.0, dy))


def test_bad_arguments_raise(backend):
    f64 = np.zeros((2, 3))
    with pytest.raises(TypeError, match="relu_forward: x must be float32 or float64"):
        backend.ops.relu_forward(backend.put(np.arange(3)))
    with pytest.raises(ValueError, match="sigmoid_backward: dy must have the shape"):
        backend.ops.sigmoid_backward(backend.put(f64), backend.put(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="softmax_forward: axis 2 is out of range"):
        backend.ops.softmax_forward(backend.put(f64), 2)
    with pytest.raises(ValueError, match="softmax_forward: axis 3"):
        backend.ops.softmax_forward(backend.put(np.ones((2, 3))), 3)


# -- elementwise values by hand -------------------------------------------------------

def test_relu_values_and_nan(backend):
    x = backend.put(np.array([-2.0, -0.0, 0.5, 3.0, np.nan]))
    y = backend.get(backend.ops.relu_forward(x))
    assert_close(y[:4], [0.0, 0.0, 0.5, 3.0])
    assert np.isnan(y[4])


def test_relu_backward_masks_nonpositive(backend):
    x = backend.put(np.array([-2.0, 0.0, 0.5, 3.0]))
    dy = backend.put(np.array([1.0, 2.0, 3.0, 4.0]))
    assert_close(backend.get(backend.ops.relu_backward(x, dy)), [0.0, 0.0, 3.0, 4.0])


def test_leaky_relu_values(backend):
    ops, x = backend.ops, backend.put(np.array([-2.0, 0.5]))
    assert_close(backend.get(ops.leaky_relu_forward(x, 0.1)), [-0.2, 0.5])
    dx = ops.leaky_relu_backward(x, backend.put(np.array([3.0, 4.0])), 0.1)
    assert_close(backend.get(dx), [0.3, 4.0])
    assert np.isnan(backend.get(ops.leaky_relu_forward(backend.put(np.array([np.nan])), 0.1))[0])


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_stable_for_large_inputs(backend, dtype):
    x = backend.put(np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype))
    with no_warnings(backend):
        y = backend.get(backend.ops.sigmoid_forward(x))
    assert y.dtype == dtype
    assert np.all(np.isfinite(y))
    assert_close(y[[0, 2, 4]], [0.0, 0.5, 1.0])
    assert 0.0 < y[1] < 1e-40


def test_sigmoid_and_tanh_values(backend):
    x = np.array([-1.5, 0.3, 2.0])
    dy = np.array([1.0, -2.0, 0.5])
    ops, xb, dyb = backend.ops, backend.put(x), backend.put(dy)
    assert_close(backend.get(ops.sigmoid_forward(xb)), 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert_close(backend.get(ops.tanh_forward(xb)), np.tanh(x), rtol=1e-14)
    y = 1 / (1 + np.exp(-x))
    assert_close(backend.get(ops.sigmoid_backward(backend.put(y), dyb)), dy * y * (1 - y),
                 rtol=1e-14)
    y = np.tanh(x)
    assert_close(backend.get(ops.tanh_backward(backend.put(y), dyb)), dy * (1 - y**2), rtol=1e-14)


def test_gelu_exact_erf_form(backend):
    x = np.array([-3.0, -1.0, 0.0, 1.0, 2.5])
    phi_cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert_close(backend.get(backend.ops.gelu_forward(backend.put(x))), x * phi_cdf, rtol=1e-14)
    # Phi(1) = 0.8413447460685429, so gelu(1) = Phi(1).
    assert_close(backend.get(backend.ops.gelu_forward(backend.put(np.array([1.0])))),
                 [0.8413447460685429], rtol=1e-14)
    pdf = np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    dx = backend.ops.gelu_backward(backend.put(x), backend.put(np.ones_like(x)))
    assert_close(backend.get(dx), phi_cdf + x * pdf, rtol=1e-14)


def _phi64(v):
    """Phi(v) in float64 from libm's erfc, elementwise."""
    return np.array([0.5 * math.erfc(-w / math.sqrt(2.0)) for w in np.asarray(v, np.float64)])


def test_gelu_float32_accuracy_on_cpu():
    # The cpu kernel's float32 GELU against float64 erfc, for |v| <= 13, where
    # exp(-v^2 / 2) is a normal float32 number: at worst about 4.5e-6 relative
    # (rounding v^2 / 2 to float32), about one ulp on average for |v| < 5.
    cpu = Backend("cpu")
    v = np.linspace(-13.0, 13.0, 200001, dtype=np.float32)
    phi = _phi64(v)
    want_y = v * phi
    want_dx = phi + v * np.exp(-0.5 * v.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
    y = cpu.ops.gelu_forward(v)
    dx = cpu.ops.gelu_backward(v, np.ones_like(v))
    assert y.dtype == dx.dtype == np.float32
    nonzero = want_y != 0
    rel = np.abs(y[nonzero] - want_y[nonzero]) / np.abs(want_y[nonzero])
    assert rel.max() < 6e-6, (rel.max(), v[nonzero][rel.argmax()])
    near = np.abs(v) < 5
    ulps = np.abs(y[near].view(np.int32).astype(np.int64)
                  - want_y[near].astype(np.float32).view(np.int32).astype(np.int64))
    assert ulps.mean() < 1.5, ulps.mean()
    assert np.abs(dx - want_dx).max() < 5e-7


def test_gelu_float32_exact_points_and_flush_on_cpu():
    # Phi(0) = 1/2 exactly, and where exp(-v^2 / 2) would be subnormal
    # (|v| > 13.19) Phi is exactly 0 or 1.
    cpu = Backend("cpu")
    v = np.array([0.0, -0.0, -13.3, 13.3, -1e30, 1e30], np.float32)
    y = cpu.ops.gelu_forward(v)
    dx = cpu.ops.gelu_backward(v, np.ones_like(v))
    assert np.array_equal(y, np.array([0.0, 0.0, 0.0, 13.3, 0.0, 1e30], np.float32))
    assert np.array_equal(dx, [0.5, 0.5, 0.0, 1.0, 0.0, 1.0])
    # Just inside the normal range the result is still there and right.
    v = np.array([-13.0], np.float32)
    assert_close(cpu.ops.gelu_forward(v), v * _phi64(v), rtol=6e-6)


def test_gelu_float32_fits_match_their_stated_errors():
    # The coefficients the cpu kernel carries, evaluated in float64: the
    # maximum relative errors that kernels/gelu_fit.py reports for them.
    from tinynet.ops.activation import cpu
    z = np.linspace(0.0, 10.0, 20001)
    t = 1.0 / (1.0 + float(cpu._GELU_P) * z)
    s = np.polynomial.polynomial.polyval(t, [float(c) for c in cpu._GELU_S])
    tail = t * (0.5 + (t - 1.0) * s) * np.exp(-z * z)
    want = np.array([0.5 * math.erfc(w) for w in z])
    assert np.max(np.abs(tail / want - 1)) < 1.2e-7
    r = np.linspace(-math.log(2) / 2, math.log(2) / 2, 2001)
    e = 1.0 + r * np.polynomial.polynomial.polyval(r, [float(c) for c in EXP_NORMAL_COEFFICIENTS])
    assert np.max(np.abs(e / np.exp(r) - 1)) < 1.0e-7


def test_gelu_extreme_and_nan(backend):
    x = backend.put(np.array([-1e200, 1e200, np.nan]))
    with no_warnings(backend):
        y = backend.get(backend.ops.gelu_forward(x))
        dx = backend.get(backend.ops.gelu_backward(x, backend.put(np.ones(3))))
    assert_close(y[:2], [0.0, 1e200])
    assert_close(dx[:2], [0.0, 1.0])
    assert np.isnan(y[2]) and np.isnan(dx[2])


# -- softmax --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", SOFTMAX, ids=_ids(SOFTMAX))
def test_softmax_matches_ref(backend, case, dtype, rng):
    x = (4 * rng.standard_normal(case.shape)).astype(dtype)
    dy = rng.standard_normal(case.shape).astype(dtype)
    y = backend.ops.softmax_forward(backend.put(x), case.axis)
    dx = backend.ops.softmax_backward(y, backend.put(dy), case.axis)
    y64 = backend.get(y).astype(np.float64)
    assert_matches(backend, y, ref.softmax_forward(x.astype(np.float64), case.axis), dtype, "y")
    assert_matches(backend, dx, ref.softmax_backward(y64, dy.astype(np.float64), case.axis),
                   dtype, "dx")


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_sums_to_one_and_is_stable(backend, dtype):
    x = backend.put(np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]], dtype=dtype))
    with no_warnings(backend):
        y = backend.get(backend.ops.softmax_forward(x, 1))
    assert y.dtype == dtype
    assert_close(y.sum(axis=1), [1.0, 1.0])
    assert_close(y[0], [1.0, 0.0, 0.0])
    e = np.exp([1.0, 2.0, 3.0])
    assert_close(y[1], e / e.sum())


def test_softmax_axis_and_backward(backend, rng):
    x = rng.standard_normal((2, 4, 3))
    y = backend.ops.softmax_forward(backend.put(x), 1)
    assert_close(backend.get(y).sum(axis=1), np.ones((2, 3)))
    dy = rng.standard_normal(x.shape)
    dx = backend.get(backend.ops.softmax_backward(y, backend.put(dy), 1))
    # Explicit Jacobian of one column: J = diag(y) - y y^T.
    col = backend.get(y)[0, :, 1]
    jac = np.diag(col) - np.outer(col, col)
    assert_close(dx[0, :, 1], jac @ dy[0, :, 1], rtol=1e-12)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_huge_logits_and_nan(backend, dtype):
    x = np.array([[1e4, 0.0, -1e4], [1.0, np.nan, 3.0], [-np.inf, 0.0, 1.0],
                  [np.inf, 0.0, 1.0]], dtype=dtype)
    with np.errstate(invalid="ignore"):
        y = backend.get(backend.ops.softmax_forward(backend.put(x), 1))
        y_ref = ref.softmax_forward(x.astype(np.float64), 1)
    assert_close(y[0], [1.0, 0.0, 0.0])
    assert np.isnan(y[1]).all()
    assert_close(y[2], y_ref[2], rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))


def test_softmax_nan_along_a_strided_axis(backend, rng):
    x = rng.standard_normal((2, 4, 5))
    x[1, 2, 3] = np.nan
    y = backend.get(backend.ops.softmax_forward(backend.put(x), 1))
    assert np.isnan(y[1, :, 3]).all()
    assert np.isfinite(np.delete(y[1], 3, axis=1)).all() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("k", SOFTMAX_ROWS)
def test_softmax_row_finds_the_maximum_at_every_position(backend, k):
    # A missed maximum of 1e4 would overflow exp and give NaN.
    x = np.where(np.eye(k, dtype=bool), 1e4, 0.0).astype(np.float32)
    assert_close(backend.get(backend.ops.softmax_forward(backend.put(x), 1)), np.eye(k))


# -- layers: gradients ------------------------------------------------------------------

def away_from_zero(rng, shape, margin=0.1):
    """Random values with |x| > margin, so ReLU's kink is never within a step."""
    u = rng.standard_normal(shape)
    return np.sign(u) * (margin + np.abs(u))


@pytest.mark.parametrize("make", [tn.ReLU, lambda: tn.LeakyReLU(0.1)])
def test_piecewise_linear_gradcheck(make, rng):
    check_grads(make(), away_from_zero(rng, (3, 6, 5)))


@pytest.mark.parametrize("make", [tn.Sigmoid, tn.Tanh, tn.GELU])
def test_smooth_gradcheck(make, rng):
    check_grads(make(), 2 * rng.standard_normal((3, 6, 5)))


@pytest.mark.parametrize("dim,shape", [(1, (3, 5)), (1, (2, 4, 3, 3)), (-1, (2, 3, 4))])
def test_softmax_gradcheck(dim, shape, rng):
    check_grads(tn.Softmax(dim=dim), rng.standard_normal(shape))


# -- layers: contract -------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS + [tn.Softmax])
def test_backward_before_forward_raises(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward(np.ones((2, 3)))


@pytest.mark.parametrize("cls", LAYERS + [tn.Softmax])
def test_bad_dy_shape_raises(cls, rng):
    layer = cls()
    layer.forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        layer.backward(np.ones((3, 2)))


@pytest.mark.parametrize("cls", LAYERS + [tn.Softmax])
def test_bad_input_raises(cls):
    with pytest.raises(TypeError, match=cls.__name__):
        cls().forward(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=cls.__name__):
        cls().forward([[1.0, 2.0]])
    with pytest.raises(ValueError, match=cls.__name__):
        cls().forward(np.array(1.0))


@pytest.mark.parametrize("cls", LAYERS + [tn.Softmax])
def test_requires_input_grad_false_returns_none(cls, rng):
    layer = cls()
    layer.requires_input_grad = False
    layer.forward(rng.standard_normal((2, 3)))
    assert layer.backward(np.ones((2, 3))) is None


@pytest.mark.parametrize("cls", LAYERS)
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
    for cls in LAYERS + [tn.Softmax]:
        assert cls().parameters() == []
        assert cls().state_dict() == {}


# -- layers: torch ------------------------------------------------------------------------

def _torch_pair(torch_module, layer, x, dy):
    """(y, dx) of a torch module and of a tinynet layer."""
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
    x = (3 * rng.standard_normal((4, 7))).astype(np.float32)
    dy = rng.standard_normal((4, 7)).astype(np.float32)
    for name, tmod, layer in _torch_cases():
        (yt, dxt), (y, dx) = _torch_pair(tmod, layer, x, dy)
        assert y.dtype == np.float32 and dx.dtype == np.float32
        assert_close(y, yt, rtol=1e-5, atol=1e-6, what=f"{name} forward float32")
        assert_close(dx, dxt, rtol=1e-5, atol=1e-6, what=f"{name} backward float32")


def test_nan_propagates_like_torch():
    x = np.array([[np.nan, -1.0, 2.0]])
    dy = np.array([[1.0, 1.0, 1.0]])
    for name, tmod, layer in _torch_cases():
        (yt, dxt), (y, dx) = _torch_pair(tmod, layer, x, dy)
        assert_close(y, yt, what=f"{name} forward with NaN")
        assert_close(dx, dxt, what=f"{name} backward with NaN")


@pytest.mark.parametrize("inner", [1, 5, 15, 16, 17, 49, 196, 784, 1000, 4097])
@pytest.mark.parametrize("columns", [16, 64, 256, 1024])
def test_cpu_softmax_column_blocks_cover_the_columns_in_whole_vectors(inner, columns):
    from tinynet.ops.activation.cpu import _SIMD_LANES, _column_blocks
    blocks, width = _column_blocks(inner, columns)
    assert blocks >= 1 and (blocks - 1) * width < inner <= blocks * width
    assert width % _SIMD_LANES == 0 or width == inner
    assert width <= max(columns, _SIMD_LANES) + _SIMD_LANES - 1 or width == inner
