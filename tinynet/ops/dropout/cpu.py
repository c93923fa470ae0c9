"""Dropout with a counter-based random mask (Numba kernels).

The ops, their equations and their argument checks are those of
tinynet/ops/dropout/__init__.py: inverted dropout with drop probability p,
y = x * keep / (1 - p) and dx = dy * keep / (1 - p).

The mask is the ref's, bit for bit: with uint64 arithmetic modulo 2^64,

    key    = splitmix64(seed ^ splitmix64(step))
    h_i    = splitmix64(key + i)             (i = flat C-order index)
    keep_i = 1 if (h_i >> 11) * 2^-53 >= p else 0

(splitmix64: https://prng.di.unimi.it/splitmix64.c). Since (h >> 11) is an
integer below 2^53, the float test equals the integer test

    keep_i = h_i >= T,   T = ceil(p * 2^53) * 2^11,

which needs no int-to-float conversion. P(keep) = 1 - ceil(p * 2^53) / 2^53,
within 2^-53 of 1 - p. Each element hashes only its own index, so the mask
does not depend on the thread count or the order of the loop.

The forward pass stores the uint8 mask and the backward pass reads it
(promoted from kernels/dropout.py variant 3, "fused, uint8 mask"; it beat
recomputing the hash in the backward pass, variant 4).
"""
import math

import numpy as np
from numba import prange

from .. import dropout
from ..contract import implements
from ...backends.cpu_jit import njit_kernel

__all__ = ["splitmix64", "dropout_mask", "dropout_forward", "dropout_backward"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit_kernel()
def _mix(z):
    """splitmix64 of one uint64, modulo 2^64."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _threshold(p):
    """T = ceil(p * 2^53) * 2^11 as uint64: keep_i is h_i >= T (exact for p in [0, 1))."""
    return np.uint64(math.ceil(p * 2.0**53) << 11)


@njit_kernel(parallel=True)
def _splitmix64(z, out):
    # Parallel axis: the flat index i; iteration i writes only out[i].
    for i in prange(z.size):
        out[i] = _mix(z[i])


@njit_kernel(parallel=True)
def _dropout_mask(seed, step, threshold, keep):
    key = _mix(seed ^ _mix(step))
    # Parallel axis: the flat index i; iteration i writes only keep[i].
    for i in prange(keep.size):
        keep[i] = _mix(key + np.uint64(i)) >= threshold


@njit_kernel(parallel=True)
def _dropout_forward(x, seed, step, threshold, scale, y, keep):
    key = _mix(seed ^ _mix(step))
    # Parallel axis: the flat index i; iteration i writes only y[i] and keep[i].
    for i in prange(x.size):
        k = np.uint8(_mix(key + np.uint64(i)) >= threshold)
        keep[i] = k
        # (x * keep) * scale, in x's dtype: the ref's bits, NaN included.
        y[i] = x[i] * k * scale


@njit_kernel(parallel=True)
def _dropout_backward(dy, keep, scale, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(dy.size):
        dx[i] = dy[i] * keep[i] * scale


def splitmix64(z):
    """tinynet.backends.dropout.splitmix64 (same arguments and result) as a Numba kernel."""
    z = np.asarray(z, dtype=np.uint64, order="C")
    out = np.empty_like(z)
    _splitmix64(z.reshape(-1), out.reshape(-1))
    return out[()] if out.ndim == 0 else out


@implements(dropout.dropout_mask)
def dropout_mask(shape, p, seed, step):
    keep = np.empty(shape, dtype=np.uint8)
    _dropout_mask(np.uint64(seed), np.uint64(step), _threshold(float(p)), keep.reshape(-1))
    return keep


@implements(dropout.dropout_forward)
def dropout_forward(x, p, seed, step):
    """Mask and scaling fused in one pass."""
    p = float(p)
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    keep = np.empty(x.shape, dtype=np.uint8)
    scale = x.dtype.type(1.0 / (1.0 - p))
    _dropout_forward(x.reshape(-1), np.uint64(seed), np.uint64(step), _threshold(p), scale,
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
