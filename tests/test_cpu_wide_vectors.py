"""tinynet.backends.cpu_jit.wide_vectors: 512-bit vectors for one kernel."""
import numba
import numpy as np
import pytest
from llvmlite import binding

from tinynet.backends.cpu_jit import FASTMATH, vector_exp, wide_vectors


def _exp_kernel(wide):
    # Compiled without a cache: numba shows no assembly of cached code.
    @numba.njit(parallel=True, fastmath=set(FASTMATH), error_model="numpy")
    def kernel(x, y):
        # Parallel axis: i; iteration i writes only y[i].
        for i in numba.prange(x.size):
            if wide:
                wide_vectors()
            y[i] = vector_exp(x[i])
    return kernel


def _avx512():
    return binding.get_host_cpu_features().get("avx512f", False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_vectors_keeps_the_results(dtype):
    x = np.linspace(-110, 80, 1001).astype(dtype)
    x[::97] = np.nan
    narrow, wide = np.empty_like(x), np.empty_like(x)
    _exp_kernel(False)(x, narrow)
    _exp_kernel(True)(x, wide)
    np.testing.assert_array_equal(wide, narrow)


@pytest.mark.skipif(not _avx512(), reason="needs a CPU with AVX-512 (512-bit registers)")
def test_wide_vectors_uses_512_bit_registers():
    x = np.ones(64, np.float32)
    y = np.empty_like(x)
    kernels = {wide: _exp_kernel(wide) for wide in (False, True)}
    for kernel in kernels.values():
        kernel(x, y)
    asm = {wide: "".join(k.inspect_asm().values()) for wide, k in kernels.items()}
    assert "zmm" in asm[True]
    # Numba's default: 256-bit at most where LLVM's tuning for the CPU prefers
    # 256-bit vectors (Intel's AVX-512 CPUs), so there the attribute made the
    # difference; for AMD's Zen 4 and later LLVM picks 512-bit vectors itself.
    if binding.get_host_cpu_name().startswith("znver"):
        assert "zmm" in asm[False]
    else:
        assert "zmm" not in asm[False]
