"""MaxPool2D, AvgPool2D and GlobalAvgPool2D: the reference ops, gradients,
torch parity and bad input."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import check_grads, assert_close

# (x shape, kernel, stride): non-overlapping, floor mode (a leftover row or
# column), overlapping windows (stride < kernel) and non-square windows.
CASES = [
    ((2, 3, 6, 6), (2, 2), (2, 2)),
    ((3, 2, 7, 5), (2, 2), (2, 2)),
    ((2, 3, 7, 7), (3, 3), (1, 1)),
    ((2, 3, 7, 6), (3, 3), (2, 1)),
    ((3, 2, 5, 7), (2, 3), (1, 2)),
]
IDS = ["k2s2", "k2s2-floor", "k3s1-overlap", "k3-s2x1-overlap", "k2x3-s1x2"]


def _distinct(rng, shape, dtype=np.float64):
    """Distinct values 0.1 apart in random order: every window has one clear maximum."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1).astype(dtype)


def _torch_pool(torch_fn, x, dy):
    """torch's y and dx for a pooling function of x with upstream gradient dy."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


def _out_shape(shape, kernel, stride):
    N, C, H, W = shape
    return (N, C, (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1)


def test_maxpool_op_small_example():
    x = np.array([[1., 5., 2.], [4., 3., 9.], [0., 8., 6.]]).reshape(1, 1, 3, 3)
    y, argmax = ref.maxpool2d_forward(x, (2, 2), (1, 1))
    assert np.array_equal(y[0, 0], [[5., 9.], [8., 9.]])
    # Flat indices h*W + w in the 3x3 plane; 9 at (1, 2) wins two windows.
    assert np.array_equal(argmax[0, 0], [[1, 5], [7, 5]])
    assert argmax.dtype == np.int64
    dx = ref.maxpool2d_backward(np.array([[[[1., 2.], [3., 4.]]]]), x.shape, argmax, (2, 2), (1, 1))
    assert np.array_equal(dx[0, 0], [[0., 1., 0.], [0., 0., 6.], [0., 3., 0.]])


def test_maxpool_op_ties_pick_first_in_row_major_order():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 2.0
    y, argmax = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    # Window (0, 0) holds 2 at (1, 0) and (1, 1): the first is at flat index 4.
    assert argmax[0, 0, 0, 0] == 4
    # The other windows are all zeros: their top-left pixel wins.
    assert argmax[0, 0, 0, 1] == 2 and argmax[0, 0, 1, 0] == 8 and argmax[0, 0, 1, 1] == 10


def test_maxpool_ties_match_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 2, 5, 5))
    x[0, 1, 2, 1:4] = 1.0
    for kernel, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (1, 2))]:
        _, argmax = ref.maxpool2d_forward(x, kernel, stride)
        _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride,
                                                    return_indices=True)
        assert np.array_equal(argmax, indices.numpy())


def test_avgpool_op_small_example():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = ref.avgpool2d_forward(x, (2, 2), (2, 2))
    assert np.array_equal(y[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    dx = ref.avgpool2d_backward(np.ones((1, 1, 3, 3)), x.shape, (2, 2), (1, 1))
    # Each pixel gets 1/4 from every 2x2 window that covers it.
    assert np.array_equal(dx[0, 0], np.array([[1, 2, 2, 1], [2, 4, 4, 2],
                                              [2, 4, 4, 2], [1, 2, 2, 1]]) / 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_ops_keep_dtype(rng, dtype):
    x = _distinct(rng, (2, 3, 5, 5), dtype)
    y, argmax = ref.maxpool2d_forward(x, (3, 3), (1, 1))
    dy = np.ones(y.shape, dtype=dtype)
    assert y.dtype == ref.maxpool2d_backward(dy, x.shape, argmax, (3, 3), (1, 1)).dtype == dtype
    y = ref.avgpool2d_forward(x, (3, 3), (1, 1))
    assert y.dtype == ref.avgpool2d_backward(dy, x.shape, (3, 3), (1, 1)).dtype == dtype


def test_pool_ops_reject_too_small_input():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ref.maxpool2d_forward(np.zeros((1, 1, 2, 5)), (3, 3), (1, 1))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ref.avgpool2d_forward(np.zeros((1, 1, 5, 2)), (3, 3), (1, 1))


@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_maxpool_matches_torch(rng, shape, kernel, stride):
    torch = pytest.importorskip("torch")
    x = _distinct(rng, shape)
    dy = rng.standard_normal(_out_shape(shape, kernel, stride))
    y_t, dx_t = _torch_pool(lambda t: torch.nn.MaxPool2d(kernel, stride)(t), x, dy)
    layer = tn.MaxPool2D(kernel, stride)
    assert_close(layer.forward(x), y_t, rtol=0, atol=0, what="y")
    assert_close(layer.backward(dy), dx_t, rtol=1e-12, atol=1e-12, what="dx")
    _, indices = torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride,
                                                return_indices=True)
    assert np.array_equal(ref.maxpool2d_forward(x, kernel, stride)[1], indices.numpy())


@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_avgpool_matches_torch(rng, shape, kernel, stride):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(_out_shape(shape, kernel, stride))
    y_t, dx_t = _torch_pool(lambda t: torch.nn.AvgPool2d(kernel, stride)(t), x, dy)
    layer = tn.AvgPool2D(kernel, stride)
    assert_close(layer.forward(x), y_t, rtol=1e-12, atol=1e-12, what="y")
    assert_close(layer.backward(dy), dx_t, rtol=1e-12, atol=1e-12, what="dx")


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (3, 2, 4, 7), (2, 3, 1, 1)])
def test_global_avgpool_matches_torch(rng, shape):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape[:2])
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    y_t, dx_t = _torch_pool(pool, x, dy)
    layer = tn.GlobalAvgPool2D()
    assert_close(layer.forward(x), y_t, rtol=1e-12, atol=1e-12, what="y")
    assert_close(layer.backward(dy), dx_t, rtol=1e-12, atol=1e-12, what="dx")


@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_maxpool_gradcheck(rng, shape, kernel, stride):
    check_grads(tn.MaxPool2D(kernel, stride), _distinct(rng, shape))


@pytest.mark.parametrize("shape, kernel, stride", CASES, ids=IDS)
def test_avgpool_gradcheck(rng, shape, kernel, stride):
    check_grads(tn.AvgPool2D(kernel, stride), rng.standard_normal(shape))


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


@pytest.mark.parametrize("layer", [tn.MaxPool2D(2), tn.AvgPool2D(2), tn.GlobalAvgPool2D()],
                         ids=["max", "avg", "global"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_layers_keep_dtype(rng, layer, dtype):
    x = _distinct(rng, (2, 3, 4, 4), dtype)
    y = layer.forward(x)
    dx = layer.backward(np.ones(y.shape, dtype=dtype))
    assert y.dtype == dx.dtype == dtype and dx.shape == x.shape


@pytest.mark.parametrize("layer", [tn.MaxPool2D(2), tn.AvgPool2D(2), tn.GlobalAvgPool2D()],
                         ids=["max", "avg", "global"])
def test_pool_bad_input(layer):
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


@pytest.mark.parametrize("layer", [tn.MaxPool2D(3, 1), tn.AvgPool2D(3, 1), tn.GlobalAvgPool2D()],
                         ids=["max", "avg", "global"])
def test_pool_without_input_grad(rng, layer):
    layer.requires_input_grad = False
    y = layer.forward(_distinct(rng, (2, 3, 5, 5)))
    assert layer.backward(np.ones(y.shape)) is None


@pytest.mark.parametrize("layer", [tn.MaxPool2D(3, 1), tn.AvgPool2D(3, 1), tn.GlobalAvgPool2D()],
                         ids=["max", "avg", "global"])
def test_pool_backward_is_repeatable(rng, layer):
    y = layer.forward(_distinct(rng, (2, 3, 5, 5)))
    dy = rng.standard_normal(y.shape)
    assert_close(layer.backward(dy), layer.backward(dy), what="a second backward")
