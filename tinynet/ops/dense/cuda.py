"""Dense on the GPU: the ops of the contract (tinynet/ops/dense/__init__.py).

Each product is one cuBLAS GEMM (``cuda_device.matmul``, through CuPy; numpy
under the simulator). The bias and its gradient are the block-reduction
module's kernels with one position per channel (L = 1,
tinynet/backends/cuda_reduce.py): ``add_channel_bias`` adds b to the
forward's GEMM result in place, and ``channel_sums`` sums dy over the batch
for db, in float64.
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
