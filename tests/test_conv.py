"""Conv2D: im2col / col2im, the im2col ops against the loop oracle, gradients,
torch parity and bad input."""
import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import check_grads, assert_close

# (N, C, H, W, F, (KH, KW), stride, padding): odd sizes, both strides and paddings,
# a non-square kernel and unequal strides and paddings.
SHAPES = [
    (2, 3, 5, 5, 4, (3, 3), (1, 1), (0, 0)),
    (3, 3, 7, 7, 2, (3, 3), (2, 2), (1, 1)),
    (2, 3, 5, 7, 4, (2, 3), (2, 1), (1, 0)),
    (3, 3, 7, 5, 3, (3, 1), (1, 2), (0, 1)),
]
IDS = ["k3s1p0", "k3s2p1", "k2x3-s2x1-p1x0", "k3x1-s1x2-p0x1"]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _conv_inputs(rng, shape, dtype):
    N, C, H, W, F, (KH, KW), _, _ = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = rng.standard_normal((F, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, Wt, b


def test_im2col_small_example():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    cols = ref.im2col(x, 2, 2, (1, 1), (0, 0))
    # Rows are the taps (0,0), (0,1), (1,0), (1,1); columns the output positions.
    expected = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]], dtype=float)
    assert cols.shape == (1, 4, 4)
    assert np.array_equal(cols[0], expected)
    padded = ref.im2col(x, 3, 3, (2, 2), (1, 1))
    assert padded.shape == (1, 9, 4)
    # Output (0, 0) sees the top-left corner of the padded image.
    assert np.array_equal(padded[0, :, 0], [0, 0, 0, 0, 0, 1, 0, 3, 4])


