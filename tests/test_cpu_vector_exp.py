"""cpu_jit's inlined exp helpers, called from a kernel, against float64 numpy."""
import numpy as np
from numba import prange

from tinynet.backends.cpu_jit import njit_kernel, vector_exp_normal_f32


@njit_kernel(parallel=True, cache=False)
def _exp_normal(a, out):
    for i in prange(a.size):
        out[i] = vector_exp_normal_f32(a[i])


def exp_normal(a):
    a = np.asarray(a, np.float32)
    out = np.empty_like(a)
    _exp_normal(a, out)
    return out


def test_exp_normal_is_within_two_ulps_over_the_normal_range():
    a = np.concatenate([np.linspace(-87.0, 0.0, 400001, dtype=np.float32),
                        -np.logspace(-8, 0, 1001, dtype=np.float32)])
    got = exp_normal(a).astype(np.float64)
    want = np.exp(a.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < 2.5e-7


def test_exp_normal_flushes_below_the_normal_range_and_keeps_nan():
    got = exp_normal([0.0, -0.0, -87.5, -100.0, -np.inf, np.nan])
    assert got[0] == 1.0 and got[1] == 1.0
    assert np.array_equal(got[2:5], [0.0, 0.0, 0.0])
    assert np.isnan(got[5])
