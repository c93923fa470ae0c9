"""weightnorm: the NumPy reference of tinynet.ops.weightnorm.

The math, the shapes and the argument checks are in the contract
(tinynet/ops/weightnorm/__init__.py); this module computes them as written there.
"""
import numpy as np
from ..contract import op
from ..contract import implements
from .. import weightnorm

__all__ = ["weightnorm_forward", "weightnorm_backward"]


@implements(weightnorm.weightnorm_forward)
def weightnorm_forward(v, g):
    v64 = v.reshape(v.shape[0], -1).astype(np.float64)
    vnorm = np.sqrt(np.sum(v64 * v64, axis=1))
    w = v64 * (g.reshape(-1).astype(np.float64) / vnorm)[:, None]
    return np.ascontiguousarray(w.reshape(v.shape), dtype=v.dtype), vnorm


@implements(weightnorm.weightnorm_backward)
def weightnorm_backward(v, g, vnorm, dw):
    O = v.shape[0]
    v64 = v.reshape(O, -1).astype(np.float64)
    dw64 = dw.reshape(O, -1).astype(np.float64)
    n = np.asarray(vnorm, np.float64)
    g64 = g.reshape(-1).astype(np.float64)
    dg = np.sum(dw64 * v64, axis=1) / n
    dv = (g64 / n)[:, None] * (dw64 - (dg / n)[:, None] * v64)
    return (np.ascontiguousarray(dv.reshape(v.shape), dtype=v.dtype),
            dg.reshape(g.shape).astype(v.dtype))
