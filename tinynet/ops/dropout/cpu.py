"""The dropout ops on the cpu backend: Numba kernels.

The ops and their math (the mask's hash, its float test u >= p): the
contract, tinynet/ops/dropout/__init__.py. The kernels compute the mask of
the ref bit for bit. Since (h >> 11) is an integer below 2^53, the float test
equals the integer test

    keep_i = h_i >= T,   T = ceil(p * 2^53) * 2^11,

which needs no int-to-float conversion. Each element hashes only its own
index, so the mask does not depend on the thread count or the order of the
loop; each prange iteration writes only its own element.

The forward pass stores the uint8 mask and the backward pass reads it:
promoted from the lab (kernels/dropout.py), where it beat recomputing the
hash in the backward pass. ``splitmix64_u64`` and ``keep_threshold`` are the
kernels' hash and threshold, public for the lab's variants.
"""
import math

import numpy as np
from numba import prange

from .. import dropout
from ..contract import implements
from ...backends.cpu_jit import njit_kernel
from . import GOLDEN, MIX1, MIX2

__all__ = ["dropout_mask", "dropout_forward", "dropout_backward"]


@njit_kernel()
def splitmix64_u64(z):
    """The contract's ``splitmix64`` of one uint64, modulo 2^64, compiled by numba.

    The cpu kernels call it; it runs from Python too, on a ``np.uint64``.

    Parameters
    ----------
    z : np.uint64
        The state.

    Returns
    -------
    np.uint64
        The hash, bit for bit ``tinynet.ops.dropout.splitmix64(z)``.
    """
    z = z + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def keep_threshold(p):
    """The integer threshold T of the cpu kernels' test ``keep_i = h_i >= T``.

    Parameters
    ----------
    p : float
        The drop probability, in [0, 1).

    Returns
    -------
    np.uint64
        T = ceil(p * 2^53) * 2^11: h >= T exactly when (h >> 11) * 2^-53 >= p.
    """
    return np.uint64(math.ceil(p * 2.0**53) << 11)


@njit_kernel(parallel=True)
def _dropout_mask(seed, step, threshold, keep):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    # Parallel axis: the flat index i; iteration i writes only keep[i].
    for i in prange(keep.size):
        keep[i] = splitmix64_u64(key + np.uint64(i)) >= threshold


@njit_kernel(parallel=True)
def _dropout_forward(x, seed, step, threshold, scale, y, keep):
    key = splitmix64_u64(seed ^ splitmix64_u64(step))
    # Parallel axis: the flat index i; iteration i writes only y[i] and keep[i].
    for i in prange(x.size):
        k = np.uint8(splitmix64_u64(key + np.uint64(i)) >= threshold)
        keep[i] = k
        # (x * keep) * scale, in x's dtype: the ref's bits, NaN included.
        y[i] = x[i] * k * scale


@njit_kernel(parallel=True)
def _dropout_backward(dy, keep, scale, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(dy.size):
        dx[i] = dy[i] * keep[i] * scale


@implements(dropout.dropout_mask)
def dropout_mask(shape, p, seed, step):
    keep = np.empty(shape, dtype=np.uint8)
    _dropout_mask(np.uint64(seed), np.uint64(step), keep_threshold(float(p)), keep.reshape(-1))
    return keep


@implements(dropout.dropout_forward)
def dropout_forward(x, p, seed, step):
    """Mask and scaling fused in one pass."""
    p = float(p)
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    keep = np.empty(x.shape, dtype=np.uint8)
    scale = x.dtype.type(1.0 / (1.0 - p))
    _dropout_forward(x.reshape(-1), np.uint64(seed), np.uint64(step), keep_threshold(p), scale,
                     y.reshape(-1), keep.reshape(-1))
    return y, keep


@implements(dropout.dropout_backward)
def dropout_backward(dy, keep, p):
    dy = np.ascontiguousarray(dy)
    keep = np.ascontiguousarray(keep, dtype=np.uint8)
    dx = np.empty_like(dy)
    _dropout_backward(dy.reshape(-1), keep.reshape(-1), dy.dtype.type(1.0 / (1.0 - float(p))),
                      dx.reshape(-1))
    return dx
