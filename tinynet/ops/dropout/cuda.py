"""The dropout ops on the cuda backend: numba.cuda kernels and their launchers.

The ops and their math (the mask's hash, its float test u >= p): the
contract, tinynet/ops/dropout/__init__.py. The kernels compute the mask of
the ref bit for bit, with the ref's float test itself: (h >> 11) < 2^53
converts to float64 exactly. The key is computed once on the host with the
contract's ``splitmix64``; each thread hashes only its own flat indices and
writes only their y and keep, so the mask is the same for any grid, block
size or device.
"""
import numpy as np
from numba import cuda, uint64, uint8, float64

from ..contract import implements
from .. import dropout
from . import GOLDEN, MIX1, MIX2, check_counter, check_p, splitmix64
from ...backends import cuda_device as dev

__all__ = ["dropout_mask", "dropout_forward", "dropout_backward"]

_TWO_M53 = 2.0 ** -53


@cuda.jit(device=True, inline=True)
def _mix(z):
    """splitmix64 of one uint64, modulo 2^64."""
    z = z + GOLDEN
    z = (z ^ (z >> uint64(30))) * MIX1
    z = (z ^ (z >> uint64(27))) * MIX2
    return z ^ (z >> uint64(31))


@cuda.jit(device=True, inline=True)
def _keep(key, i, p):
    """1 when element i is kept: u_i = (splitmix64(key + i) >> 11) * 2^-53 >= p."""
    h = _mix(key + uint64(i))
    return uint8(1) if float64(h >> uint64(11)) * _TWO_M53 >= p else uint8(0)


@dev.kernel("void(uint64, float64, uint8[::1])")
def _dropout_mask(key, p, keep):
    # Parallel axis: the flat index; each thread writes only its own keep[i].
    for i in range(cuda.grid(1), keep.size, cuda.gridsize(1)):
        keep[i] = _keep(key, i, p)


@dev.kernel("void({f}[::1], uint64, float64, {f}, {f}, {f}[::1], uint8[::1])")
def _dropout_forward(x, key, p, scale, zero, y, keep):
    # Parallel axis: the flat index; each thread writes only its own y[i] and keep[i].
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        k = _keep(key, i, p)
        keep[i] = k
        # x * (keep * scale): x * scale or x * 0 (NaN stays NaN), in x's dtype.
        y[i] = x[i] * (scale if k else zero)


@dev.kernel("void({f}[::1], uint8[::1], {f}, {f}, {f}[::1])")
def _dropout_backward(dy, keep, scale, zero, dx):
    # Parallel axis: the flat index; each thread writes only its own dx[i].
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (scale if keep[i] else zero)


def _key(seed, step):
    """key = splitmix64(seed ^ splitmix64(step)) as np.uint64, after the ref's checks."""
    seed = check_counter("seed", seed)
    step = check_counter("step", step)
    return np.uint64(splitmix64(np.uint64(seed) ^ splitmix64(step)))


@implements(dropout.dropout_mask)
def dropout_mask(shape, p, seed, step):
    p = check_p(p)
    keep = dev.empty(tuple(shape), np.uint8)
    _dropout_mask[dev.grid_1d(keep.size)](_key(seed, step), p, keep.reshape(-1))
    return keep


@implements(dropout.dropout_forward)
def dropout_forward(x, p, seed, step):
    dev.require_device("dropout_forward", x=x)
    p = check_p(p)
    key = _key(seed, step)
    y = dev.empty_like(x)
    keep = dev.empty(x.shape, np.uint8)
    dt = x.dtype.type
    _dropout_forward[dev.grid_1d(x.size)](x.reshape(-1), key, p, dt(1.0 / (1.0 - p)), dt(0),
                                          y.reshape(-1), keep.reshape(-1))
    return y, keep


@implements(dropout.dropout_backward)
def dropout_backward(dy, keep, p):
    dev.require_device("dropout_backward", dy=dy, keep=keep)
    p = check_p(p)
    if keep.shape != dy.shape or keep.dtype != np.uint8:
        raise ValueError(f"dropout_backward: keep must be uint8 of dy's shape {dy.shape}, "
                         f"got {keep.dtype} {keep.shape}")
    dx = dev.empty_like(dy)
    dt = dy.dtype.type
    _dropout_backward[dev.grid_1d(dy.size)](dy.reshape(-1), keep.reshape(-1),
                                            dt(1.0 / (1.0 - p)), dt(0), dx.reshape(-1))
    return dx
