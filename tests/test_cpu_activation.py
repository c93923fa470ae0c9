"""cpu activation kernels against the ref backend: odd shapes, both dtypes, NaN, inf."""
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from conftest import assert_close

# Sizes that are not multiples of a vector width (8 or 16 lanes) or of the
# softmax column block (256), so every loop has a remainder.
SHAPES = [(1,), (7,), (3, 5), (3, 7, 5, 3), (1001,), (2, 3, 300)]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0]

# float32 kernels against the float64 reference: a few float32 ulps of values
# of order 1 (float32 GELU uses an erfc approximation good to about 1e-6
# relative); float64 tight.
TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-15)}

# name -> (forward(backend, x), backward(backend, x, y, dy))
OPS = {
    "relu": (lambda b, x: b.relu_forward(x), lambda b, x, y, dy: b.relu_backward(x, dy)),
    "leaky_relu": (lambda b, x: b.leaky_relu_forward(x, 0.01),
                   lambda b, x, y, dy: b.leaky_relu_backward(x, dy, 0.01)),
    "leaky_relu_0.3": (lambda b, x: b.leaky_relu_forward(x, 0.3),
                       lambda b, x, y, dy: b.leaky_relu_backward(x, dy, 0.3)),
    "sigmoid": (lambda b, x: b.sigmoid_forward(x), lambda b, x, y, dy: b.sigmoid_backward(y, dy)),
    "tanh": (lambda b, x: b.tanh_forward(x), lambda b, x, y, dy: b.tanh_backward(y, dy)),
    "gelu": (lambda b, x: b.gelu_forward(x), lambda b, x, y, dy: b.gelu_backward(x, dy)),
}


def _inputs(rng, shape, dtype, special=True):
    """Normal values spread over [-12, 12] with the special values sprinkled in."""
    x = 4 * rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    if special:
        flat = x.reshape(-1)
        flat[:len(SPECIAL)] = SPECIAL[:flat.size]
    return x.astype(dtype), dy.astype(dtype)


def _run(name, backend, x, dy):
    fwd, bwd = OPS[name]
    y = fwd(backend, x)
    return y, bwd(backend, x, y, dy)


def _reference(name, x, dy):
    """The ref's y and dx in float64, the backward fed with the ref's own y."""
    with np.errstate(all="ignore"):
        return _run(name, ref, x.astype(np.float64), dy.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(OPS))
def test_elementwise_matches_ref(name, shape, dtype, rng):
    fwd, bwd = OPS[name]
    x, dy = _inputs(rng, shape, dtype)
    y = fwd(cpu, x)
    with np.errstate(all="ignore"):
        y_ref = fwd(ref, x.astype(np.float64))
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, y_ref, what=f"{name} y", **TOL[dtype])
    # Both backwards read the same cached tensors (cpu's y, as a layer caches
    # it), so the check measures the backward kernel alone.
    dx = bwd(cpu, x, y, dy)
    with np.errstate(all="ignore"):
        dx_ref = bwd(ref, x.astype(np.float64), y.astype(np.float64), dy.astype(np.float64))
    assert dx.dtype == dtype and dx.shape == shape
    assert_close(dx, dx_ref, what=f"{name} dx", **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "leaky_relu_0.3"])
