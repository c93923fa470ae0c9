"""Pooling, the Numba CPU kernels: the ops of the contract (tinynet/ops/pool/__init__.py).

Parallel axis: every kernel runs a prange over the N*C planes of (N*C, H, W)
views. A window never leaves its plane, so one iteration reads and writes its
own plane only and no two iterations write one element.

The max-pool cache is the argmax's tap t = p*kw + q inside its window, uint8
(int32 for windows of more than 256 taps), not the ref's flat index: 1 byte
per output instead of 8. maxpool2d_backward accepts only the cache of this
module's forward. Average pooling sums each window in float64.

Two schedules (``SCHEDULES``), promoted from the lab (kernels/pool.py, which
races them against the alternatives and records why these won):

- "2x2", a 2x2 window at stride 2 (the pools of the reference CNN). Max: the
  four taps as a branch-free tree (the winner of the top pair, of the bottom
  pair, then of the two, each by the contract's take-over test), which
  vectorizes; the backward zeroes the plane and stores each dy at its
  argmax, since the windows do not overlap. Average: the four taps unrolled;
  the backward writes each dx pixel once, over contiguous columns.
- "any", any window. Max forward: for each output row the taps run outside
  and the output columns inside, on the running (max, tap) row, with the
  compare as a select; the backward zeroes the plane and scatter-adds each dy
  through a table of flat tap offsets p*W + q. Storing the tap beat
  recomputing the argmax from x in the backward. Average: a float64 sum per
  window; the backward scatter-adds dy / (kh*kw) into a zeroed dx.

The ops run the schedule that ``schedule(kernel, stride)`` picks.
``maxpool2d_forward_scheduled`` and its three siblings are the same ops with
the schedule as an argument: the lab runs "any" on 2x2 windows through them,
to measure what the specialization gains.
"""
import numba
import numpy as np

from .. import pool
from ..contract import implements
from ...backends.cpu_jit import njit_kernel

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]

SCHEDULES = ("2x2", "any")
"""The kernel sets of the ops: "2x2" for a 2x2 window at stride 2, "any" for any window."""


def schedule(kernel, stride):
    """The schedule the ops run: "2x2" for a 2x2 window at stride 2, else "any"."""
    return "2x2" if tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) else "any"


def _is_2x2(name, kernel, stride):
    """True to run the "2x2" kernels, False for "any"; ValueError for another
    schedule name, or for "2x2" on another window."""
    if name == "any":
        return False
    if name == "2x2" and schedule(kernel, stride) == "2x2":
        return True
    raise ValueError(f"pool schedule must be one of {SCHEDULES}, \"2x2\" only for a 2x2 window "
                     f"at stride 2; got {name!r} for kernel {kernel}, stride {stride}")


def _tap_dtype(kernel):
    """The smallest integer type that holds every tap t < kh*kw."""
    return np.uint8 if kernel[0] * kernel[1] <= 256 else np.int32


@njit_kernel(parallel=True)
def _maxpool_2x2_forward(x, y, k):
    # Parallel axis: planes (x, y, k are (P, ., .)); iteration pl writes only
    # y[pl] and k[pl].
    # Window taps a b / c d (t = 0, 1, 2, 3). The row-major scan gives the
    # same winner as a tree: the winner of (a, b), of (c, d), then the bottom
    # one when it is strictly greater or NaN. The tree is branch-free and
    # vectorizes.
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                a = x[pl, 2 * i, 2 * j]
                b = x[pl, 2 * i, 2 * j + 1]
                c = x[pl, 2 * i + 1, 2 * j]
                d = x[pl, 2 * i + 1, 2 * j + 1]
                take_b = (b > a) | (b != b)
                top = b if take_b else a
                take_d = (d > c) | (d != d)
                bottom = d if take_d else c
                take_bottom = (bottom > top) | (bottom != bottom)
                y[pl, i, j] = bottom if take_bottom else top
                k[pl, i, j] = np.uint8(2 + take_d) if take_bottom else np.uint8(take_b)


@njit_kernel(parallel=True)
def _maxpool_2x2_backward(dy, k, W, dx):
    # Parallel axis: planes; iteration pl zeroes dx[pl] (dx is (P, H*W)) and
    # then stores each dy at its argmax. The windows do not overlap, so each
    # pixel receives at most one dy.
    P, OH, OW = dy.shape
    HW = dx.shape[1]
    for pl in numba.prange(P):
        for e in range(HW):
            dx[pl, e] = 0
        for i in range(OH):
            for j in range(OW):
                t = np.int64(k[pl, i, j])
                dx[pl, (2 * i + (t >> 1)) * W + 2 * j + (t & 1)] = dy[pl, i, j]


