"""The cpu backend's pooling kernels against the ref backend (and torch for the
argmax rules): odd shapes, overlapping windows, floor mode, non-square
windows, float32 and float64, ties, NaN and -inf."""
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from conftest import assert_close

# (x shape, kernel, stride): the 2x2 stride-2 fast path (even, odd H, odd W),
# overlapping windows, non-square windows and strides, a 1x1 window, a window
# as large as the plane (global pooling) and one of more than 256 taps.
CASES = [
    ((3, 5, 8, 6), (2, 2), (2, 2)),
    ((2, 3, 7, 9), (2, 2), (2, 2)),
    ((3, 2, 9, 7), (2, 2), (2, 2)),
    ((2, 3, 7, 7), (3, 3), (1, 1)),
    ((3, 2, 9, 8), (3, 2), (2, 1)),
    ((2, 3, 5, 11), (2, 3), (1, 2)),
    ((2, 3, 8, 9), (3, 3), (2, 2)),
    ((2, 3, 5, 4), (1, 1), (1, 1)),
    ((3, 4, 5, 7), (5, 7), (5, 7)),
    ((2, 2, 19, 18), (17, 17), (2, 1)),
]
IDS = ["2x2-even", "2x2-oddH", "2x2-oddW", "k3s1", "k3x2-s2x1", "k2x3-s1x2", "k3s2",
       "k1", "global", "k17-int32"]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


