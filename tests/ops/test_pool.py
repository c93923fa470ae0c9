"""Pooling (tinynet.ops.pool) on every backend: max and average pooling
against the float64 reference over the odd cases of tinynet.ops.pool.cases,
the argmax rules (ties, NaN, -inf) against torch, each backend's cache and
argument checks, and the MaxPool2D, AvgPool2D and GlobalAvgPool2D layers
(gradients, torch parity, bad input). The cpu schedules: test_pool_cpu.py."""
import importlib

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from tinynet.ops import pool
from tinynet.ops.contract import REGISTRY
from tinynet.ops.pool import cpu as cpu_pool
from tinynet.ops.pool.cases import CASES
from conftest import assert_close, check_grads
from harness import FLOATS, PARAMS


def _backends(*names):
    """The ``backend`` fixture's params of ``names`` only, for indirect parametrization."""
    return [p for p in PARAMS if getattr(p, "values", (p,))[0] in names]


NATIVE = pytest.mark.parametrize("backend", _backends("cpu", "cuda"), indirect=True)
"""The backends with kernels of their own, and caches of taps."""
HOST = pytest.mark.parametrize("backend", _backends("ref", "cpu"), indirect=True)
"""The backends that take numpy arrays as they come (any layout)."""
BY_CASE = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
LAYERS = {"max": lambda: tn.MaxPool2D(3, 1), "avg": lambda: tn.AvgPool2D(3, 1),
          "global": tn.GlobalAvgPool2D}
LAYERS_2 = {"max": lambda: tn.MaxPool2D(2), "avg": lambda: tn.AvgPool2D(2),
            "global": tn.GlobalAvgPool2D}


def _out_shape(shape, kernel, stride):
    return tuple(shape[:2]) + pool.output_size(shape, kernel, stride)


def _distinct(rng, shape, dtype=np.float64):
    """Distinct values 0.1 apart in random order: every window has one clear maximum."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1).astype(dtype)


def _flat_index(backend, cache, x_shape, kernel, stride):
    """A max-pool cache as torch's flat index h*W + w of each argmax: the ref's
    cache as it is, the tap t = p*kw + q of the cpu and cuda caches converted."""
    cache = backend.get(cache)
    if backend.name == "ref":
        return cache
    W, kw = x_shape[3], kernel[1]
    OH, OW = cache.shape[2:]
    t = cache.astype(np.int64)
    h = np.arange(OH)[:, None] * stride[0] + t // kw
    w = np.arange(OW)[None, :] * stride[1] + t % kw
    return h * W + w


def _max_both(backend, x, dy, kernel, stride):
    """y as a numpy array and dx as an array of ``backend``, on x and dy, and
    the ref's y and dx on the same values in float64."""
    y, cache = backend.ops.maxpool2d_forward(backend.put(x), kernel, stride)
    dx = backend.ops.maxpool2d_backward(backend.put(dy), x.shape, cache, kernel, stride)
    y_ref, idx = ref.maxpool2d_forward(x.astype(np.float64), kernel, stride)
    dx_ref = ref.maxpool2d_backward(dy.astype(np.float64), x.shape, idx, kernel, stride)
    return backend.get(y), dx, y_ref, dx_ref


