"""cuda Conv2D ops (GPU or CUDA simulator) against the reference (and its loop oracle)."""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]

GEOMETRIES = [((1, 1), (1, 1)), ((2, 1), (0, 2))]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("C", [3, 1], ids=["im2col", "direct"])
@pytest.mark.parametrize("stride,padding", GEOMETRIES)
def test_conv2d_matches_naive_oracle(rng, dtype, C, stride, padding):
    from tinynet.backends import cuda, ref
    x, W, b = rng.standard_normal((2, C, 6, 5)), rng.standard_normal((4, C, 3, 2)), \
        rng.standard_normal(4)
    y, cache = cuda.conv2d_forward(D(x, dtype), D(W, dtype), D(b, dtype), stride, padding)
    y_ref, _ = ref.conv2d_naive_forward(x, W, b, stride, padding)
    assert_matches(y, y_ref, dtype, "y")
    assert (cache is None) == (C == 1)
    dy = rng.standard_normal(y_ref.shape)
    got = cuda.conv2d_backward(D(dy, dtype), D(x, dtype), D(W, dtype), cache, stride, padding,
                               True, True)
    want = ref.conv2d_naive_backward(dy, x, W, None, stride, padding, True, True)
    for name, g, w in zip(("dx", "dW", "db"), got, want):
        assert_matches(g, w, dtype, name, scale=10)


@pytest.mark.parametrize("C", [3, 1])
def test_conv2d_branches_no_bias_no_dx_no_cache(rng, C):
    from tinynet.backends import cuda, ref
    x, W = rng.standard_normal((3, C, 5, 5)), rng.standard_normal((2, C, 3, 3))
    y, _ = cuda.conv2d_forward(D(x), D(W), None, (1, 1), (0, 0))
    y_ref, cols = ref.conv2d_forward(x, W, None, (1, 1), (0, 0))
    assert_matches(y, y_ref, np.float64, "y without bias")
    dy = rng.standard_normal(y_ref.shape)
    dx, dW, db = cuda.conv2d_backward(D(dy), D(x), D(W), None, (1, 1), (0, 0), False, False)
    assert dx is None and db is None
    assert_matches(dW, ref.conv2d_backward(dy, x, W, cols, (1, 1), (0, 0), False, False)[1],
                   np.float64, "dW")


def test_im2col_col2im_match_ref(rng):
    from tinynet.backends import cuda, ref
    x = rng.standard_normal((2, 3, 5, 4))
    cols = cuda.im2col(D(x), 3, 2, (2, 1), (1, 0))
    want = ref.im2col(x, 3, 2, (2, 1), (1, 0))
    assert_matches(cols, want, np.float64, "cols")
    assert_matches(cuda.col2im(D(want), x.shape, 3, 2, (2, 1), (1, 0)),
                   ref.col2im(want, x.shape, 3, 2, (2, 1), (1, 0)), np.float64, "col2im")
    assert H(cols).shape == want.shape
