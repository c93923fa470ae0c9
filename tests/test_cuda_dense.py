"""cuda Dense ops (GPU or CUDA simulator) against the reference."""
import pytest

from cudasim import FLOATS, D, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
def test_dense_forward_backward_match_ref(rng, dtype, bias, need_dx):
    from tinynet.backends import cuda, ref
    x, W, b = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    dy = rng.standard_normal((5, 3))
    y = cuda.dense_forward(D(x, dtype), D(W, dtype), D(b, dtype) if bias else None)
    assert_matches(y, ref.dense_forward(x, W, b if bias else None), dtype, "y")
    got = cuda.dense_backward(D(x, dtype), D(W, dtype), D(dy, dtype), bias, need_dx)
    want = ref.dense_backward(x, W, dy, bias, need_dx)
    for name, g, w in zip(("dx", "dW", "db"), got, want):
        assert_matches(g, w, dtype, name)


def test_dense_rejects_host_arrays(rng):
    from tinynet.backends import cuda
    x, W = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    with pytest.raises(TypeError, match="dense_forward: x .*host.*device arrays"):
        cuda.dense_forward(x, D(W), None)