def _torch_pool(torch_fn, x, dy):
    """torch's y and dx for a pooling function of x with upstream gradient dy."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


# -- the contract and the cases -----------------------------------------------

def test_output_size():
    assert pool.output_size((2, 3, 7, 6), (3, 2), (2, 1)) == (3, 5)
    assert pool.output_size((1, 1, 5, 7), (5, 7), (5, 7)) == (1, 1)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        pool.output_size((1, 1, 2, 5), (3, 3), (1, 1))


def test_cases_cover_every_branch():
    """Both cpu schedules, every window relation, both tap types of both backends."""
    assert {cpu_pool.schedule(case.kernel, case.stride) for case in CASES} == set(
        cpu_pool.SCHEDULES)
    assert any(case.kernel == (2, 2) and case.stride != (2, 2) for case in CASES)
    overlap = [case.stride[0] < case.kernel[0] or case.stride[1] < case.kernel[1]
               for case in CASES]
    assert any(overlap) and not all(overlap)
    assert any(case.stride[0] > case.kernel[0] and case.stride[1] > case.kernel[1]
               for case in CASES)
    taps = [case.kernel[0] * case.kernel[1] for case in CASES]
    assert min(taps) == 1 and 256 in taps and max(taps) > 256
    assert any(case.shape[2] % case.stride[0] or case.shape[3] % case.stride[1]
               for case in CASES if case.kernel == case.stride)
    assert len({case.name for case in CASES}) == len(CASES)


def test_every_op_is_implemented(backend):
    names = sorted(name for name in pool.__all__ if name in REGISTRY)
    assert len(names) == 4
    module = importlib.import_module(f"tinynet.ops.pool.{backend.name}")
    assert sorted(module.__all__) == names
    for name in names:
        fn = getattr(backend.ops, name)
        assert fn.__module__ == f"tinynet.ops.pool.{backend.name}", name
        assert fn.contract_ref is REGISTRY[name], name
        if backend.name != "ref":
            assert fn is not getattr(ref, name), name


# -- max pooling against the reference ----------------------------------------

def test_maxpool_small_example(backend):
    x = np.array([[1., 5., 2.], [4., 3., 9.], [0., 8., 6.]]).reshape(1, 1, 3, 3)
    y, cache = backend.ops.maxpool2d_forward(backend.put(x), (2, 2), (1, 1))
    assert np.array_equal(backend.get(y)[0, 0], [[5., 9.], [8., 9.]])
    # Flat indices h*W + w in the 3x3 plane; 9 at (1, 2) wins two windows.
    argmax = _flat_index(backend, cache, x.shape, (2, 2), (1, 1))
    assert np.array_equal(argmax[0, 0], [[1, 5], [7, 5]])
    if backend.name == "ref":
        assert backend.get(cache).dtype == np.int64
    dy = backend.put(np.array([[[[1., 2.], [3., 4.]]]]))
    dx = backend.ops.maxpool2d_backward(dy, x.shape, cache, (2, 2), (1, 1))
    assert np.array_equal(backend.get(dx)[0, 0], [[0., 1., 0.], [0., 0., 6.], [0., 3., 0.]])


def test_maxpool_ties_pick_first_in_row_major_order(backend):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 2.0
    _, cache = backend.ops.maxpool2d_forward(backend.put(x), (2, 2), (2, 2))
    argmax = _flat_index(backend, cache, x.shape, (2, 2), (2, 2))
    # Window (0, 0) holds 2 at (1, 0) and (1, 1): the first is at flat index 4.
    assert argmax[0, 0, 0, 0] == 4
    # The other windows are all zeros: their top-left pixel wins.
    assert argmax[0, 0, 0, 1] == 2 and argmax[0, 0, 1, 0] == 8 and argmax[0, 0, 1, 1] == 10


def test_maxpool_ties_match_torch(backend):
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 2, 5, 5))
    x[0, 1, 2, 1:4] = 1.0
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (1, 2))]:
        _, cache = backend.ops.maxpool2d_forward(backend.put(x), kernel, stride)
        _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride,
                                                    return_indices=True)
        assert np.array_equal(_flat_index(backend, cache, x.shape, kernel, stride),
                              indices.numpy())


def test_maxpool_ties_and_nan_example(backend):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 2:, 2:] = 5.0
    dy = np.arange(4.0).reshape(1, 1, 2, 2) + 1
    y, dx, y_ref, dx_ref = _max_both(backend, x, dy, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(backend.get(dx), dx_ref)


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
def test_maxpool_matches_ref(backend, rng, case, dtype):
    x = rng.standard_normal(case.shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(backend, x, dy, case.kernel, case.stride)
    assert y.dtype == dtype and y.shape == y_ref.shape
    # The max is one of the inputs: exact in either dtype.
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    backend.assert_matches(dx, dx_ref, dtype, "dx")


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
def test_maxpool_ties_take_the_first_maximum(backend, rng, case, dtype):
    # Values from {0, 1, 2}: most windows hold a tie for the maximum.
    x = rng.integers(0, 3, case.shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(backend, x, dy, case.kernel, case.stride)
    np.testing.assert_array_equal(y, y_ref)
    backend.assert_matches(dx, dx_ref, dtype, "dx")


@BY_CASE
def test_maxpool_argmax_is_torchs_index_with_ties_and_nan(backend, rng, case):
    torch = pytest.importorskip("torch")
    x = rng.integers(0, 3, case.shape).astype(np.float64)
    x.flat[rng.choice(x.size, x.size // 5, replace=False)] = np.nan
    _, cache = backend.ops.maxpool2d_forward(backend.put(x), case.kernel, case.stride)
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), case.kernel, case.stride,
                                                return_indices=True)
    np.testing.assert_array_equal(_flat_index(backend, cache, case.shape, case.kernel,
                                              case.stride), indices.numpy())
    # The ref backend (the oracle) follows the same rule.
    np.testing.assert_array_equal(ref.maxpool2d_forward(x, case.kernel, case.stride)[1],
                                  indices.numpy())


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
def test_maxpool_nan_wins_the_window(backend, rng, case, dtype):
    x = rng.standard_normal(case.shape).astype(dtype)
    # One NaN in some windows, several in others.
    x.flat[rng.choice(x.size, max(2, x.size // 8), replace=False)] = np.nan
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride)).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(backend, x, dy, case.kernel, case.stride)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(y[~np.isnan(y)], y_ref[~np.isnan(y_ref)])
    backend.assert_matches(dx, dx_ref, dtype, "dx")


def test_maxpool_nan_matches_torch(backend):
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[0, 0, 1, 3] = np.nan
    x[0, 0, 0, 2] = 5.0
    dy = np.array([[[[1.0, 2.0]]]])
    y, dx, _, _ = _max_both(backend, x, dy, (2, 2), (2, 2))
    dx = backend.get(dx)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, 2)
    yt.backward(torch.tensor(dy))
    assert np.isnan(y).all() and np.isnan(yt.detach().numpy()).all()
    # The last NaN of each window takes the gradient, as in torch.
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx[0, 0, 1, 1] == 1.0 and dx[0, 0, 1, 3] == 2.0


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((2, 3), (1, 2))])
def test_maxpool_all_minus_inf_takes_the_first_tap(backend, kernel, stride, dtype):
    shape = (1, 2, 4, 7)
    x = np.full(shape, -np.inf, dtype=dtype)
    y_shape = _out_shape(shape, kernel, stride)
    dy = np.arange(1.0, 1.0 + np.prod(y_shape)).reshape(y_shape).astype(dtype)
    y, dx, y_ref, dx_ref = _max_both(backend, x, dy, kernel, stride)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(backend.get(dx), dx_ref)


# -- average pooling against the reference ------------------------------------

def test_avgpool_small_example(backend):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = backend.ops.avgpool2d_forward(backend.put(x), (2, 2), (2, 2))
    assert np.array_equal(backend.get(y)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    dx = backend.ops.avgpool2d_backward(backend.put(np.ones((1, 1, 3, 3))), x.shape, (2, 2),
                                        (1, 1))
    # Each pixel gets 1/4 from every 2x2 window that covers it.
    assert np.array_equal(backend.get(dx)[0, 0], np.array([[1, 2, 2, 1], [2, 4, 4, 2],
                                                           [2, 4, 4, 2], [1, 2, 2, 1]]) / 4)


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
def test_avgpool_matches_ref(backend, rng, case, dtype):
    x = rng.standard_normal(case.shape).astype(dtype)
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride)).astype(dtype)
    y = backend.ops.avgpool2d_forward(backend.put(x), case.kernel, case.stride)
    dx = backend.ops.avgpool2d_backward(backend.put(dy), case.shape, case.kernel, case.stride)
    backend.assert_matches(y, ref.avgpool2d_forward(x.astype(np.float64), case.kernel,
                                                    case.stride), dtype, "y")
    backend.assert_matches(dx, ref.avgpool2d_backward(dy.astype(np.float64), case.shape,
                                                      case.kernel, case.stride), dtype, "dx")


@pytest.mark.parametrize("dtype", FLOATS)
def test_avgpool_propagates_nan(backend, rng, dtype):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    x[0, 1, 2, 3] = np.nan
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1))]:
        y = backend.get(backend.ops.avgpool2d_forward(backend.put(x), kernel, stride))
        y_ref = ref.avgpool2d_forward(x, kernel, stride)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
        assert np.isnan(y).sum() >= 1


@NATIVE
def test_avgpool_sums_in_float64(backend, rng):
    # A large offset and a small spread over a 128x128 window: a float32
    # running sum is off by about 0.3 here, the float64 one by a rounding.
    x = (3000.0 + rng.random((1, 1, 128, 128))).astype(np.float32)
    y = backend.get(backend.ops.avgpool2d_forward(backend.put(x), (128, 128), (128, 128)))
    assert abs(float(y[0, 0, 0, 0]) - x.astype(np.float64).mean()) <= 1e-3


# -- every op ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_pool_ops_keep_dtype(backend, rng, dtype):
    x = backend.put(_distinct(rng, (2, 3, 5, 5), dtype))
    y, cache = backend.ops.maxpool2d_forward(x, (3, 3), (1, 1))
    dy = backend.put(np.ones(y.shape, dtype=dtype))
    dx = backend.ops.maxpool2d_backward(dy, x.shape, cache, (3, 3), (1, 1))
    assert y.dtype == dx.dtype == dtype
    y = backend.ops.avgpool2d_forward(x, (3, 3), (1, 1))
    assert y.dtype == backend.ops.avgpool2d_backward(dy, x.shape, (3, 3), (1, 1)).dtype == dtype


def test_ops_reject_bad_input(backend):
    ops = backend.ops
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ops.maxpool2d_forward(backend.put(np.zeros((1, 1, 2, 5))), (3, 3), (1, 1))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ops.avgpool2d_forward(backend.put(np.zeros((1, 1, 5, 2))), (3, 3), (1, 1))
    with pytest.raises(TypeError, match="maxpool2d_forward: x"):
        ops.maxpool2d_forward(backend.put(np.zeros((1, 1, 4, 4), np.int32)), (2, 2), (2, 2))
    with pytest.raises(TypeError, match="avgpool2d_forward: x"):
        ops.avgpool2d_forward(backend.put(np.zeros((1, 1, 4, 4), np.float16)), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="avgpool2d_backward: dy"):
        ops.avgpool2d_backward(backend.put(np.zeros((1, 1, 3, 3))), (1, 1, 4, 4), (2, 2), (2, 2))


def test_ops_do_not_write_their_inputs(backend, rng):
    x_host = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    x = backend.put(x_host)
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1))]:
        y, cache = backend.ops.maxpool2d_forward(x, kernel, stride)
        dy_host = rng.standard_normal(y.shape).astype(np.float32)
        dy = backend.put(dy_host)
        cache_before = backend.get(cache).copy()
        backend.ops.maxpool2d_backward(dy, x.shape, cache, kernel, stride)
        backend.ops.avgpool2d_forward(x, kernel, stride)
        backend.ops.avgpool2d_backward(dy, x.shape, kernel, stride)
        np.testing.assert_array_equal(backend.get(dy), dy_host)
        np.testing.assert_array_equal(backend.get(cache), cache_before)
    np.testing.assert_array_equal(backend.get(x), x_host)


@HOST
def test_ops_take_non_contiguous_input(backend, rng):
    x = rng.standard_normal((3, 2, 8, 10)).transpose(0, 1, 3, 2)
    y, cache = backend.ops.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, (2, 2), (2, 2))[0])
    assert_close(backend.ops.avgpool2d_forward(x, (3, 2), (1, 2)),
                 ref.avgpool2d_forward(x, (3, 2), (1, 2)), rtol=1e-13, atol=1e-13)
    dy = np.asfortranarray(rng.standard_normal(y.shape))
    dx = backend.ops.maxpool2d_backward(dy, x.shape, cache, (2, 2), (2, 2))
    _, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(dy, x.shape, idx, (2, 2), (2, 2)))
    assert dx.flags.c_contiguous


@NATIVE
def test_maxpool_cache_is_a_small_tap(backend):
    def tap_type(shape, kernel):
        x = backend.put(np.zeros(shape, np.float32))
        return backend.ops.maxpool2d_forward(x, kernel, (1, 1))[1].dtype

    assert tap_type((2, 3, 6, 6), (2, 2)) == tap_type((2, 3, 6, 6), (3, 3)) == np.uint8
    assert tap_type((1, 1, 17, 17), (17, 16)) == np.int32
    # 256 taps: the cpu's uint8 holds tap 255, cuda takes int32 from 256 taps on.
    assert tap_type((1, 1, 16, 16), (16, 16)) == (np.uint8 if backend.name == "cpu" else np.int32)


@NATIVE
def test_maxpool_backward_rejects_a_foreign_cache(backend, rng):
    x = rng.standard_normal((2, 3, 6, 6))
    y, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    dy = backend.put(np.ones_like(y))
    with pytest.raises(ValueError, match="maxpool2d_backward: cache"):
        backend.ops.maxpool2d_backward(dy, x.shape, backend.put(idx), (2, 2), (2, 2))
    _, cache = backend.ops.maxpool2d_forward(backend.put(x), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: cache"):
        backend.ops.maxpool2d_backward(dy, x.shape, cache[:, :2], (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: dy"):
        backend.ops.maxpool2d_backward(backend.put(np.ones((2, 3, 2, 3))), x.shape, cache,
                                       (2, 2), (2, 2))


# -- the layers ----------------------------------------------------------------

@BY_CASE
def test_maxpool_layer_matches_torch(backend, rng, case):
    torch = pytest.importorskip("torch")
    x = _distinct(rng, case.shape)
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride))
    y_t, dx_t = _torch_pool(lambda t: torch.nn.MaxPool2d(case.kernel, case.stride)(t), x, dy)
    with backend.active():
        layer = tn.MaxPool2D(case.kernel, case.stride)
        assert_close(backend.get(layer.forward(backend.put(x))), y_t, rtol=0, atol=0, what="y")
        assert_close(backend.get(layer.backward(backend.put(dy))), dx_t, rtol=1e-12, atol=1e-12,
                     what="dx")
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), case.kernel, case.stride,
                                                return_indices=True)
    _, cache = backend.ops.maxpool2d_forward(backend.put(x), case.kernel, case.stride)
    assert np.array_equal(_flat_index(backend, cache, case.shape, case.kernel, case.stride),
                          indices.numpy())


@BY_CASE
def test_avgpool_layer_matches_torch(backend, rng, case):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(case.shape)
    dy = rng.standard_normal(_out_shape(case.shape, case.kernel, case.stride))
    y_t, dx_t = _torch_pool(lambda t: torch.nn.AvgPool2d(case.kernel, case.stride)(t), x, dy)
    with backend.active():
        layer = tn.AvgPool2D(case.kernel, case.stride)
        assert_close(backend.get(layer.forward(backend.put(x))), y_t, rtol=1e-12, atol=1e-12,
                     what="y")
        assert_close(backend.get(layer.backward(backend.put(dy))), dx_t, rtol=1e-12, atol=1e-12,
                     what="dx")


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (3, 2, 4, 7), (2, 3, 1, 1)])
def test_global_avgpool_matches_torch(backend, rng, shape):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape[:2])
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    y_t, dx_t = _torch_pool(module, x, dy)
    with backend.active():
        layer = tn.GlobalAvgPool2D()
        assert_close(backend.get(layer.forward(backend.put(x))), y_t, rtol=1e-12, atol=1e-12,
                     what="y")
        assert_close(backend.get(layer.backward(backend.put(dy))), dx_t, rtol=1e-12, atol=1e-12,
                     what="dx")


@BY_CASE
def test_maxpool_gradcheck(rng, case):
    check_grads(tn.MaxPool2D(case.kernel, case.stride), _distinct(rng, case.shape))


@BY_CASE
def test_avgpool_gradcheck(rng, case):
    check_grads(tn.AvgPool2D(case.kernel, case.stride), rng.standard_normal(case.shape))


def test_global_avgpool_gradcheck(rng):
    check_grads(tn.GlobalAvgPool2D(), rng.standard_normal((3, 2, 5, 3)))


@pytest.mark.parametrize("cls", [tn.MaxPool2D, tn.AvgPool2D])
def test_pool_stride_defaults_to_kernel(cls):
    assert cls(3).kernel_size == cls(3).stride == (3, 3)
    layer = cls((2, 3))
    assert layer.stride == (2, 3)
    assert repr(layer) == f"{cls.__name__}(kernel_size=(2, 3), stride=(2, 3))"
    assert cls(3, stride=(1, 2)).stride == (1, 2)
    assert cls(3).parameters() == []


@pytest.mark.parametrize("cls", [tn.MaxPool2D, tn.AvgPool2D])
@pytest.mark.parametrize("kwargs, error", [(dict(kernel_size=0), ValueError),
                                           (dict(kernel_size=2, stride=0), ValueError),
                                           (dict(kernel_size=(2, 2, 2)), TypeError),
                                           (dict(kernel_size=2.0), TypeError)])
def test_pool_bad_constructor(cls, kwargs, error):
    with pytest.raises(error, match=cls.__name__):
        cls(**kwargs)


@pytest.mark.parametrize("make", LAYERS_2.values(), ids=LAYERS_2.keys())
@pytest.mark.parametrize("dtype", FLOATS)
def test_pool_layers_keep_dtype(backend, rng, make, dtype):
    x = _distinct(rng, (2, 3, 4, 4), dtype)
    with backend.active():
        layer = make()
        y = layer.forward(backend.put(x))
        dx = layer.backward(backend.put(np.ones(y.shape, dtype=dtype)))
    assert y.dtype == dx.dtype == dtype and dx.shape == x.shape


@pytest.mark.parametrize("make", LAYERS_2.values(), ids=LAYERS_2.keys())
def test_pool_bad_input(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=name):
        layer.backward(np.ones((2, 3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{name}.*\(N, C, H, W\)"):
        layer.forward(np.ones((3, 4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match=name):
        layer.forward(np.ones((2, 3, 4, 4), dtype=np.int32))
    y = layer.forward(np.ones((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=name):
        layer.backward(np.ones((2, 3, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match=name):
        layer.backward(np.ones(y.shape, dtype=np.float64))


@pytest.mark.parametrize("cls", [tn.MaxPool2D, tn.AvgPool2D])
def test_pool_rejects_input_smaller_than_kernel(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__}.*smaller than the kernel"):
        cls(3).forward(np.ones((2, 3, 2, 5), dtype=np.float32))


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_pool_without_input_grad(rng, make):
    layer = make()
    layer.requires_input_grad = False
    y = layer.forward(_distinct(rng, (2, 3, 5, 5)))
    assert layer.backward(np.ones(y.shape)) is None


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_pool_backward_is_repeatable(rng, make):
    layer = make()
    y = layer.forward(_distinct(rng, (2, 3, 5, 5)))
    dy = rng.standard_normal(y.shape)
    assert_close(layer.backward(dy), layer.backward(dy), what="a second backward")