def test_piecewise_linear_ops_give_the_refs_bits(name, dtype, rng):
    x, dy = _inputs(rng, (3, 7, 5, 3), dtype)
    with np.errstate(all="ignore"):
        y_ref, dx_ref = _run(name, ref, x, dy)
    y, dx = _run(name, cpu, x, dy)
    np.testing.assert_array_equal(y.view(np.uint8), y_ref.view(np.uint8))
    np.testing.assert_array_equal(dx.view(np.uint8), dx_ref.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_nan_propagates_like_ref(name, dtype):
    x = np.array([np.nan, -1.0, 2.0, np.nan], dtype=dtype)
    dy = np.array([1.0, np.nan, 1.0, -2.0], dtype=dtype)
    y, dx = _run(name, cpu, x, dy)
    y_ref, dx_ref = _reference(name, x, dy)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
    assert np.isnan(y[0]) and np.isnan(y[3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturation_and_tiny_inputs(dtype):
    x = np.array([-1e4, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1e4], dtype=dtype)
    s = cpu.sigmoid_forward(x)
    assert_close(s, [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0], atol=1e-12, rtol=0)
    # exp(-100) = 3.7e-44 is a float32 subnormal (spacing 1.4e-45): it must
    # not flush to 0.
    assert_close(s[1], 3.720075976020836e-44, rtol=0.05, atol=0)
    t = cpu.tanh_forward(x)
    assert_close(t, [-1.0, -1.0, -1e-30, 0.0, 1e-30, 1.0, 1.0], rtol=1e-6, atol=0)
    assert np.signbit(cpu.tanh_forward(np.array([-0.0], dtype=dtype))[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPS))
def test_ops_keep_inputs_and_return_fresh_arrays(name, dtype, rng):
    x, dy = _inputs(rng, (3, 5), dtype, special=False)
    x0, dy0 = x.copy(), dy.copy()
    y, dx = _run(name, cpu, x, dy)
    assert np.array_equal(x, x0) and np.array_equal(dy, dy0)
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, dy)


def test_noncontiguous_input_is_accepted(rng):
    x = rng.standard_normal((6, 8))[:, ::2]
    dy = rng.standard_normal((6, 4))
    assert_close(cpu.gelu_forward(x), ref.gelu_forward(x), rtol=1e-13)
    assert_close(cpu.relu_backward(x, dy), ref.relu_backward(x, dy))
    assert_close(cpu.softmax_forward(x, 1), ref.softmax_forward(x, 1), rtol=1e-13)


def test_backward_reads_the_cache_in_dys_dtype(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5))
    dx = cpu.relu_backward(x, dy)
    assert dx.dtype == np.float64
    assert_close(dx, ref.relu_backward(x, dy))


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="relu_forward: x must be float32 or float64"):
        cpu.relu_forward(np.arange(3))
    with pytest.raises(ValueError, match="sigmoid_backward: dy must have the shape"):
        cpu.sigmoid_backward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="softmax_forward: axis 2 is out of range"):
        cpu.softmax_forward(np.zeros((2, 3)), 2)


# -- softmax --------------------------------------------------------------------

SOFTMAX_CASES = [((13, 7), 1), ((13, 7), 0), ((13, 7), -1), ((1, 1), 1), ((3, 5, 4, 3), 1),
                 ((2, 3, 300), 1), ((2, 3, 600), 1), ((3, 5, 4, 3), -1), ((3, 5, 4, 3), 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES)
def test_softmax_matches_ref(shape, axis, dtype, rng):
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y_ref = ref.softmax_forward(x.astype(np.float64), axis)
    y = cpu.softmax_forward(x, axis)
    dx = cpu.softmax_backward(y, dy, axis)
    dx_ref = ref.softmax_backward(y.astype(np.float64), dy.astype(np.float64), axis)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, y_ref, what="softmax y", **TOL[dtype])
    assert_close(dx, dx_ref, what="softmax dx", **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_huge_logits_and_nan(dtype):
    x = np.array([[1e4, 0.0, -1e4], [1.0, np.nan, 3.0], [-np.inf, 0.0, 1.0],
                  [np.inf, 0.0, 1.0]], dtype=dtype)
    y = cpu.softmax_forward(x, 1)
    with np.errstate(invalid="ignore"):
        y_ref = ref.softmax_forward(x.astype(np.float64), 1)
    assert_close(y[0], [1.0, 0.0, 0.0])
    assert np.isnan(y[1]).all()
    assert_close(y[2], y_ref[2], rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))


def test_softmax_nan_along_a_strided_axis(rng):
    x = rng.standard_normal((2, 4, 5))
    x[1, 2, 3] = np.nan
    y = cpu.softmax_forward(x, 1)
    assert np.isnan(y[1, :, 3]).all()
    assert np.isfinite(np.delete(y[1], 3, axis=1)).all() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 9])
def test_softmax_row_finds_the_maximum_at_every_position(k):
    # A missed maximum of 1e4 would overflow exp and give NaN.
    x = np.where(np.eye(k, dtype=bool), 1e4, 0.0).astype(np.float32)
    y = cpu.softmax_forward(x, 1)
    assert_close(y, np.eye(k))
