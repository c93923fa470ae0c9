"""The dropout ops in NumPy: the reference backend and the tests' oracle.

The ops and their math: the contract, tinynet/ops/dropout/__init__.py. The
mask hashes every flat index at once with the contract's ``splitmix64`` on
uint64 arrays and applies the float test u >= p; y and dx are
``x * keep * scale`` in x's dtype.
"""
import numpy as np

from .. import dropout
from ..contract import implements
from . import splitmix64

__all__ = ["dropout_mask", "dropout_forward", "dropout_backward"]


@implements(dropout.dropout_mask)
def dropout_mask(shape, p, seed, step):
    p = float(p)
    key = splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(step)))
    i = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix64(key + i)
    u = (h >> np.uint64(11)) * 2.0**-53
    return (u >= p).astype(np.uint8).reshape(shape)


@implements(dropout.dropout_forward)
def dropout_forward(x, p, seed, step):
    keep = dropout_mask(x.shape, p, seed, step)
    scale = x.dtype.type(1.0 / (1.0 - p))
    return x * keep * scale, keep


@implements(dropout.dropout_backward)
def dropout_backward(dy, keep, p):
    scale = dy.dtype.type(1.0 / (1.0 - p))
    return dy * keep * scale