def _out_shape(shape, kernel, stride):
    N, C, H, W = shape
    return (N, C, (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1)


def _max_both(x, dy, kernel, stride):
    """(y, dx) of the cpu kernels on x, dy and of ref on the same values in float64."""
    y, cache = cpu.maxpool2d_forward(x, kernel, stride)
    dx = cpu.maxpool2d_backward(dy, x.shape, cache, kernel, stride)
    y_ref, idx = ref.maxpool2d_forward(x.astype(np.float64), kernel, stride)
    dx_ref = ref.maxpool2d_backward(dy.astype(np.float64), x.shape, idx, kernel, stride)
    return y, dx, y_ref, dx_ref


def _flat_index(cache, x_shape, kernel, stride):
    """The cpu cache (tap t = p*kw + q in the window) as torch's flat index h*W + w."""
    W, kw = x_shape[3], kernel[1]
    OH, OW = cache.shape[2:]
    t = cache.astype(np.int64)
    h = np.arange(OH)[:, None] * stride[0] + t // kw
    w = np.arange(OW)[None, :] * stride[1] + t % kw
    return h * W + w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_maxpool_matches_ref(rng, shape, kernel, stride, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(shape, kernel, stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(x, dy, kernel, stride)
    assert y.dtype == dx.dtype == dtype
    assert y.shape == y_ref.shape and dx.shape == shape
    # The max is one of the inputs: exact in either dtype.
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    assert_close(dx, dx_ref, what="dx", **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_avgpool_matches_ref(rng, shape, kernel, stride, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(shape, kernel, stride)).astype(dtype)
    y = cpu.avgpool2d_forward(x, kernel, stride)
    dx = cpu.avgpool2d_backward(dy, shape, kernel, stride)
    y_ref = ref.avgpool2d_forward(x.astype(np.float64), kernel, stride)
    dx_ref = ref.avgpool2d_backward(dy.astype(np.float64), shape, kernel, stride)
    assert y.dtype == dx.dtype == dtype
    assert_close(y, y_ref, what="y", **_tol(dtype))
    assert_close(dx, dx_ref, what="dx", **_tol(dtype))


def test_avgpool_sums_in_float64(rng):
    # A large offset and a small spread over a 128x128 window: a float32
    # running sum is off by about 0.3 here, the float64 one by a rounding.
    x = (3000.0 + rng.random((1, 1, 128, 128))).astype(np.float32)
    y = cpu.avgpool2d_forward(x, (128, 128), (128, 128))
    mean = x.astype(np.float64).mean()
    assert abs(float(y[0, 0, 0, 0]) - mean) <= 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride", CASES[:7], ids=IDS[:7])
def test_maxpool_ties_take_the_first_maximum(rng, shape, kernel, stride, dtype):
    # Values from {0, 1, 2}: most windows hold a tie for the maximum.
    x = rng.integers(0, 3, shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(shape, kernel, stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(x, dy, kernel, stride)
    np.testing.assert_array_equal(y, y_ref)
    assert_close(dx, dx_ref, what="dx", **_tol(dtype))


@pytest.mark.parametrize("shape, kernel, stride", CASES[:7], ids=IDS[:7])
def test_maxpool_argmax_is_torchs_index_with_ties_and_nan(rng, shape, kernel, stride):
    torch = pytest.importorskip("torch")
    x = rng.integers(0, 3, shape).astype(np.float64)
    x.flat[rng.choice(x.size, x.size // 5, replace=False)] = np.nan
    _, cache = cpu.maxpool2d_forward(x, kernel, stride)
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride,
                                                return_indices=True)
    np.testing.assert_array_equal(_flat_index(cache, shape, kernel, stride), indices.numpy())
    # The ref backend (the oracle) follows the same rule.
    np.testing.assert_array_equal(ref.maxpool2d_forward(x, kernel, stride)[1], indices.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_maxpool_nan_wins_the_window(rng, shape, kernel, stride, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    # One NaN in some windows, several in others.
    x.flat[rng.choice(x.size, max(2, x.size // 8), replace=False)] = np.nan
    dy = rng.standard_normal(_out_shape(shape, kernel, stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(x, dy, kernel, stride)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(y[~np.isnan(y)], y_ref[~np.isnan(y_ref)])
    assert_close(dx, dx_ref, what="dx", **_tol(dtype))


def test_maxpool_nan_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[0, 0, 1, 3] = np.nan
    x[0, 0, 0, 2] = 5.0
    dy = np.array([[[[1.0, 2.0]]]])
    y, cache = cpu.maxpool2d_forward(x, (2, 2), (2, 2))
    dx = cpu.maxpool2d_backward(dy, x.shape, cache, (2, 2), (2, 2))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, 2)
    yt.backward(torch.tensor(dy))
    assert np.isnan(y).all() and np.isnan(yt.detach().numpy()).all()
    # The last NaN of each window takes the gradient, as in torch.
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx[0, 0, 1, 1] == 1.0 and dx[0, 0, 1, 3] == 2.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((2, 3), (1, 2))])
def test_maxpool_all_minus_inf_takes_the_first_tap(kernel, stride, dtype):
    shape = (1, 2, 4, 7)
    x = np.full(shape, -np.inf, dtype=dtype)
    dy = np.arange(1.0, 1.0 + np.prod(_out_shape(shape, kernel, stride)))
    dy = dy.reshape(_out_shape(shape, kernel, stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(x, dy, kernel, stride)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(dx, dx_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avgpool_propagates_nan(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1))]:
        y = cpu.avgpool2d_forward(x, kernel, stride)
        y_ref = ref.avgpool2d_forward(x, kernel, stride)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
        assert np.isnan(y).sum() >= 1


def test_kernels_take_non_contiguous_input(rng):
    x = rng.standard_normal((3, 2, 8, 10)).transpose(0, 1, 3, 2)
    y, cache = cpu.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, (2, 2), (2, 2))[0])
    assert_close(cpu.avgpool2d_forward(x, (3, 2), (1, 2)),
                 ref.avgpool2d_forward(x, (3, 2), (1, 2)), rtol=1e-13, atol=1e-13)
    dy = np.asfortranarray(rng.standard_normal(y.shape))
    dx = cpu.maxpool2d_backward(dy, x.shape, cache, (2, 2), (2, 2))
    _, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(dy, x.shape, idx, (2, 2), (2, 2)))
    assert dx.flags.c_contiguous


def test_maxpool_cache_is_a_small_tap():
    x = np.zeros((2, 3, 6, 6), dtype=np.float32)
    assert cpu.maxpool2d_forward(x, (2, 2), (2, 2))[1].dtype == np.uint8
    assert cpu.maxpool2d_forward(x, (3, 3), (1, 1))[1].dtype == np.uint8
    assert cpu.maxpool2d_forward(np.zeros((1, 1, 17, 17)), (17, 16), (1, 1))[1].dtype == np.int32


def test_maxpool_backward_rejects_a_foreign_cache(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    y, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: cache"):
        cpu.maxpool2d_backward(np.ones_like(y), x.shape, idx, (2, 2), (2, 2))
    _, cache = cpu.maxpool2d_forward(x, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: cache"):
        cpu.maxpool2d_backward(np.ones_like(y), x.shape, cache[:, :2], (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: dy"):
        cpu.maxpool2d_backward(np.ones((2, 3, 2, 3)), x.shape, cache, (2, 2), (2, 2))


def test_ops_reject_bad_input():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        cpu.maxpool2d_forward(np.zeros((1, 1, 2, 5)), (3, 3), (1, 1))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        cpu.avgpool2d_forward(np.zeros((1, 1, 5, 2)), (3, 3), (1, 1))
    with pytest.raises(TypeError, match="maxpool2d_forward: x"):
        cpu.maxpool2d_forward(np.zeros((1, 1, 4, 4), dtype=np.int32), (2, 2), (2, 2))
    with pytest.raises(TypeError, match="avgpool2d_forward: x"):
        cpu.avgpool2d_forward(np.zeros((1, 1, 4, 4), dtype=np.float16), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="avgpool2d_backward: dy"):
        cpu.avgpool2d_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), (2, 2), (2, 2))


def test_ops_do_not_write_their_inputs(rng):
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    x_before = x.copy()
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1))]:
        y, cache = cpu.maxpool2d_forward(x, kernel, stride)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dy_before, cache_before = dy.copy(), cache.copy()
        cpu.maxpool2d_backward(dy, x.shape, cache, kernel, stride)
        cpu.avgpool2d_forward(x, kernel, stride)
        cpu.avgpool2d_backward(dy, x.shape, kernel, stride)
        np.testing.assert_array_equal(dy, dy_before)
        np.testing.assert_array_equal(cache, cache_before)
    np.testing.assert_array_equal(x, x_before)


def test_cpu_pool_ops_are_numba_kernels():
    import tinynet.backends.cpu.pool as module
    for name in module.__all__:
        assert getattr(cpu, name).__module__ == "tinynet.backends.cpu.pool"
        assert getattr(cpu, name) is not getattr(ref, name)
