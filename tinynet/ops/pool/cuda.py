"""Pooling on the GPU, numba.cuda kernels: the ops of the contract
(tinynet/ops/pool/__init__.py).

Parallel axes: the forward kernels run one thread per output element, which
scans its window's taps t = p*kw + q in row-major order (max pooling with the
contract's take-over test, ``v > best or v != v``; average pooling summing in
float64). The backward kernels run one thread per input pixel, which gathers
from the (at most ceil(kh/sh) * ceil(kw/sw)) windows that contain it instead
of scattering: overlapping windows need no atomics, and each thread writes
only its own dx, accumulated in float64. All loops are grid-stride over flat
indices.

The max-pool cache is the argmax's tap t inside its window, uint8 (int32 for
windows of more than 255 taps), as on the cpu backend; maxpool2d_backward
takes only the cache of this module's forward.
"""
import numpy as np
from numba import cuda, float64

from ..contract import implements
from .. import pool
from ...backends import cuda_device as dev

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


@cuda.jit(device=True, inline=True)
def _window_range(h, k, s, n):
    """The windows i (along one axis, n of them) that contain pixel h: i_lo <= i < i_hi."""
    i_lo = 0 if h < k else (h - k) // s + 1
    i_hi = min(h // s + 1, n)
    return i_lo, i_hi


@cuda.jit(device=True, inline=True)
def _pixel_windows(e, H, W, kh, kw, sh, sw, OH, OW):
    """Flat input pixel e of (planes, H, W): its plane, row h, column w, and the
    windows (i_lo <= i < i_hi, j_lo <= j < j_hi) that contain it."""
    plane = e // (H * W)
    r = e - plane * (H * W)
    h = r // W
    w = r - h * W
    i_lo, i_hi = _window_range(h, kh, sh, OH)
    j_lo, j_hi = _window_range(w, kw, sw, OW)
    return plane, h, w, i_lo, i_hi, j_lo, j_hi


@dev.kernel("void({f}[::1], int64, int64, int64, int64, int64, int64, int64, int64, "
            "{f}[::1], uint8[::1])")
def _maxpool_forward(x, H, W, kh, kw, sh, sw, OH, OW, y, tap):
    # Parallel axis: the flat output index; each thread writes its own y and tap.
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane = o // (OH * OW)
        r = o - plane * (OH * OW)
        i = r // OW
        j = r - i * OW
        base = plane * H * W + i * sh * W + j * sw
        best = x[base]
        t_best = 0
        for p in range(kh):
            for q in range(kw):
                v = x[base + p * W + q]
                if v > best or v != v:
                    best = v
                    t_best = p * kw + q
        y[o] = best
        tap[o] = t_best


@dev.kernel("void({f}[::1], uint8[::1], int64, int64, int64, int64, int64, int64, int64, "
            "int64, {f}[::1])")
def _maxpool_backward(dy, tap, H, W, kh, kw, sh, sw, OH, OW, dx):
    # Parallel axis: the flat input pixel; each thread gathers and writes its own dx.
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane, h, w, i_lo, i_hi, j_lo, j_hi = _pixel_windows(e, H, W, kh, kw, sh, sw, OH, OW)
        acc = float64(0.0)
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                o = (plane * OH + i) * OW + j
                if tap[o] == (h - i * sh) * kw + (w - j * sw):
                    acc += dy[o]
        dx[e] = acc


@dev.kernel("void({f}[::1], int64, int64, int64, int64, int64, int64, int64, int64, "
            "{f}[::1])")
def _avgpool_forward(x, H, W, kh, kw, sh, sw, OH, OW, y):
    inv = 1.0 / (kh * kw)
    # Parallel axis: the flat output index; each thread writes its own y.
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        plane = o // (OH * OW)
        r = o - plane * (OH * OW)
        i = r // OW
        j = r - i * OW
        base = plane * H * W + i * sh * W + j * sw
        acc = float64(0.0)
        for p in range(kh):
            for q in range(kw):
                acc += x[base + p * W + q]
        y[o] = acc * inv


@dev.kernel("void({f}[::1], int64, int64, int64, int64, int64, int64, int64, int64, "
            "{f}[::1])")
def _avgpool_backward(dy, H, W, kh, kw, sh, sw, OH, OW, dx):
    inv = 1.0 / (kh * kw)
    # Parallel axis: the flat input pixel; each thread gathers and writes its own dx.
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        plane, _, _, i_lo, i_hi, j_lo, j_hi = _pixel_windows(e, H, W, kh, kw, sh, sw, OH, OW)
        acc = float64(0.0)
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                acc += dy[(plane * OH + i) * OW + j]
        dx[e] = acc * inv


def _geometry(x_shape, kernel, stride):
    OH, OW = pool.output_size(x_shape, kernel, stride)
    return (x_shape[2], x_shape[3], kernel[0], kernel[1], stride[0], stride[1], OH, OW)


def _tap_dtype(kernel):
    return np.uint8 if kernel[0] * kernel[1] <= 255 else np.int32


@implements(pool.maxpool2d_forward)
def maxpool2d_forward(x, kernel, stride):
    dev.require_device("maxpool2d_forward", x=x)
    g = _geometry(x.shape, kernel, stride)
    N, C = x.shape[:2]
    y = dev.empty((N, C, g[-2], g[-1]), x.dtype)
    tap = dev.empty(y.shape, _tap_dtype(kernel))
    _maxpool_forward[dev.grid_1d(y.size)](x.reshape(-1), *g, y.reshape(-1), tap.reshape(-1))
    return y, tap


@implements(pool.maxpool2d_backward)
def maxpool2d_backward(dy, x_shape, cache, kernel, stride):
    dev.require_device("maxpool2d_backward", dy=dy, cache=cache)
    g = _geometry(x_shape, kernel, stride)
    if cache.shape != dy.shape or cache.dtype != _tap_dtype(kernel):
        raise ValueError(f"maxpool2d_backward: cache must be the cuda forward's tap array, "
                         f"shape {dy.shape} and dtype {np.dtype(_tap_dtype(kernel))}, got "
                         f"shape {cache.shape} and dtype {cache.dtype}")
    dx = dev.empty(tuple(x_shape), dy.dtype)
    _maxpool_backward[dev.grid_1d(dx.size)](dy.reshape(-1), cache.reshape(-1), *g, dx.reshape(-1))
    return dx


@implements(pool.avgpool2d_forward)
def avgpool2d_forward(x, kernel, stride):
    dev.require_device("avgpool2d_forward", x=x)
    g = _geometry(x.shape, kernel, stride)
    N, C = x.shape[:2]
    y = dev.empty((N, C, g[-2], g[-1]), x.dtype)
    _avgpool_forward[dev.grid_1d(y.size)](x.reshape(-1), *g, y.reshape(-1))
    return y


@implements(pool.avgpool2d_backward)
def avgpool2d_backward(dy, x_shape, kernel, stride):
    dev.require_device("avgpool2d_backward", dy=dy)
    g = _geometry(x_shape, kernel, stride)
    dx = dev.empty(tuple(x_shape), dy.dtype)
    _avgpool_backward[dev.grid_1d(dx.size)](dy.reshape(-1), *g, dx.reshape(-1))
    return dx
