"""cuda activations (GPU or CUDA simulator) against the reference."""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]

# (name, extra args, whether the backward reads the output y instead of x)
ELEMENTWISE = [("relu", (), False), ("leaky_relu", (0.1,), False), ("sigmoid", (), True),
               ("tanh", (), True), ("gelu", (), False)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,args,from_y", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
def test_elementwise_matches_ref(rng, dtype, name, args, from_y):
    from tinynet.backends import cuda, ref
    x = 3 * rng.standard_normal((3, 5, 7))
    x[0, 0, :3] = [40.0, -40.0, 0.5]
    y_ref = getattr(ref, f"{name}_forward")(x, *args)
    assert_matches(getattr(cuda, f"{name}_forward")(D(x, dtype), *args), y_ref, dtype, "y")
    u = y_ref if from_y else x
    dy = rng.standard_normal(x.shape)
    assert_matches(getattr(cuda, f"{name}_backward")(D(u, dtype), D(dy, dtype), *args),
                   getattr(ref, f"{name}_backward")(u, dy, *args), dtype, "dx")


def test_relu_propagates_nan_as_ref():
    from tinynet.backends import cuda, ref
    x = np.array([np.nan, -1.0, 2.0, -np.inf])
    dy = np.array([1.0, np.nan, 3.0, 4.0])
    np.testing.assert_array_equal(H(cuda.relu_forward(D(x))), ref.relu_forward(x))
    np.testing.assert_array_equal(H(cuda.relu_backward(D(x), D(dy))), ref.relu_backward(x, dy))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_softmax_matches_ref(rng, dtype, axis):
    from tinynet.backends import cuda, ref
    x = 5 * rng.standard_normal((3, 5, 4))
    y_ref = ref.softmax_forward(x, axis)
    assert_matches(cuda.softmax_forward(D(x, dtype), axis), y_ref, dtype, "y")
    dy = rng.standard_normal(x.shape)
    assert_matches(cuda.softmax_backward(D(y_ref, dtype), D(dy, dtype), axis),
                   ref.softmax_backward(y_ref, dy, axis), dtype, "dx")


def test_softmax_rejects_a_bad_axis():
    from tinynet.backends import cuda
    with pytest.raises(ValueError, match="softmax_forward: axis 3"):
        cuda.softmax_forward(D(np.ones((2, 3))), 3)
