"""Weight normalization as Numba kernels (the math: tinynet/ops/weightnorm/__init__.py).

v is viewed as (units, K): a row per output unit, K the fan-in. Each row is
a float64 reduction and then an elementwise pass over the same K values, so
one prange task per output unit does both while the row is in cache.
"""
import numpy as np
from numba import prange

from .. import weightnorm
from ..contract import implements
from ...backends.cpu_jit import njit_kernel

__all__ = ["weightnorm_forward", "weightnorm_backward"]


@njit_kernel(parallel=True)
def _forward(v, g, w, vnorm):
    units, K = v.shape
    # Parallel axis: the output unit o; iteration o writes only w[o] and vnorm[o].
    for o in prange(units):
        acc = 0.0
        for k in range(K):
            acc += np.float64(v[o, k]) * np.float64(v[o, k])
        n = np.sqrt(acc)
        vnorm[o] = n
        scale = np.float64(g[o]) / n
        for k in range(K):
            w[o, k] = v[o, k] * scale


@njit_kernel(parallel=True)
def _backward(v, g, vnorm, dw, dv, dg):
    units, K = v.shape
    # Parallel axis: the output unit o; iteration o writes only dv[o] and dg[o].
    for o in prange(units):
        acc = 0.0
        for k in range(K):
            acc += np.float64(dw[o, k]) * np.float64(v[o, k])
        n = vnorm[o]
        dgo = acc / n
        dg[o] = dgo
        a = np.float64(g[o]) / n
        b = dgo / n
        for k in range(K):
            dv[o, k] = a * (np.float64(dw[o, k]) - b * np.float64(v[o, k]))


@implements(weightnorm.weightnorm_forward)
def weightnorm_forward(v, g):
    units = v.shape[0]
    v2 = np.ascontiguousarray(v).reshape(units, -1)
    w = np.empty_like(v2)
    vnorm = np.empty(units, np.float64)
    _forward(v2, np.ascontiguousarray(g).reshape(units), w, vnorm)
    return w.reshape(v.shape), vnorm


@implements(weightnorm.weightnorm_backward)
def weightnorm_backward(v, g, vnorm, dw):
    units = v.shape[0]
    v2 = np.ascontiguousarray(v).reshape(units, -1)
    dv = np.empty_like(v2)
    dg = np.empty(units, v.dtype)
    _backward(v2, np.ascontiguousarray(g).reshape(units), np.ascontiguousarray(vnorm, np.float64),
              np.ascontiguousarray(dw).reshape(units, -1), dv, dg)
    return dv.reshape(v.shape), dg.reshape(g.shape)
