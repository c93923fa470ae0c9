"""cuda WeightNorm ops (GPU or CUDA simulator) against the reference."""
import numpy as np
import pytest

from cudasim import FLOATS, D, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]

# Dense (O, I) and Conv2D (O, C, KH, KW) weights; fan-ins 7 and 18 span several
# reduction blocks of the patched size, and neither is a multiple of it.
SHAPES = [(5, 7), (3, 2, 3, 3)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_weightnorm_ops_match_ref(rng, dtype, shape):
    from tinynet.backends import cuda, ref
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2.0, (shape[0],) + (1,) * (len(shape) - 1))
    dw = rng.standard_normal(shape)
    w, vnorm = cuda.weightnorm_forward(D(v, dtype), D(g, dtype))
    w_ref, vnorm_ref = ref.weightnorm_forward(v, g)
    assert_matches(w, w_ref, dtype, "w")
    assert_matches(vnorm, vnorm_ref, dtype, "vnorm", out_dtype=np.float64)
    dv, dg = cuda.weightnorm_backward(D(v, dtype), D(g, dtype), vnorm, D(dw, dtype))
    dv_ref, dg_ref = ref.weightnorm_backward(v, g, vnorm_ref, dw)
    assert_matches(dv, dv_ref, dtype, "dv")
    assert_matches(dg, dg_ref, dtype, "dg")


def test_weightnorm_rejects_host_arrays(rng):
    from tinynet.backends import cuda
    v, g = rng.standard_normal((3, 4)), np.ones((3, 1))
    with pytest.raises(TypeError, match="weightnorm_forward: v .*host.*device arrays"):
        cuda.weightnorm_forward(v, D(g))
