"""Dense (fully connected) layer, the Numba CPU backend.

The ops, their equations and their argument checks are those of
tinynet/ops/dense/__init__.py: y = x W^T + b, dx = dy W, dW = dy^T x,
db = sum_n dy[n].

Each product is one BLAS GEMM (NumPy's ``np.matmul``, called outside
Numba), in the input dtype, on one BLAS thread
(tinynet.threads.single_threaded_numpy_blas): with two, OpenBLAS's workers
kept polling after each GEMM and slowed the numba kernels that followed up
to 2x (kernels/dense.py variant 5, kernels/instep.py). The bias costs one pass over the output and
nothing more: a small Numba kernel adds b to the GEMM's result in place in
the forward, and another sums dy's rows in float64 for db in the backward
(promoted from kernels/dense.py variant 3). Both kernels are serial: at these
sizes (a few thousand elements) waking the thread pool costs about ten times
the work.
"""
import numpy as np

from .. import dense
from ..contract import implements
from ...threads import single_threaded_numpy_blas
from ...backends.cpu_jit import njit_kernel

__all__ = ["dense_forward", "dense_backward"]


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


@implements(dense.dense_forward)
def dense_forward(x, W, b):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    with single_threaded_numpy_blas():
        y = np.matmul(x, W.T)
    if b is not None:
        _add_bias(y, np.ascontiguousarray(b))
    return y


@implements(dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    dy = np.ascontiguousarray(dy)
    db = None
    if has_bias:
        db = np.empty(dy.shape[1], dtype=dy.dtype)
        _bias_grad(dy, db)
    with single_threaded_numpy_blas():
        dW = np.matmul(dy.T, x)
        dx = np.matmul(dy, W) if need_dx else None
    return dx, dW, db
