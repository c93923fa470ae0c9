"""Dense (fully connected) layer, the Numba CPU backend.

x is (N, I), W is (O, I) and b is (O,), as torch.nn.Linear stores them.

forward:   y[n, o] = sum_i x[n, i] * W[o, i] + b[o]       i.e. y = x W^T + b
backward:  dx = dy W                                       (N, I)
           dW = dy^T x                                     (O, I)
           db[o] = sum_n dy[n, o]                          (O,)

Each product is one BLAS GEMM (NumPy's ``np.matmul``, called outside
Numba), in the input dtype. The bias costs one pass over the output and
nothing more: a small Numba kernel adds b to the GEMM's result in place in
the forward, and another sums dy's rows in float64 for db in the backward
(promoted from kernels/dense.py variant 3). Both kernels are serial: at these
sizes (a few thousand elements) waking the thread pool costs about ten times
the work.
"""
import numpy as np

from .jit import njit_kernel

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


def dense_forward(x, W, b):
    """y = x W^T + b.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, I).
    W : np.ndarray
        Weight, shape (O, I).
    b : np.ndarray or None
        Bias, shape (O,), or None for no bias.

    Returns
    -------
    y : np.ndarray
        Output, shape (N, O), dtype of x.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    y = np.matmul(x, W.T)
    if b is not None:
        _add_bias(y, np.ascontiguousarray(b))
    return y


def dense_backward(x, W, dy, has_bias, need_dx):
    """Gradients of y = x W^T + b with respect to x, W and b.

    Parameters
    ----------
    x : np.ndarray
        The forward input, shape (N, I).
    W : np.ndarray
        Weight, shape (O, I).
    dy : np.ndarray
        Upstream gradient dL/dy, shape (N, O).
    has_bias : bool
        Compute db.
    need_dx : bool
        Compute dx (the first layer of a network needs none).

    Returns
    -------
    dx : np.ndarray or None
        dL/dx = dy W, shape (N, I); None unless ``need_dx``.
    dW : np.ndarray
        dL/dW = dy^T x, shape (O, I).
    db : np.ndarray or None
        dL/db = sum of dy over the batch, shape (O,); None unless ``has_bias``.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    dy = np.ascontiguousarray(dy)
    dW = np.matmul(dy.T, x)
    db = None
    if has_bias:
        db = np.empty(dy.shape[1], dtype=dy.dtype)
        _bias_grad(dy, db)
    dx = np.matmul(dy, W) if need_dx else None
    return dx, dW, db
