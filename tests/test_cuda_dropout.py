"""cuda dropout (GPU or CUDA simulator): the cpu backend's mask, bit for bit."""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks"),
              # numpy warns on the uint64 wraparound the hash relies on (the simulator
              # runs the kernel's arithmetic on numpy scalars).
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]


@pytest.mark.parametrize("p,seed,step", [(0.5, 7, 0), (0.3, 2**64 - 1, 12345), (0.0, 1, 2),
                                         (0.9, 123456789, 2**63)])
def test_mask_is_the_cpu_mask_bit_for_bit(p, seed, step):
    from tinynet.backends import cpu, cuda, ref
    shape = (3, 5, 7)
    keep = H(cuda.dropout_mask(shape, p, seed, step))
    assert keep.dtype == np.uint8
    np.testing.assert_array_equal(keep, cpu.dropout_mask(shape, p, seed, step))
    np.testing.assert_array_equal(keep, ref.dropout_mask(shape, p, seed, step))


@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_backward_match_ref_exactly(rng, dtype):
    from tinynet.backends import cuda, ref
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    x[0, 0, 0] = np.nan
    y, keep = cuda.dropout_forward(D(x), 0.4, 11, 3)
    y_ref, keep_ref = ref.dropout_forward(x, 0.4, 11, 3)
    np.testing.assert_array_equal(H(keep), keep_ref)
    np.testing.assert_array_equal(H(y), y_ref)
    dy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(H(cuda.dropout_backward(D(dy), keep, 0.4)),
                                  ref.dropout_backward(dy, keep_ref, 0.4))


def test_bad_p_and_seed_raise_as_ref():
    from tinynet.backends import cuda
    with pytest.raises(ValueError, match="dropout: p must be in"):
        cuda.dropout_forward(D(np.ones(3)), 1.0, 0, 0)
    with pytest.raises(TypeError, match="dropout: seed must be an integer"):
        cuda.dropout_mask((3,), 0.5, 1.5, 0)
