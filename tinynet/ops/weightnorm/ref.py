"""The NumPy reference of weight normalization (the math: tinynet/ops/weightnorm/__init__.py).

Whole-array NumPy in float64: v, g and dw are cast up, the sums of each row
are ``np.sum`` over the (units, K) view of v, and the results are cast back
to v's dtype at the end (vnorm stays float64).
"""
import numpy as np

from .. import weightnorm
from ..contract import implements

__all__ = ["weightnorm_forward", "weightnorm_backward"]


@implements(weightnorm.weightnorm_forward)
def weightnorm_forward(v, g):
    v64 = v.reshape(v.shape[0], -1).astype(np.float64)
    vnorm = np.sqrt(np.sum(v64 * v64, axis=1))
    w = v64 * (g.reshape(-1).astype(np.float64) / vnorm)[:, None]
    return np.ascontiguousarray(w.reshape(v.shape), dtype=v.dtype), vnorm


@implements(weightnorm.weightnorm_backward)
def weightnorm_backward(v, g, vnorm, dw):
    units = v.shape[0]
    v64 = v.reshape(units, -1).astype(np.float64)
    dw64 = dw.reshape(units, -1).astype(np.float64)
    n = np.asarray(vnorm, np.float64)
    g64 = g.reshape(-1).astype(np.float64)
    dg = np.sum(dw64 * v64, axis=1) / n
    dv = (g64 / n)[:, None] * (dw64 - (dg / n)[:, None] * v64)
    return (np.ascontiguousarray(dv.reshape(v.shape), dtype=v.dtype),
            dg.reshape(g.shape).astype(v.dtype))
