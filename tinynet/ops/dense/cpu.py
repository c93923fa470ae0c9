"""Dense, the Numba CPU backend: the ops of the contract (tinynet/ops/dense/__init__.py).

Each product is one BLAS GEMM (NumPy's ``np.matmul``, called outside
Numba), in the input dtype, on one BLAS thread
(tinynet.threads.single_threaded_numpy_blas): with two, OpenBLAS's workers
kept polling after each GEMM and slowed the numba kernels that followed up
to 2x (kernels/instep.py). The bias costs one pass over the output and
nothing more: ``add_bias`` adds b to the GEMM's result in place in the
forward, and ``bias_grad`` sums dy's rows in float64 for db in the backward.
Both kernels are serial: at these sizes (a few thousand elements) waking the
thread pool costs about ten times the work. Promoted from the lab
(kernels/dense.py), which also runs the two kernels with other GEMMs.
"""
import numpy as np

from .. import dense
from ..contract import implements
from ...threads import single_threaded_numpy_blas
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


@implements(dense.dense_forward)
def dense_forward(x, W, b):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    with single_threaded_numpy_blas():
        y = np.matmul(x, W.T)
    if b is not None:
        add_bias(y, np.ascontiguousarray(b))
    return y


@implements(dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    dy = np.ascontiguousarray(dy)
    db = None
    if has_bias:
        db = np.empty(dy.shape[1], dtype=dy.dtype)
        bias_grad(dy, db)
    with single_threaded_numpy_blas():
        dW = np.matmul(dy.T, x)
        dx = np.matmul(dy, W) if need_dx else None
    return dx, dW, db
