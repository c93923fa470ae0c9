"""tinynet.backends.cpu_blas.gemm: BLAS on blocks of row-major arrays, inside kernels."""
import itertools

import numba
import numpy as np
import pytest

from tinynet.backends.cpu_blas import NOTRANS, TRANS, gemm
from tinynet.backends.cpu_jit import cached_signatures, njit_kernel
from tinynet.threads import single_threaded_kernel_blas


@njit_kernel()
def _call(transa, transb, m, n, k, a, a_offset, lda, b, b_offset, ldb, beta, c, c_offset, ldc):
    return gemm(transa, transb, m, n, k, a, a_offset, lda, b, b_offset, ldb, beta, c,
                c_offset, ldc)


@njit_kernel(parallel=True)
def _column_blocks(a, b, c, parts):
    # c = a @ b, one GEMM per block of c's columns; block p writes only c[:, n0:n1].
    m, k = a.shape
    n = b.shape[1]
    for p in numba.prange(parts):
        n0 = p * n // parts
        n1 = (p + 1) * n // parts
        gemm(NOTRANS, NOTRANS, m, n1 - n0, k, a, 0, k, b, n0, n, 0.0, c, n0, n)


def _block(rng, dtype, rows, cols, row0, col0, transposed):
    """A (rows + 3, cols + 5) array and the block of it that op() reads: its
    (row0, col0) corner, transposed in memory when ``transposed``."""
    shape = (cols, rows) if transposed else (rows, cols)
    full = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dtype)
    block = full[row0:row0 + shape[0], col0:col0 + shape[1]]
    return full, row0 * full.shape[1] + col0, full.shape[1], block.T if transposed else block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transa, transb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_gemm_matches_numpy_on_blocks(dtype, transa, transb, beta):
    rng = np.random.default_rng(7)
    m, n, k = 5, 4, 6
    a, a_off, lda, op_a = _block(rng, dtype, m, k, 1, 2, transa)
    b, b_off, ldb, op_b = _block(rng, dtype, k, n, 2, 1, transb)
    c = rng.standard_normal((m + 2, n + 3)).astype(dtype)
    before = c.copy()
    status = _call(TRANS if transa else NOTRANS, TRANS if transb else NOTRANS, m, n, k,
                   a, a_off, lda, b, b_off, ldb, beta, c, 1 * c.shape[1] + 2, c.shape[1])
    assert status == 0
    expected = op_a.astype(np.float64) @ op_b + beta * before[1:1 + m, 2:2 + n]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c[1:1 + m, 2:2 + n], expected, rtol=tol, atol=tol)
    # Nothing outside the block changed.
    outside = np.ones(c.shape, bool)
    outside[1:1 + m, 2:2 + n] = False
    np.testing.assert_array_equal(c[outside], before[outside])


def test_gemm_beta_zero_ignores_nan_in_c():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    c = np.full((2, 2), np.nan, np.float32)
    _call(NOTRANS, NOTRANS, 2, 2, 3, a, 0, 3, b, 0, 2, 0.0, c, 0, 2)
    np.testing.assert_array_equal(c, np.full((2, 2), 3, np.float32))


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_gemm_column_blocks_in_the_pool(parts):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((33, 20)).astype(np.float32)
    b = rng.standard_normal((20, 45)).astype(np.float32)
    c = np.full((33, 45), np.nan, np.float32)
    with single_threaded_kernel_blas():
        _column_blocks(a, b, c, parts)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_kernel_that_calls_gemm_is_cached():
    if _call.stats.cache_path is None:
        pytest.skip("no writable cache directory in this environment")
    _call(NOTRANS, NOTRANS, 1, 1, 1, np.ones(1), 0, 1, np.ones(1), 0, 1, 0.0, np.ones(1), 0, 1)
    # gemm reaches BLAS by symbol name, not by an address baked into the
    # code, so numba saves the kernel (a ctypes pointer would stop it).
    assert cached_signatures(_call)