def test_col2im_sums_overlapping_windows():
    x_shape = (1, 1, 3, 3)
    ones = np.ones((1, 4, 4))
    counts = ref.col2im(ones, x_shape, 2, 2, (1, 1), (0, 0))
    # How many 2x2 windows cover each pixel of a 3x3 image.
    assert np.array_equal(counts[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_im2col_matches_torch_unfold(rng, shape):
    torch = pytest.importorskip("torch")
    x, _, _ = _conv_inputs(rng, shape, np.float64)
    kernel, stride, padding = shape[5:]
    cols = ref.im2col(x, *kernel, stride, padding)
    expected = torch.nn.functional.unfold(torch.tensor(x), kernel, padding=padding, stride=stride)
    assert np.array_equal(cols, expected.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_col2im_is_the_adjoint_of_im2col(rng, shape, dtype):
    x, _, _ = _conv_inputs(rng, shape, dtype)
    kernel, stride, padding = shape[5:]
    cols = ref.im2col(x, *kernel, stride, padding)
    c = rng.standard_normal(cols.shape).astype(dtype)
    back = ref.col2im(c, x.shape, *kernel, stride, padding)
    assert cols.dtype == back.dtype == dtype and back.shape == x.shape
    lhs = np.sum(back.astype(np.float64) * x)
    rhs = np.sum(c.astype(np.float64) * cols)
    assert abs(lhs - rhs) <= TOL[dtype] * max(1.0, abs(lhs))


def test_col2im_rejects_wrong_cols_shape():
    with pytest.raises(ValueError, match="col2im"):
        ref.col2im(np.zeros((1, 4, 5)), (1, 1, 3, 3), 2, 2, (1, 1), (0, 0))


@pytest.mark.parametrize("H, K, s, p, expected", [(5, 3, 1, 0, 3), (7, 3, 2, 1, 4), (6, 3, 2, 0, 2),
                                                  (4, 4, 3, 0, 1), (1, 3, 1, 1, 1)])
def test_conv2d_output_size(H, K, s, p, expected):
    assert ref.conv2d_output_size(H, H, K, K, (s, s), (p, p)) == (expected, expected)


def test_conv2d_output_size_rejects_too_small():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ref.conv2d_output_size(2, 5, 3, 3, (1, 1), (0, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_im2col_matches_naive(rng, shape, dtype):
    x, W, b = _conv_inputs(rng, shape, dtype)
    stride, padding = shape[6:]
    y, cache = ref.conv2d_forward(x, W, b, stride, padding)
    y_naive, _ = ref.conv2d_naive_forward(x, W, b, stride, padding)
    assert y.dtype == y_naive.dtype == dtype
    assert_close(y, y_naive, rtol=TOL[dtype], atol=TOL[dtype], what="y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = ref.conv2d_backward(dy, x, W, cache, stride, padding, True, True)
    grads_naive = ref.conv2d_naive_backward(dy, x, W, None, stride, padding, True, True)
    for name, g, g_naive in zip(("dx", "dW", "db"), grads, grads_naive):
        assert g.dtype == g_naive.dtype == dtype and g.shape == g_naive.shape
        assert_close(g, g_naive, rtol=TOL[dtype], atol=TOL[dtype], what=name)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=IDS[1:3])
def test_conv_naive_matches_torch(rng, shape):
    torch = pytest.importorskip("torch")
    x, W, b = _conv_inputs(rng, shape, np.float64)
    stride, padding = shape[6:]
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    yt = torch.nn.functional.conv2d(xt, Wt, bt, stride=stride, padding=padding)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    y, _ = ref.conv2d_naive_forward(x, W, b, stride, padding)
    dx, dW, db = ref.conv2d_naive_backward(dy, x, W, None, stride, padding, True, True)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    assert_close(dW, Wt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dW")
    assert_close(db, bt.grad.numpy(), rtol=1e-12, atol=1e-12, what="db")


def test_conv_backward_op_options(rng):
    shape = SHAPES[1]
    x, W, _ = _conv_inputs(rng, shape, np.float64)
    stride, padding = shape[6:]
    y, cache = ref.conv2d_forward(x, W, None, stride, padding)
    y_naive, _ = ref.conv2d_naive_forward(x, W, None, stride, padding)
    assert_close(y, y_naive, what="y without bias")
    dy = rng.standard_normal(y.shape)
    dx, dW, db = ref.conv2d_backward(dy, x, W, cache, stride, padding, False, False)
    assert dx is None and db is None
    _, dW_naive, db_naive = ref.conv2d_naive_backward(dy, x, W, None, stride, padding, False, False)
    assert db_naive is None
    assert_close(dW, dW_naive, what="dW")
    # Without a cache the columns are recomputed from x.
    grads = ref.conv2d_backward(dy, x, W, None, stride, padding, True, True)
    grads_cached = ref.conv2d_backward(dy, x, W, cache, stride, padding, True, True)
    for g, g_cached in zip(grads, grads_cached):
        assert_close(g, g_cached)


def test_conv_parameters():
    layer = tn.Conv2D(3, 4, (2, 3))
    assert layer.weight.shape == (4, 3, 2, 3) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32
    assert layer.weight.name == "weight" and layer.bias.name == "bias"
    assert layer.parameters() == [layer.weight, layer.bias]
    assert np.all(layer.bias.data == 0)
    bound = math.sqrt(6.0 / (3 * 2 * 3))
    assert np.abs(layer.weight.data).max() <= bound
    assert layer.kernel_size == (2, 3) and layer.stride == (1, 1) and layer.padding == (0, 0)
    layer = tn.Conv2D(3, 4, 3, stride=(2, 1), padding=[1, 0], bias=False)
    assert layer.stride == (2, 1) and layer.padding == (1, 0)
    assert layer.bias is None and layer.parameters() == [layer.weight]


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3), dict(kernel_size=3, padding=1),
                                    dict(kernel_size=(2, 3), stride=2, bias=False),
                                    dict(kernel_size=(3, 1), stride=(1, 2), padding=(0, 1))])
def test_conv_repr_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    expected = repr(torch.nn.Conv2d(3, 8, **kwargs)).replace("Conv2d", "Conv2D")
    assert repr(tn.Conv2D(3, 8, **kwargs)) == expected


@pytest.mark.parametrize("kwargs, error", [
    (dict(kernel_size=0), ValueError), (dict(kernel_size=(3, 0)), ValueError),
    (dict(kernel_size=3, stride=0), ValueError), (dict(kernel_size=3, padding=-1), ValueError),
    (dict(kernel_size=(3, 3, 3)), TypeError), (dict(kernel_size=2.5), TypeError),
    (dict(kernel_size=3, stride="2"), TypeError)])
def test_conv_bad_constructor(kwargs, error):
    with pytest.raises(error, match="Conv2D"):
        tn.Conv2D(3, 4, **kwargs)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_gradcheck(rng, shape):
    N, C, H, W, F, kernel, stride, padding = shape
    layer = tn.Conv2D(C, F, kernel, stride=stride, padding=padding)
    check_grads(layer, rng.standard_normal((N, C, H, W)))


def test_conv_gradcheck_without_bias(rng):
    layer = tn.Conv2D(3, 2, 3, stride=2, padding=1, bias=False)
    check_grads(layer, rng.standard_normal((2, 3, 5, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_keeps_dtype(rng, dtype):
    layer = tn.Conv2D(3, 4, 3, padding=1).to(dtype)
    y = layer.forward(rng.standard_normal((2, 3, 5, 5)).astype(dtype))
    dx = layer.backward(np.ones(y.shape, dtype=dtype))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == dtype


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_conv_matches_torch_conv2d(rng, shape, bias):
    torch = pytest.importorskip("torch")
    N, C, H, W, F, kernel, stride, padding = shape
    conv = torch.nn.Conv2d(C, F, kernel, stride=stride, padding=padding, bias=bias).double()
    layer = tn.Conv2D(C, F, kernel, stride=stride, padding=padding, bias=bias).to(np.float64)
    layer.weight.data[...] = conv.weight.detach().numpy()
    if bias:
        layer.bias.data[...] = conv.bias.detach().numpy()
    x = rng.standard_normal((N, C, H, W))
    xt = torch.tensor(x, requires_grad=True)
    yt = conv(xt)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    assert_close(layer.weight.grad, conv.weight.grad.numpy(), rtol=1e-12, atol=1e-12, what="dW")
    if bias:
        assert_close(layer.bias.grad, conv.bias.grad.numpy(), rtol=1e-12, atol=1e-12, what="db")


@pytest.mark.parametrize("shape", [(3, 5, 5), (2, 3, 5, 5, 1), (2, 4, 5, 5)])
def test_conv_rejects_wrong_shape(rng, shape):
    layer = tn.Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2D.*\(N, 3, H, W\)"):
        layer.forward(rng.standard_normal(shape).astype(np.float32))


def test_conv_rejects_input_smaller_than_kernel():
    with pytest.raises(ValueError, match="Conv2D.*smaller than the kernel"):
        tn.Conv2D(3, 4, 3).forward(np.ones((2, 3, 2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="Conv2D.*smaller than the kernel"):
        tn.Conv2D(3, 4, (1, 4)).forward(np.ones((2, 3, 5, 3), dtype=np.float32))
    # Padding makes a 1x1 input big enough for a 3x3 kernel.
    assert tn.Conv2D(3, 4, 3, padding=1).forward(np.ones((2, 3, 1, 1), dtype=np.float32)).shape \
        == (2, 4, 1, 1)


def test_conv_rejects_wrong_dtype(rng):
    layer = tn.Conv2D(3, 4, 3)
    with pytest.raises(TypeError, match="Conv2D"):
        layer.forward(rng.standard_normal((2, 3, 5, 5)))


def test_conv_backward_before_forward():
    with pytest.raises(RuntimeError, match="Conv2D"):
        tn.Conv2D(3, 4, 3).backward(np.ones((2, 4, 3, 3), dtype=np.float32))


def test_conv_rejects_bad_dy(rng):
    layer = tn.Conv2D(3, 4, 3)
    layer.forward(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Conv2D.*\(2, 4, 3, 3\)"):
        layer.backward(np.ones((2, 4, 5, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Conv2D"):
        layer.backward(np.ones((2, 4, 3, 3), dtype=np.float64))


def test_conv_without_input_grad(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    dy = rng.standard_normal((2, 4, 3, 3))
    full = tn.Conv2D(3, 4, 3, stride=2, padding=1).to(np.float64)
    full.forward(x)
    full.backward(dy)
    layer = tn.Conv2D(3, 4, 3, stride=2, padding=1).to(np.float64)
    layer.weight.data[...] = full.weight.data
    layer.requires_input_grad = False
    layer.forward(x)
    assert layer.backward(dy) is None
    assert np.any(layer.weight.grad != 0)
    assert_close(layer.weight.grad, full.weight.grad, what="dW")
    assert_close(layer.bias.grad, full.bias.grad, what="db")


def test_conv_backward_accumulates(rng):
    layer = tn.Conv2D(3, 4, 3, padding=1).to(np.float64)
    x = rng.standard_normal((2, 3, 5, 5))
    dy = rng.standard_normal((2, 4, 5, 5))
    layer.forward(x)
    dx1 = layer.backward(dy)
    dW1, db1 = layer.weight.grad.copy(), layer.bias.grad.copy()
    dx2 = layer.backward(dy)
    assert_close(dx2, dx1, what="dx is not accumulated")
    assert_close(layer.weight.grad, 2 * dW1, what="dW")
    assert_close(layer.bias.grad, 2 * db1, what="db")


def test_small_cnn_gradcheck(rng):
    tn.init.seed(3)
    model = tn.Sequential(tn.Conv2D(2, 3, 3, padding=1), tn.MaxPool2D(2), tn.Flatten(),
                          tn.Dense(3 * 2 * 2, 4))
    check_grads(model, rng.standard_normal((2, 2, 5, 5)))


def test_small_cnn_matches_torch(rng):
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    model = tn.Sequential(tn.Conv2D(2, 3, 3, padding=1), tn.MaxPool2D(2), tn.Flatten(),
                          tn.Dense(12, 4)).to(np.float64)
    model.load_state_dict(tmodel.state_dict())
    x = rng.standard_normal((2, 2, 5, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = tmodel(xt)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    assert_close(model.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(model.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        assert_close(p.grad, tp.grad.numpy(), rtol=1e-12, atol=1e-12, what=name)
