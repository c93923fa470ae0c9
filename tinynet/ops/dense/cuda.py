"""Dense (fully connected) layer on the GPU: cuBLAS GEMMs and two small kernels.

The ops of tinynet/ops/dense/__init__.py (which derives the math); x is
(N, I), W is (O, I), b is (O,):

    forward:   y = x W^T + b                 GEMM, then the bias kernel
    backward:  dx = dy W,  dW = dy^T x       GEMMs (device.matmul: cuBLAS via CuPy)
               db[o] = sum_n dy[n, o]        the channel-sum kernel

``channel_sums(a, N, C, L)`` is also the bias gradient of Conv2D: the sum of
an (N, C, L) array over n and l for every c, accumulated in float64. With
L > 1 it is one block per channel (a block reduction,
tinynet/backends/cuda_reduce.py); with L == 1 (Dense) one thread per column,
so that a warp reads consecutive columns of each row and no block sits on a
short column.
"""
from numba import cuda, float64

from ..contract import implements
from .. import dense
from ...backends import cuda_device as dev
from ...backends.cuda_device import REDUCE_SHARED
from ...backends.cuda_reduce import block_sum

__all__ = ["dense_forward", "dense_backward"]


@dev.kernel("void({f}[::1], {f}[::1], int64, int64)")
def _add_channel_bias(y, b, C, L):
    """y[n, c, l] += b[c] for y viewed flat as (N, C, L)."""
    # Parallel axis: the flat index of y; each thread writes only its own elements.
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] += b[(i // L) % C]


@dev.kernel("void({f}[::1], int64, int64, int64, {f}[::1])")
def _channel_sums(a, N, C, L, out):
    """out[c] = sum over (n, l) of a[n, c, l], in float64, for a viewed flat as (N, C, L)."""
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    M = N * L
    # Parallel axis: channels, one block each (grid-stride); the block's threads
    # split the (n, l) members and only thread 0 writes out[c].
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            n = m // L
            acc += a[(n * C + c) * L + (m - n * L)]
        acc = block_sum(acc, sh)
        if cuda.threadIdx.x == 0:
            out[c] = acc


@dev.kernel("void({f}[::1], int64, int64, {f}[::1])")
def _column_sums(a, N, C, out):
    """out[c] = sum over n of a[n, c], in float64, for a viewed flat as (N, C)."""
    # Parallel axis: the columns c, one thread each; a thread writes only out[c].
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = float64(0.0)
        for n in range(N):
            acc += a[n * C + c]
        out[c] = acc


def add_channel_bias(y, b, C, L):
    """y (viewed as (N, C, L)) += b[c], in place on a fresh device array."""
    _add_channel_bias[dev.grid_1d(y.size)](y.reshape(-1), b, C, L)


def channel_sums(a, N, C, L):
    """sum over (n, l) of a viewed as (N, C, L): a fresh (C,) device array of a's dtype."""
    out = dev.empty((C,), a.dtype)
    if L == 1:
        _column_sums[dev.grid_1d(C)](a.reshape(-1), N, C, out)
    else:
        _channel_sums[dev.grid_sets(C)](a.reshape(-1), N, C, L, out)
    return out


@implements(dense.dense_forward)
def dense_forward(x, W, b):
    dev.require_device("dense_forward", x=x, W=W, b=b)
    y = dev.matmul(x, W.T)
    if b is not None:
        add_channel_bias(y, b, W.shape[0], 1)
    return y


@implements(dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    dev.require_device("dense_backward", x=x, W=W, dy=dy)
    dW = dev.matmul(dy.T, x)
    db = channel_sums(dy, dy.shape[0], dy.shape[1], 1) if has_bias else None
    dx = dev.matmul(dy, W) if need_dx else None
    return dx, dW, db
