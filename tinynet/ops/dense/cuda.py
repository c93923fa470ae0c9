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
from ..contract import implements
from .. import dense
from ...backends import cuda_device as dev
from ...backends.cuda_reduce import add_channel_bias, channel_sums

__all__ = ["dense_forward", "dense_backward"]


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
