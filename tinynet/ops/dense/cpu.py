"""Dense, the Numba CPU backend: the ops of the contract (tinynet/ops/dense/__init__.py).

The three products run as BLAS GEMMs split over numba's pool: each thread
calls a single-threaded BLAS GEMM on its block (``gemm`` of
tinynet.backends.cpu_blas, which takes a block of a row-major array in
place through its leading dimension). The forward splits y = x W^T by rows
of y (batch rows) or by its columns (output features), whichever is longer,
and adds b to its own block while it is in cache. The backward splits the
input features: block i0:i1 of dW = dy^T x and of dx = dy W, both on the
same columns of x and W. db is dy's column sum in float64 (``bias_grad``,
serial: a few thousand elements).

Measured in the lab (``python -m kernels.dense --bench``, 2 threads): numpy's
``matmul`` on two OpenBLAS threads is as fast alone, but its worker keeps
polling for work after each GEMM, on the core numba's pool needs next, and
slowed every numba kernel after it in the training step up to 2x (``python
-m kernels.system.instep``); on one BLAS thread it took 1.5 to 1.8x the split
GEMMs' time. numba's own ``np.dot`` takes whole contiguous arrays only (it
copies a column block), which leaves only row splits, and those ran
far below BLAS's two-thread rate for dW (inner dimension = the batch).
Products below SMALL_MACS multiply-adds (Dense(128, 10) at batch 64: 82K)
run as one numpy ``matmul`` on one BLAS thread instead (``forward_one_thread``
/ ``backward_one_thread``, the lab's variant 5): waking the pool
cost more than the GEMM (0.030 against 0.014 ms forward + backward in the
lab). So do zero-size ones (an empty batch or a width of 0).
Promoted from the lab (kernels/dense.py).
"""
import numba
import numpy as np

from .. import dense
from ..contract import implements
from ...threads import single_threaded_kernel_blas, single_threaded_numpy_blas
from ...backends.cpu_blas import NOTRANS, TRANS, gemm
from ...backends.cpu_jit import njit_kernel

__all__ = ["dense_forward", "dense_backward"]


@njit_kernel()
def add_bias(y, b):
    """y[n, o] += b[o] in place, for C-contiguous y (N, O) and b (O,) of one
    float dtype: the forward's bias kernel."""
    N, n_out = y.shape
    for n in range(N):
        row = y[n]
        for o in range(n_out):
            row[o] += b[o]


@njit_kernel()
def bias_grad(dy, db):
    """db[o] = sum_n dy[n, o], summed in float64 along the rows, for a
    C-contiguous dy (N, O) and db (O,) of its dtype: the backward's db kernel."""
    N, n_out = dy.shape
    acc = np.zeros(n_out, np.float64)
    for n in range(N):
        row = dy[n]
        for o in range(n_out):
            acc[o] += row[o]
    for o in range(n_out):
        db[o] = acc[o]


@njit_kernel(parallel=True)
def forward_blocks(x, W, b, has_bias, y, parts):
    """y = x W^T (+ b) for C-contiguous x (N, I), W (O, I), b (O,), y (N, O),
    as ``parts`` single-threaded GEMMs over numba's pool: blocks of y's rows
    when N >= O, else blocks of its columns. b is read only when has_bias."""
    N, I = x.shape
    O = W.shape[0]
    by_rows = N >= O
    # Parallel axis: blocks of y (rows or columns); block p writes only its own part of y.
    for p in numba.prange(parts):
        if by_rows:
            n0 = p * N // parts
            n1 = (p + 1) * N // parts
            gemm(NOTRANS, TRANS, n1 - n0, O, I, x, n0 * I, I, W, 0, I, 0.0, y, n0 * O, O)
            o0 = 0
            o1 = O
        else:
            n0 = 0
            n1 = N
            o0 = p * O // parts
            o1 = (p + 1) * O // parts
            gemm(NOTRANS, TRANS, N, o1 - o0, I, x, 0, I, W, o0 * I, I, 0.0, y, o0, O)
        if has_bias:
            for n in range(n0, n1):
                for o in range(o0, o1):
                    y[n, o] += b[o]


@njit_kernel(parallel=True)
def backward_blocks(x, W, dy, need_dx, dx, dW, parts):
    """dW = dy^T x and (when need_dx) dx = dy W, for C-contiguous x (N, I),
    W and dW (O, I), dy (N, O), dx (N, I), as single-threaded GEMMs on
    ``parts`` blocks of the input features."""
    N, I = x.shape
    O = W.shape[0]
    # Parallel axis: blocks i0:i1 of the input features; block p writes only dW[:, i0:i1] and dx[:, i0:i1].
    for p in numba.prange(parts):
        i0 = p * I // parts
        i1 = (p + 1) * I // parts
        gemm(TRANS, NOTRANS, O, i1 - i0, N, dy, 0, O, x, i0, I, 0.0, dW, i0, I)
        if need_dx:
            gemm(NOTRANS, NOTRANS, N, i1 - i0, O, dy, 0, O, W, i0, I, 0.0, dx, i0, I)


SMALL_MACS = 1 << 19


def _parts(length):
    """Blocks to split a GEMM into: one per numba thread, no more than ``length``."""
    return max(1, min(numba.get_num_threads(), length))


def _bias_gradient(dy, has_bias):
    """db (dy's column sums, in float64, in dy's dtype), or None without a bias."""
    if not has_bias:
        return None
    db = np.empty(dy.shape[1], dtype=dy.dtype)
    bias_grad(dy, db)
    return db


def forward_one_thread(x, W, b):
    """dense_forward for small products: numpy's matmul on one BLAS thread, then
    ``add_bias``. x, W and b C-contiguous (b may be None)."""
    with single_threaded_numpy_blas():
        y = np.matmul(x, W.T)
    if b is not None:
        add_bias(y, b)
    return y


def backward_one_thread(x, W, dy, has_bias, need_dx):
    """dense_backward for small products: numpy's matmul on one BLAS thread,
    db from ``bias_grad``. x, W and dy C-contiguous."""
    db = _bias_gradient(dy, has_bias)
    with single_threaded_numpy_blas():
        return (np.matmul(dy, W) if need_dx else None), np.matmul(dy.T, x), db


@implements(dense.dense_forward)
def dense_forward(x, W, b):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    if b is not None:
        b = np.ascontiguousarray(b)
    N, I = x.shape
    O = W.shape[0]
    if N * I * O < SMALL_MACS:
        return forward_one_thread(x, W, b)
    y = np.empty((N, O), dtype=x.dtype)
    with single_threaded_kernel_blas():
        forward_blocks(x, W, W[0] if b is None else b, b is not None, y, _parts(max(N, O)))
    return y


@implements(dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    dy = np.ascontiguousarray(dy)
    N, I = x.shape
    O = W.shape[0]
    if N * I * O < SMALL_MACS:
        return backward_one_thread(x, W, dy, has_bias, need_dx)
    db = _bias_gradient(dy, has_bias)
    dW = np.empty((O, I), dtype=x.dtype)
    dx = np.empty((N, I), dtype=x.dtype) if need_dx else dW
    with single_threaded_kernel_blas():
        backward_blocks(x, W, dy, need_dx, dx, dW, _parts(I))
    return (dx if need_dx else None), dW, db
