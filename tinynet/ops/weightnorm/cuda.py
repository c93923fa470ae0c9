"""Weight normalization as numba.cuda kernels (the math: tinynet/ops/weightnorm/__init__.py).

v is viewed as (units, K): a row per output unit, K the fan-in. One block
per output unit: its threads split the row's K values, reduce their float64
partial sums with ``block_sum`` (warp shuffles on a GPU, a shared-memory
tree under the simulator), and then write the row's outputs while it is
still in cache.
"""
import numpy as np
from numba import cuda, float64

from ..contract import implements
from .. import weightnorm
from ...backends import cuda_device as dev
from ...backends.cuda_device import REDUCE_SHARED
from ...backends.cuda_reduce import block_sum

__all__ = ["weightnorm_forward", "weightnorm_backward"]


@dev.kernel("void({f}[:, ::1], {f}[::1], {f}[:, ::1], float64[::1])")
def _forward(v, g, w, vnorm):
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    units, K = v.shape
    # Parallel axis: the output unit o, one block each (grid-stride); the
    # block's threads split row o, and only they write w[o] (thread 0 vnorm[o]).
    for o in range(cuda.blockIdx.x, units, cuda.gridDim.x):
        acc = float64(0.0)
        for k in range(cuda.threadIdx.x, K, cuda.blockDim.x):
            acc += float64(v[o, k]) * float64(v[o, k])
        n = block_sum(acc, sh) ** 0.5
        if cuda.threadIdx.x == 0:
            vnorm[o] = n
        scale = float64(g[o]) / n
        for k in range(cuda.threadIdx.x, K, cuda.blockDim.x):
            w[o, k] = float64(v[o, k]) * scale


@dev.kernel("void({f}[:, ::1], {f}[::1], float64[::1], {f}[:, ::1], {f}[:, ::1], {f}[::1])")
def _backward(v, g, vnorm, dw, dv, dg):
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    units, K = v.shape
    # Parallel axis: the output unit o, one block each (grid-stride); the
    # block's threads split row o, and only they write dv[o] (thread 0 dg[o]).
    for o in range(cuda.blockIdx.x, units, cuda.gridDim.x):
        acc = float64(0.0)
        for k in range(cuda.threadIdx.x, K, cuda.blockDim.x):
            acc += float64(dw[o, k]) * float64(v[o, k])
        n = vnorm[o]
        dgo = block_sum(acc, sh) / n
        if cuda.threadIdx.x == 0:
            dg[o] = dgo
        a = float64(g[o]) / n
        b = dgo / n
        for k in range(cuda.threadIdx.x, K, cuda.blockDim.x):
            dv[o, k] = a * (float64(dw[o, k]) - b * float64(v[o, k]))


@implements(weightnorm.weightnorm_forward)
def weightnorm_forward(v, g):
    dev.require_device("weightnorm_forward", v=v, g=g)
    units = v.shape[0]
    v2 = v.reshape(units, -1)
    w = dev.empty(v2.shape, v.dtype)
    vnorm = dev.empty((units,), np.float64)
    _forward[dev.grid_sets(units)](v2, g.reshape(units), w, vnorm)
    return w.reshape(v.shape), vnorm


@implements(weightnorm.weightnorm_backward)
def weightnorm_backward(v, g, vnorm, dw):
    dev.require_device("weightnorm_backward", v=v, g=g, vnorm=vnorm, dw=dw)
    units = v.shape[0]
    v2 = v.reshape(units, -1)
    dv = dev.empty(v2.shape, v.dtype)
    dg = dev.empty((units,), v.dtype)
    _backward[dev.grid_sets(units)](v2, g.reshape(units), vnorm.astype(np.float64, copy=False),
                                dw.reshape(units, -1), dv, dg)
    return dv.reshape(v.shape), dg.reshape(g.shape)
