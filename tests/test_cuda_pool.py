"""cuda pooling ops (GPU or CUDA simulator) against the reference."""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]

# Non-overlapping 2x2 and overlapping windows that do not tile the input.
WINDOWS = [((2, 2), (2, 2)), ((3, 2), (2, 1))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel,stride", WINDOWS)
def test_maxpool_matches_ref(rng, dtype, kernel, stride):
    from tinynet.backends import cuda, ref
    x = rng.standard_normal((2, 3, 7, 6))
    y, cache = cuda.maxpool2d_forward(D(x, dtype), kernel, stride)
    y_ref, idx = ref.maxpool2d_forward(x, kernel, stride)
    assert_matches(y, y_ref, dtype, "y")
    dy = rng.standard_normal(y_ref.shape)
    dx = cuda.maxpool2d_backward(D(dy, dtype), x.shape, cache, kernel, stride)
    assert_matches(dx, ref.maxpool2d_backward(dy, x.shape, idx, kernel, stride), dtype, "dx")


def test_maxpool_ties_and_nan_follow_torch(rng):
    from tinynet.backends import cuda, ref
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 0, 2:, 2:] = 5.0
    y, cache = cuda.maxpool2d_forward(D(x), (2, 2), (2, 2))
    y_ref, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(H(y), y_ref)
    dy = np.arange(4.0).reshape(1, 1, 2, 2) + 1
    np.testing.assert_array_equal(H(cuda.maxpool2d_backward(D(dy), x.shape, cache, (2, 2), (2, 2))),
                                  ref.maxpool2d_backward(dy, x.shape, idx, (2, 2), (2, 2)))


def test_maxpool_backward_rejects_a_foreign_cache(rng):
    from tinynet.backends import cuda, ref
    x = rng.standard_normal((1, 2, 4, 4))
    _, idx = ref.maxpool2d_forward(x, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="maxpool2d_backward: cache"):
        cuda.maxpool2d_backward(D(np.ones((1, 2, 2, 2))), x.shape, D(idx), (2, 2), (2, 2))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel,stride", WINDOWS)
def test_avgpool_matches_ref(rng, dtype, kernel, stride):
    from tinynet.backends import cuda, ref
    x = rng.standard_normal((2, 3, 7, 6))
    y = cuda.avgpool2d_forward(D(x, dtype), kernel, stride)
    y_ref = ref.avgpool2d_forward(x, kernel, stride)
    assert_matches(y, y_ref, dtype, "y")
    dy = rng.standard_normal(y_ref.shape)
    assert_matches(cuda.avgpool2d_backward(D(dy, dtype), x.shape, kernel, stride),
                   ref.avgpool2d_backward(dy, x.shape, kernel, stride), dtype, "dx")
