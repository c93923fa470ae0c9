"""Dense (fully connected) layer, the Numba CPU backend.

The ops, their equations and their argument checks are those of
tinynet/backends/ref/dense.py: y = x W^T + b, dx = dy W, dW = dy^T x,
db = sum_n dy[n].

Each product is a BLAS GEMM in the input dtype. A large product
(at least POOL_GEMM_MACS multiply-adds, such as the reference CNN's
Dense(3136, 128)) is split by rows of its output into one block per thread
of numba's pool, each block a single-threaded BLAS call (``np.dot`` inside a
``prange``): numba's threads and BLAS's threads then never compete for the
same cores, which matters when another OpenMP runtime (torch's) keeps its
threads spinning. A small product is one ``np.matmul`` call outside Numba,
where a pool launch would cost more than the product. The bias costs one pass over the output and
nothing more: a small Numba kernel adds b to the GEMM's result in place in
the forward, and another sums dy's rows in float64 for db in the backward
(promoted from kernels/dense.py variant 3). Both kernels are serial: at these
sizes (a few thousand elements) waking the thread pool costs about ten times
the work.
"""
import numpy as np

import numba

from .. import ref
from ..contract import implements
from ...threads import single_threaded_kernel_blas
from .jit import njit_kernel

__all__ = ["dense_forward", "dense_backward"]


POOL_GEMM_MACS = 1 << 20
"""Multiply-adds from which a product runs as row blocks in numba's pool."""


@njit_kernel(parallel=True)
def _gemm_row_blocks(A, B, C, blocks):
    # C = A @ B by blocks of rows: block i is C[r0:r1] = A[r0:r1] @ B, one
    # single-threaded BLAS call.
    # Parallel axis: row blocks (one per thread); block i writes only C[r0:r1].
    M = A.shape[0]
    for i in numba.prange(blocks):
        r0 = i * M // blocks
        r1 = (i + 1) * M // blocks
        np.dot(A[r0:r1], B, C[r0:r1])


def _matmul(A, B):
    """A @ B for 2-D A (M, K) C-contiguous and B (K, N) in either order."""
    if A.shape[0] * A.shape[1] * B.shape[1] < POOL_GEMM_MACS or A.shape[0] < 2:
        return np.matmul(A, B)
    C = np.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
    with single_threaded_kernel_blas():
        _gemm_row_blocks(A, B, C, min(A.shape[0], numba.get_num_threads()))
    return C


@njit_kernel()
def _add_bias(y, b):
    """y[n, o] += b[o], in place."""
    N, O = y.shape
    for n in range(N):
        row = y[n]
        for o in range(O):
            row[o] += b[o]


@njit_kernel()
def _bias_grad(dy, db):
    """db[o] = sum_n dy[n, o], summed in float64 along the rows."""
    N, O = dy.shape
    acc = np.zeros(O, np.float64)
    for n in range(N):
        row = dy[n]
        for o in range(O):
            acc[o] += row[o]
    for o in range(O):
        db[o] = acc[o]


@implements(ref.dense.dense_forward)
def dense_forward(x, W, b):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    y = _matmul(x, W.T)
    if b is not None:
        _add_bias(y, np.ascontiguousarray(b))
    return y


@implements(ref.dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    dy = np.ascontiguousarray(dy)
    dW = _matmul(np.ascontiguousarray(dy.T), x)
    db = None
    if has_bias:
        db = np.empty(dy.shape[1], dtype=dy.dtype)
        _bias_grad(dy, db)
    dx = _matmul(dy, W) if need_dx else None
    return dx, dW, db