@njit_kernel(parallel=True)
def _maxpool_forward(x, kh, kw, sh, sw, y, k):
    # Parallel axis: planes; iteration pl writes only y[pl] and k[pl].
    # For each output row the taps run outside and the output columns inside,
    # on the running (max, tap) row held in y and k.
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            h0 = i * sh
            for j in range(OW):
                y[pl, i, j] = x[pl, h0, j * sw]
                k[pl, i, j] = 0
            for p in range(kh):
                for q in range(kw):
                    t = k.dtype.type(p * kw + q)
                    for j in range(OW):
                        v = x[pl, h0 + p, j * sw + q]
                        best = y[pl, i, j]
                        take = (v > best) | (v != v)
                        y[pl, i, j] = v if take else best
                        k[pl, i, j] = t if take else k[pl, i, j]


@njit_kernel(parallel=True)
def _maxpool_backward(dy, k, tap_offset, sh, sw, W, dx):
    # Parallel axis: planes; iteration pl zeroes dx[pl] (dx is (P, H*W)) and
    # adds into it only. Window (i, j) starts at flat i*sh*W + j*sw and its
    # tap t lies tap_offset[t] = p*W + q further; overlapping windows add.
    P, OH, OW = dy.shape
    HW = dx.shape[1]
    for pl in numba.prange(P):
        for e in range(HW):
            dx[pl, e] = 0
        for i in range(OH):
            row = i * sh * W
            for j in range(OW):
                dx[pl, row + j * sw + tap_offset[k[pl, i, j]]] += dy[pl, i, j]


@njit_kernel(parallel=True)
def _avgpool_2x2_forward(x, y):
    # Parallel axis: planes; iteration pl writes only y[pl].
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                s = (np.float64(x[pl, 2 * i, 2 * j]) + np.float64(x[pl, 2 * i, 2 * j + 1])
                     + np.float64(x[pl, 2 * i + 1, 2 * j])
                     + np.float64(x[pl, 2 * i + 1, 2 * j + 1]))
                y[pl, i, j] = s / 4


@njit_kernel(parallel=True)
def _avgpool_2x2_backward(dy, dx):
    # Parallel axis: planes; iteration pl writes only dx[pl], each pixel once:
    # pixel (2i + p, w) of a window gets dy[i, w // 2] / 4, and the last row
    # or column that floor mode leaves out gets 0.
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    zero = dx.dtype.type(0)
    for pl in numba.prange(P):
        for i in range(OH):
            for w in range(2 * OW):
                g = dy[pl, i, w >> 1] / 4
                dx[pl, 2 * i, w] = g
                dx[pl, 2 * i + 1, w] = g
            for w in range(2 * OW, W):
                dx[pl, 2 * i, w] = zero
                dx[pl, 2 * i + 1, w] = zero
        for h in range(2 * OH, H):
            for w in range(W):
                dx[pl, h, w] = zero


@njit_kernel(parallel=True)
def _avgpool_forward(x, kh, kw, sh, sw, y):
    # Parallel axis: planes; iteration pl writes only y[pl]. float64 sums.
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    count = kh * kw
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                s = 0.0
                for p in range(kh):
                    for q in range(kw):
                        s += x[pl, i * sh + p, j * sw + q]
                y[pl, i, j] = s / count


