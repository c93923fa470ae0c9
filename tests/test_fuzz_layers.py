"""Property-based tests: random shapes and dtypes into every layer's forward and backward.

For each input the layer either raises TypeError / ValueError whose message
names the layer, or computes what the NumPy reference backend computes on the
same input and parameters (forward, dx and every parameter gradient). A dy of
the wrong shape or dtype is refused, naming the layer.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import event, given, strategies as st  # noqa: E402

import tinynet as tn  # noqa: E402

dim = st.integers(0, 6)
pos = st.integers(1, 6)


def nchw(c):
    return st.tuples(pos, st.just(c), pos, pos)


# name -> (factory, strategy of shapes the layer accepts)
LAYERS = {
    "Dense": (lambda: tn.Dense(5, 3), st.tuples(pos, st.just(5))),
    "Conv2D": (lambda: tn.Conv2D(2, 3, 3, stride=2, padding=1), nchw(2)),
    "Conv2D groups": (lambda: tn.Conv2D(4, 6, 3, stride=2, padding=1, groups=2), nchw(4)),
    "Conv2D depthwise": (lambda: tn.Conv2D(3, 3, 3, padding=1, groups=3), nchw(3)),
    "MaxPool2D": (lambda: tn.MaxPool2D(2), nchw(3)),
    "AvgPool2D": (lambda: tn.AvgPool2D(3, stride=2), nchw(2)),
    "GlobalAvgPool2D": (tn.GlobalAvgPool2D, nchw(3)),
    "Flatten": (tn.Flatten, st.lists(pos, min_size=2, max_size=4).map(tuple)),
    "ReLU": (tn.ReLU, st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "LeakyReLU": (lambda: tn.LeakyReLU(0.1), st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "Sigmoid": (tn.Sigmoid, st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "Tanh": (tn.Tanh, st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "GELU": (tn.GELU, st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "Softmax": (tn.Softmax, st.lists(pos, min_size=2, max_size=4).map(tuple)),
    "Dropout": (lambda: tn.Dropout(0.3, seed=7), st.lists(pos, min_size=1, max_size=4).map(tuple)),
    "BatchNorm": (lambda: tn.BatchNorm(2), st.one_of(st.tuples(st.integers(2, 6), st.just(2)),
                                                     nchw(2))),
    "LayerNorm": (lambda: tn.LayerNorm((2, 3)), st.tuples(pos, st.just(2), st.just(3))),
    "InstanceNorm": (lambda: tn.InstanceNorm(2), nchw(2)),
    "GroupNorm": (lambda: tn.GroupNorm(2, 4), nchw(4)),
}
# the float types three times each, so that most examples reach the kernels
DTYPES = [np.float32] * 3 + [np.float64] * 3 + [np.float16, np.int64, np.bool_, np.complex64]
any_shape = st.lists(dim, min_size=0, max_size=5).map(tuple)


def twin(layer, factory, dtype):
    """A second layer with the same parameters, buffers and mode."""
    other = factory()
    if dtype is not None:
        other.to(dtype)
    other.load_state_dict(layer.state_dict())
    other.train(layer.training)
    return other


def assert_names_layer(layer, error):
    assert layer.name in str(error), f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(data=st.data())
def test_layer_on_random_inputs(name, data):
    factory, valid = LAYERS[name]
    shape = data.draw(st.one_of(valid, valid, any_shape), label="shape")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    cast = dtype in (np.float32, np.float64) and data.draw(st.booleans(), label="cast layer")
    training = data.draw(st.booleans(), label="training")
    contiguous = data.draw(st.booleans(), label="contiguous")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))

    tn.init.seed(0)
    layer = factory()
    if cast:
        layer.to(dtype)
    layer.train(training)
    x = rng.standard_normal(shape) * 2
    x = (x.astype(dtype) if np.dtype(dtype).kind != "b" else x > 0)
    if not contiguous and x.ndim >= 2:
        x = np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)  # same values, other strides
    ref = twin(layer, factory, dtype if cast else None)

    try:
        y = layer.forward(x)
    except (TypeError, ValueError) as e:
        event(f"refused: {type(e).__name__}")
        assert_names_layer(layer, e)
        with tn.use_backend("ref"), pytest.raises(type(e)):
            ref.forward(x)  # both backends refuse it
        return
    event("computed, empty" if x.size == 0 else "computed")
    with tn.use_backend("ref"):
        y_ref = ref.forward(x)
    tol = 1e-4 if y.dtype == np.float32 else 1e-10
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype == x.dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol, err_msg=f"{name} forward")

    dy = rng.standard_normal(y.shape).astype(y.dtype)
    bad_dy = rng.standard_normal(y.shape + (2,)).astype(y.dtype)
    with pytest.raises(ValueError) as err:
        layer.backward(bad_dy)
    assert_names_layer(layer, err.value)
    if y.size:
        with pytest.raises(TypeError) as err:
            layer.backward(dy.astype(np.float16))
        assert_names_layer(layer, err.value)
    dx = layer.backward(dy)
    with tn.use_backend("ref"):
        dx_ref = ref.backward(dy)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol, err_msg=f"{name} dx")
    for (pname, p), (_, q) in zip(layer.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=tol, atol=tol * max(1, x.size),
                                   err_msg=f"{name} d{pname}")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_refuse_half_precision(name):
    layer = LAYERS[name][0]()
    accepted = []
    for shape in [(2, 5), (2, 2, 3), (2, 2, 4, 4), (2, 3, 4, 4), (2, 4, 4, 4)]:
        try:
            layer.forward(np.ones(shape, np.float32))
        except ValueError:
            continue
        accepted.append(shape)
        with pytest.raises(TypeError, match=f"{layer.name}: input must be float32 or float64"):
            layer.forward(np.ones(shape, np.float16))
    assert accepted, "some shape is valid"
    if layer.parameters():
        with pytest.raises(TypeError, match=f"{layer.name}.to: dtype must be float32 or float64"):
            layer.to(np.float16)