@njit_kernel(parallel=True)
def _avgpool_backward(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl adds only into dx[pl], which the
    # caller zeroed; overlapping windows add.
    P, OH, OW = dy.shape
    count = kh * kw
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                g = dy[pl, i, j] / count
                for p in range(kh):
                    for q in range(kw):
                        dx[pl, i * sh + p, j * sw + q] += g


@implements(pool.maxpool2d_forward)
def maxpool2d_forward(x, kernel, stride):
    """The cache is the argmax's tap t = p*kw + q inside each window, shape
    (N, C, OH, OW), uint8 (int32 for windows of more than 256 taps), not the
    ref's flat index: 1 byte per output instead of 8."""
    return maxpool2d_forward_scheduled(x, kernel, stride, schedule(kernel, stride))


@implements(pool.maxpool2d_backward)
def maxpool2d_backward(dy, x_shape, cache, kernel, stride):
    """Accepts only the taps this backend's maxpool2d_forward returned."""
    return maxpool2d_backward_scheduled(dy, x_shape, cache, kernel, stride,
                                        schedule(kernel, stride))


@implements(pool.avgpool2d_forward)
def avgpool2d_forward(x, kernel, stride):
    return avgpool2d_forward_scheduled(x, kernel, stride, schedule(kernel, stride))


@implements(pool.avgpool2d_backward)
def avgpool2d_backward(dy, x_shape, kernel, stride):
    return avgpool2d_backward_scheduled(dy, x_shape, kernel, stride, schedule(kernel, stride))


def maxpool2d_forward_scheduled(x, kernel, stride, schedule):
    """maxpool2d_forward on the kernels of ``schedule`` ("2x2" or "any"), without
    the contract's argument check. Either schedule's cache goes to either
    schedule's backward."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = pool.output_size(x.shape, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    k = np.empty((N, C, OH, OW), _tap_dtype(kernel))
    x3, y3, k3 = x.reshape(N * C, H, W), y.reshape(N * C, OH, OW), k.reshape(N * C, OH, OW)
    if _is_2x2(schedule, kernel, stride):
        _maxpool_2x2_forward(x3, y3, k3)
    else:
        _maxpool_forward(x3, kernel[0], kernel[1], stride[0], stride[1], y3, k3)
    return y, k


def maxpool2d_backward_scheduled(dy, x_shape, cache, kernel, stride, schedule):
    """maxpool2d_backward on the kernels of ``schedule`` ("2x2" or "any"), without
    the contract's argument check; the cache must be the taps that this
    module's forward returned."""
    dy = np.ascontiguousarray(dy)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    # The kernels index dx with the cache unchecked: only accept the taps
    # this module's forward made for these shapes.
    if not (isinstance(cache, np.ndarray) and cache.shape == dy.shape
            and cache.dtype == _tap_dtype(kernel)):
        raise ValueError(f"maxpool2d_backward: cache must be the taps that the cpu "
                         f"maxpool2d_forward returned, {np.dtype(_tap_dtype(kernel))} of "
                         f"shape {dy.shape}; got {getattr(cache, 'dtype', type(cache).__name__)} "
                         f"of shape {getattr(cache, 'shape', None)}")
    k3 = np.ascontiguousarray(cache).reshape(N * C, OH, OW)
    dx = np.empty(x_shape, dy.dtype)
    dy3, dx2 = dy.reshape(N * C, OH, OW), dx.reshape(N * C, H * W)
    if _is_2x2(schedule, kernel, stride):
        _maxpool_2x2_backward(dy3, k3, W, dx2)
    else:
        kh, kw = kernel
        tap_offset = (np.arange(kh)[:, None] * W + np.arange(kw)[None, :]).reshape(-1)
        _maxpool_backward(dy3, k3, tap_offset, stride[0], stride[1], W, dx2)
    return dx


def avgpool2d_forward_scheduled(x, kernel, stride, schedule):
    """avgpool2d_forward on the kernels of ``schedule`` ("2x2" or "any"), without
    the contract's argument check."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = pool.output_size(x.shape, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    x3, y3 = x.reshape(N * C, H, W), y.reshape(N * C, OH, OW)
    if _is_2x2(schedule, kernel, stride):
        _avgpool_2x2_forward(x3, y3)
    else:
        _avgpool_forward(x3, kernel[0], kernel[1], stride[0], stride[1], y3)
    return y


def avgpool2d_backward_scheduled(dy, x_shape, kernel, stride, schedule):
    """avgpool2d_backward on the kernels of ``schedule`` ("2x2" or "any"), without
    the contract's argument check."""
    dy = np.ascontiguousarray(dy)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dy3 = dy.reshape(N * C, OH, OW)
    if _is_2x2(schedule, kernel, stride):
        dx = np.empty(x_shape, dy.dtype)
        _avgpool_2x2_backward(dy3, dx.reshape(N * C, H, W))
    else:
        dx = np.zeros(x_shape, dy.dtype)
        _avgpool_backward(dy3, kernel[0], kernel[1], stride[0], stride[1],
                          dx.reshape(N * C, H, W))
    return dx
