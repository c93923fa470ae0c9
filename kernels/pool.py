"""Kernel lab: 2-D max and average pooling, forward and backward.

The ops (tinynet.backends.ref.pool, the reference): x (N, C, H, W), a (kh, kw)
window with stride (sh, sw), no padding, floor mode, y (N, C, OH, OW).

    max:  y = max over the window (first maximum in row-major order wins a
          tie; a NaN wins, the last NaN of the window, as torch)
          dx = dy routed to each window's argmax, added where windows share one
    avg:  y = sum over the window / (kh*kw)
          dx[h, w] = sum of dy over the windows holding (h, w), / (kh*kw)

Every variant runs over the (N*C) planes in parallel: a window never leaves
its plane, so each prange iteration reads and writes only its own plane.

Max pool variants, all with the signatures of the ref ops
(``maxpool2d_forward(x, kernel, stride) -> (y, cache)``,
``maxpool2d_backward(dy, x_shape, cache, kernel, stride) -> dx``):

1. naive port: a loop per window, the int64 flat argmax index h*W + w as
   cache (the ref's); backward = np.zeros, then a scatter-add.
2. uint8 argmax offset p*kw + q inside the window: 1 byte per output instead
   of 8; the backward zeroes each plane inside the kernel, then scatter-adds
   through a table of flat tap offsets p*W + q (an integer division t // kw
   per window cost twice the time).
3. recompute: the forward writes y only and the cache is x itself; the
   backward finds each argmax again from x.
4. 2 with the forward loops turned inside out: for each output row, the taps
   (p, q) outside and the output columns j inside, on a running (max, offset)
   row, with the compare as a branch-free select. The innermost loop now runs
   over j, for any kernel and stride.
5. 2x2 stride-2 specialization of 4: the four taps as a branch-free tree
   (winner of the top pair, of the bottom pair, then of the two), which
   vectorizes; the backward zeroes the plane and stores each dy at its
   argmax (the windows do not overlap). Other shapes run 4.
6. 2x2 stride-2 recompute: the tree of 5 without the offsets in the forward,
   and again in the backward. Other shapes run 3.

Average pool variants (``avgpool2d_forward(x, kernel, stride) -> y``,
``avgpool2d_backward(dy, x_shape, kernel, stride) -> dx``):

1. naive port: a float64 sum per window; backward = np.zeros, then a
   scatter-add.
2. gather backward: each dx pixel sums dy over the windows that hold it
   (a row range times a column range), so every dx pixel is written once.
3. taps outside, output columns inside (as max variant 4): the forward on
   a float64 row of sums, the backward's scatter-add on dx zeroed inside the
   kernel.
4. 2x2 stride-2 specialization: four taps unrolled; the backward writes each
   dx pixel once over contiguous columns. Other shapes run 1.

Floor: forward reads x and writes y; backward reads dy and writes dx (the
argmax cache is extra traffic that a variant may or may not pay).

What the runs showed (2 cores, float32, (64, 32, 28, 28)): on the 2x2
stride-2 target, 5 is the fastest max pool by a wide margin; storing the
uint8 tap beats recomputing the argmax from x (6), whose backward must read
x again; the branchy per-window loops (1-3) do not vectorize. For other
windows, 4's forward beats the per-window loop 2 to 2.5 times. For average
pooling the 2x2 specialization (4) is 5 to 8 times faster than the generic
loops, the gather backward (2) is the slowest (an integer division per
pixel) and taps outside (3) gains nothing over 1. tinynet.backends.cpu.pool
runs max 5 (2x2 stride 2) or 4, and average 4 (2x2 stride 2) or 1.

    python -m kernels.pool --check      every variant against the reference
    python -m kernels.pool --bench      timings, % of floor, torch beside them
"""
import numpy as np
import numba

from tinynet.backends import ref
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch
from tinynet.backends.cpu.jit import njit_kernel
# Promoted kernels the lab's variants call as they stand in production.
from tinynet.backends.cpu.pool import _avgpool_2x2_forward, _avgpool_forward, _is_2x2

SHAPE = (64, 32, 28, 28)
OVERLAP = ((3, 3), (2, 2))


def _out_hw(H, W, kernel, stride):
    return (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1


@njit_kernel(parallel=True)
def _max_fwd_flat(x, kh, kw, sh, sw, y, idx):
    # Parallel axis: planes (n, c); iteration pl writes only y[pl], idx[pl].
    P, H, W = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                h0, w0 = i * sh, j * sw
                best = x[pl, h0, w0]
                arg = h0 * W + w0
                for p in range(kh):
                    for q in range(kw):
                        v = x[pl, h0 + p, w0 + q]
                        if v > best or np.isnan(v):
                            best = v
                            arg = (h0 + p) * W + w0 + q
                y[pl, i, j] = best
                idx[pl, i, j] = arg


@njit_kernel(parallel=True)
def _max_bwd_flat(dy, idx, dx):
    # Parallel axis: planes; iteration pl adds only into dx[pl] (flat (P, H*W)).
    P, OH, OW = dy.shape
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                dx[pl, idx[pl, i, j]] += dy[pl, i, j]


def max_fwd_v1(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    _max_fwd_flat(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
                  y.reshape(N * C, OH, OW), idx.reshape(N * C, OH, OW))
    return y, idx


def max_bwd_v1(dy, x_shape, cache, kernel, stride):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dy.dtype)
    OH, OW = dy.shape[2:]
    _max_bwd_flat(dy.reshape(N * C, OH, OW), cache.reshape(N * C, OH, OW), dx)
    return dx.reshape(x_shape)


@njit_kernel(parallel=True)
def _max_fwd_offset(x, kh, kw, sh, sw, y, k):
    # Parallel axis: planes; iteration pl writes only y[pl], k[pl].
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                h0, w0 = i * sh, j * sw
                best = x[pl, h0, w0]
                arg = 0
                for p in range(kh):
                    for q in range(kw):
                        v = x[pl, h0 + p, w0 + q]
                        if v > best or np.isnan(v):
                            best = v
                            arg = p * kw + q
                y[pl, i, j] = best
                k[pl, i, j] = arg


@njit_kernel(parallel=True)
def _max_bwd_offset(dy, k, tap_offset, sh, sw, W, dx):
    # Parallel axis: planes; iteration pl zeroes and adds into dx[pl] only.
    # dx is (P, H*W); window (i, j) starts at flat i*sh*W + j*sw and its tap
    # t sits tap_offset[t] = p*W + q further.
    P, OH, OW = dy.shape
    HW = dx.shape[1]
    for pl in numba.prange(P):
        for e in range(HW):
            dx[pl, e] = 0
        for i in range(OH):
            row = i * sh * W
            for j in range(OW):
                dx[pl, row + j * sw + tap_offset[k[pl, i, j]]] += dy[pl, i, j]


def max_fwd_v2(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    k = np.empty((N, C, OH, OW), np.uint8)
    _max_fwd_offset(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
                    y.reshape(N * C, OH, OW), k.reshape(N * C, OH, OW))
    return y, k


def _tap_offsets(kernel, W):
    """Flat offset p*W + q of each window tap t = p*kw + q, as int64 (kh*kw,)."""
    kh, kw = kernel
    return (np.arange(kh)[:, None] * W + np.arange(kw)[None, :]).reshape(-1)


def max_bwd_v2(dy, x_shape, cache, kernel, stride):
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _max_bwd_offset(dy.reshape(N * C, OH, OW), cache.reshape(N * C, OH, OW),
                    _tap_offsets(kernel, W), stride[0], stride[1], W, dx.reshape(N * C, H * W))
    return dx


@njit_kernel(parallel=True)
def _max_fwd_only(x, kh, kw, sh, sw, y):
    # Parallel axis: planes; iteration pl writes only y[pl].
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                h0, w0 = i * sh, j * sw
                best = x[pl, h0, w0]
                for p in range(kh):
                    for q in range(kw):
                        v = x[pl, h0 + p, w0 + q]
                        if v > best or np.isnan(v):
                            best = v
                y[pl, i, j] = best


@njit_kernel(parallel=True)
def _max_bwd_recompute(x, dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl zeroes and adds into dx[pl] only.
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    for pl in numba.prange(P):
        for h in range(H):
            for w in range(W):
                dx[pl, h, w] = 0
        for i in range(OH):
            for j in range(OW):
                h0, w0 = i * sh, j * sw
                best = x[pl, h0, w0]
                bh, bw = h0, w0
                for p in range(kh):
                    for q in range(kw):
                        v = x[pl, h0 + p, w0 + q]
                        if v > best or np.isnan(v):
                            best = v
                            bh, bw = h0 + p, w0 + q
                dx[pl, bh, bw] += dy[pl, i, j]


def max_fwd_v3(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    _max_fwd_only(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
                  y.reshape(N * C, OH, OW))
    return y, x


def max_bwd_v3(dy, x_shape, cache, kernel, stride):
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _max_bwd_recompute(cache.reshape(N * C, H, W), dy.reshape(N * C, OH, OW), kernel[0],
                       kernel[1], stride[0], stride[1], dx.reshape(N * C, H, W))
    return dx


@njit_kernel(parallel=True)
def _max_fwd_taps(x, kh, kw, sh, sw, y, k):
    # Parallel axis: planes; iteration pl writes only y[pl], k[pl].
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            h0 = i * sh
            for j in range(OW):
                y[pl, i, j] = x[pl, h0, j * sw]
                k[pl, i, j] = 0
            # Taps in row-major order; a later tap wins only when strictly
            # greater, or when it is NaN (torch's rule).
            for p in range(kh):
                for q in range(kw):
                    t = np.uint8(p * kw + q)
                    for j in range(OW):
                        v = x[pl, h0 + p, j * sw + q]
                        best = y[pl, i, j]
                        take = (v > best) | (v != v)
                        y[pl, i, j] = v if take else best
                        k[pl, i, j] = t if take else k[pl, i, j]


def max_fwd_v4(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    k = np.empty((N, C, OH, OW), np.uint8)
    _max_fwd_taps(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
                  y.reshape(N * C, OH, OW), k.reshape(N * C, OH, OW))
    return y, k


@njit_kernel(parallel=True)
def _max_fwd_2x2(x, y, k):
    # Parallel axis: planes; iteration pl writes only y[pl], k[pl].
    # Window taps a b / c d. The sequential rule (a later tap wins when
    # strictly greater or NaN) gives the same winner as a tree: the winner of
    # (a, b), the winner of (c, d), then the bottom one wins when strictly
    # greater or NaN. The tree has shorter dependency chains and vectorizes.
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
def _max_bwd_2x2(dy, k, W, dx):
    # Parallel axis: planes; iteration pl zeroes dx[pl] (flat (P, H*W)), then
    # stores each dy at its argmax. The windows do not overlap: a plain store.
    P, OH, OW = dy.shape
    HW = dx.shape[1]
    for pl in numba.prange(P):
        for e in range(HW):
            dx[pl, e] = 0
        for i in range(OH):
            for j in range(OW):
                t = np.int64(k[pl, i, j])
                dx[pl, (2 * i + (t >> 1)) * W + 2 * j + (t & 1)] = dy[pl, i, j]


def max_fwd_v5(x, kernel, stride):
    if not _is_2x2(kernel, stride):
        return max_fwd_v4(x, kernel, stride)
    N, C, H, W = x.shape
    OH, OW = H // 2, W // 2
    y = np.empty((N, C, OH, OW), x.dtype)
    k = np.empty((N, C, OH, OW), np.uint8)
    _max_fwd_2x2(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW), k.reshape(N * C, OH, OW))
    return y, k


def max_bwd_v5(dy, x_shape, cache, kernel, stride):
    if not _is_2x2(kernel, stride):
        return max_bwd_v2(dy, x_shape, cache, kernel, stride)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _max_bwd_2x2(dy.reshape(N * C, OH, OW), cache.reshape(N * C, OH, OW), W,
                 dx.reshape(N * C, H * W))
    return dx


@njit_kernel(parallel=True)
def _max_fwd_only_2x2(x, y):
    # Parallel axis: planes; iteration pl writes only y[pl]. The tree of 5.
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                a = x[pl, 2 * i, 2 * j]
                b = x[pl, 2 * i, 2 * j + 1]
                c = x[pl, 2 * i + 1, 2 * j]
                d = x[pl, 2 * i + 1, 2 * j + 1]
                top = b if (b > a) | (b != b) else a
                bottom = d if (d > c) | (d != d) else c
                y[pl, i, j] = bottom if (bottom > top) | (bottom != bottom) else top


@njit_kernel(parallel=True)
def _max_bwd_recompute_2x2(x, dy, dx):
    # Parallel axis: planes; iteration pl zeroes dx[pl] (flat (P, H*W)), then
    # stores each dy at the argmax found again by the tree of 5.
    P, OH, OW = dy.shape
    W = x.shape[2]
    HW = dx.shape[1]
    for pl in numba.prange(P):
        for e in range(HW):
            dx[pl, e] = 0
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
                p = 1 if take_bottom else 0
                q = (1 if take_d else 0) if take_bottom else (1 if take_b else 0)
                dx[pl, (2 * i + p) * W + 2 * j + q] = dy[pl, i, j]


def max_fwd_v6(x, kernel, stride):
    if not _is_2x2(kernel, stride):
        return max_fwd_v3(x, kernel, stride)
    N, C, H, W = x.shape
    OH, OW = H // 2, W // 2
    y = np.empty((N, C, OH, OW), x.dtype)
    _max_fwd_only_2x2(x.reshape(N * C, H, W), y.reshape(N * C, OH, OW))
    return y, x


def max_bwd_v6(dy, x_shape, cache, kernel, stride):
    if not _is_2x2(kernel, stride):
        return max_bwd_v3(dy, x_shape, cache, kernel, stride)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _max_bwd_recompute_2x2(cache.reshape(N * C, H, W), dy.reshape(N * C, OH, OW),
                           dx.reshape(N * C, H * W))
    return dx


MAX_VARIANTS = {
    "1 naive, int64 index": (max_fwd_v1, max_bwd_v1),
    "2 uint8 offset": (max_fwd_v2, max_bwd_v2),
    "3 recompute from x": (max_fwd_v3, max_bwd_v3),
    "4 uint8, taps outside": (max_fwd_v4, max_bwd_v2),
    "5 uint8, 2x2 special": (max_fwd_v5, max_bwd_v5),
    "6 recompute, 2x2 special": (max_fwd_v6, max_bwd_v6),
}


@njit_kernel(parallel=True)
def _avg_bwd_scatter(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl adds only into dx[pl] (zeroed by the caller).
    P, OH, OW = dy.shape
    count = kh * kw
    for pl in numba.prange(P):
        for i in range(OH):
            for j in range(OW):
                g = dy[pl, i, j] / count
                for p in range(kh):
                    for q in range(kw):
                        dx[pl, i * sh + p, j * sw + q] += g


def avg_fwd_v1(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    _avgpool_forward(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
             y.reshape(N * C, OH, OW))
    return y


def avg_bwd_v1(dy, x_shape, kernel, stride):
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.zeros(x_shape, dy.dtype)
    _avg_bwd_scatter(dy.reshape(N * C, OH, OW), kernel[0], kernel[1], stride[0], stride[1],
                     dx.reshape(N * C, H, W))
    return dx


@njit_kernel(parallel=True)
def _avg_bwd_gather(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl writes only dx[pl], each pixel once.
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    count = kh * kw
    for pl in numba.prange(P):
        for h in range(H):
            # windows i with i*sh <= h <= i*sh + kh - 1, 0 <= i < OH
            i0 = max(0, (h - kh + sh) // sh)
            i1 = min(OH - 1, h // sh)
            for w in range(W):
                j0 = max(0, (w - kw + sw) // sw)
                j1 = min(OW - 1, w // sw)
                s = 0.0
                for i in range(i0, i1 + 1):
                    for j in range(j0, j1 + 1):
                        s += dy[pl, i, j]
                dx[pl, h, w] = s / count


def avg_bwd_v2(dy, x_shape, kernel, stride):
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _avg_bwd_gather(dy.reshape(N * C, OH, OW), kernel[0], kernel[1], stride[0], stride[1],
                    dx.reshape(N * C, H, W))
    return dx


@njit_kernel(parallel=True)
def _avg_fwd_taps(x, kh, kw, sh, sw, y):
    # Parallel axis: planes; iteration pl writes only y[pl] and its own row of sums.
    P = x.shape[0]
    OH, OW = y.shape[1], y.shape[2]
    count = kh * kw
    for pl in numba.prange(P):
        s = np.empty(OW, np.float64)
        for i in range(OH):
            h0 = i * sh
            for j in range(OW):
                s[j] = 0.0
            for p in range(kh):
                for q in range(kw):
                    for j in range(OW):
                        s[j] += x[pl, h0 + p, j * sw + q]
            for j in range(OW):
                y[pl, i, j] = s[j] / count


@njit_kernel(parallel=True)
def _avg_bwd_taps(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl zeroes and adds into dx[pl] only.
    # Taps outside, output columns inside (as the forward).
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    count = kh * kw
    for pl in numba.prange(P):
        for h in range(H):
            for w in range(W):
                dx[pl, h, w] = 0
        for i in range(OH):
            for p in range(kh):
                for q in range(kw):
                    for j in range(OW):
                        dx[pl, i * sh + p, j * sw + q] += dy[pl, i, j] / count


def avg_fwd_v3(x, kernel, stride):
    N, C, H, W = x.shape
    OH, OW = _out_hw(H, W, kernel, stride)
    y = np.empty((N, C, OH, OW), x.dtype)
    _avg_fwd_taps(x.reshape(N * C, H, W), kernel[0], kernel[1], stride[0], stride[1],
                  y.reshape(N * C, OH, OW))
    return y


def avg_bwd_v3(dy, x_shape, kernel, stride):
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _avg_bwd_taps(dy.reshape(N * C, OH, OW), kernel[0], kernel[1], stride[0], stride[1],
                  dx.reshape(N * C, H, W))
    return dx


@njit_kernel(parallel=True)
def _avg_bwd_2x2(dy, dx):
    # Parallel axis: planes; iteration pl writes only dx[pl], each pixel once.
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


def avg_fwd_v4(x, kernel, stride):
    if not _is_2x2(kernel, stride):
        return avg_fwd_v1(x, kernel, stride)
    N, C, H, W = x.shape
    y = np.empty((N, C, H // 2, W // 2), x.dtype)
    _avgpool_2x2_forward(x.reshape(N * C, H, W), y.reshape(N * C, H // 2, W // 2))
    return y


def avg_bwd_v4(dy, x_shape, kernel, stride):
    if not _is_2x2(kernel, stride):
        return avg_bwd_v1(dy, x_shape, kernel, stride)
    N, C, H, W = x_shape
    OH, OW = dy.shape[2:]
    dx = np.empty(x_shape, dy.dtype)
    _avg_bwd_2x2(dy.reshape(N * C, OH, OW), dx.reshape(N * C, H, W))
    return dx


AVG_VARIANTS = {
    "1 naive, scatter bwd": (avg_fwd_v1, avg_bwd_v1),
    "2 gather bwd": (avg_fwd_v1, avg_bwd_v2),
    "3 taps outside": (avg_fwd_v3, avg_bwd_v3),
    "4 2x2 special": (avg_fwd_v4, avg_bwd_v4),
}

CHECK_CASES = [((3, 5, 7, 9), (2, 2), (2, 2)), ((2, 3, 8, 6), (2, 2), (2, 2)),
               ((2, 3, 7, 7), (3, 3), (1, 1)), ((3, 2, 9, 8), (3, 2), (2, 1)),
               ((2, 2, 5, 7), (2, 3), (1, 2))]


def _check_one(name, got, want, dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
    assert got.dtype == dtype, name


def check():
    rng = np.random.default_rng(0)
    for shape, kernel, stride in CHECK_CASES:
        for dtype in (np.float32, np.float64):
            # Ties (rounded values) and NaNs exercise the argmax rules.
            x = np.round(rng.standard_normal(shape), 1).astype(dtype)
            x.flat[rng.choice(x.size, 3, replace=False)] = np.nan
            x64 = x.astype(np.float64)
            y_ref, idx = ref.maxpool2d_forward(x64, kernel, stride)
            dy = rng.standard_normal(y_ref.shape).astype(dtype)
            dx_ref = ref.maxpool2d_backward(dy.astype(np.float64), shape, idx, kernel, stride)
            for name, (fwd, bwd) in MAX_VARIANTS.items():
                y, cache = fwd(x, kernel, stride)
                _check_one(f"max {name} y {shape}", y, y_ref, dtype)
                _check_one(f"max {name} dx {shape}", bwd(dy, shape, cache, kernel, stride),
                           dx_ref, dtype)
            x = rng.standard_normal(shape).astype(dtype)
            y_ref = ref.avgpool2d_forward(x.astype(np.float64), kernel, stride)
            dx_ref = ref.avgpool2d_backward(dy.astype(np.float64), shape, kernel, stride)
            for name, (fwd, bwd) in AVG_VARIANTS.items():
                _check_one(f"avg {name} y {shape}", fwd(x, kernel, stride), y_ref, dtype)
                _check_one(f"avg {name} dx {shape}", bwd(dy, shape, kernel, stride), dx_ref,
                           dtype)


def _torch_times(torch, module, x, dy):
    """torch's forward (with indices when it keeps them), backward alone, and
    forward + backward through autograd, as a layer would run."""
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def fwd():
        return module(xt)

    yt = fwd()

    def bwd():
        torch.autograd.grad(yt, xt, dyt, retain_graph=True)

    def both():
        xt.grad = None
        module(xt).backward(dyt)

    return median_time(fwd), median_time(bwd), median_time(both)


def _max_calls(fwd, bwd, x, dy, kernel, stride):
    """Forward, backward, and forward then backward of a max-pool variant."""
    cache = fwd(x, kernel, stride)[1]

    def forward():
        fwd(x, kernel, stride)

    def backward():
        bwd(dy, x.shape, cache, kernel, stride)

    def both():
        bwd(dy, x.shape, fwd(x, kernel, stride)[1], kernel, stride)

    return forward, backward, both


def _avg_calls(fwd, bwd, x, dy, kernel, stride):
    """Forward, backward, and forward then backward of an average-pool variant."""
    def forward():
        fwd(x, kernel, stride)

    def backward():
        bwd(dy, x.shape, kernel, stride)

    def both():
        fwd(x, kernel, stride)
        bwd(dy, x.shape, kernel, stride)

    return forward, backward, both


def _bench_family(rows, label, variants, torch_module, x, kernel, stride, calls):
    torch = try_torch()
    y_shape = (x.shape[0], x.shape[1]) + _out_hw(x.shape[2], x.shape[3], kernel, stride)
    dy = np.random.default_rng(1).standard_normal(y_shape).astype(x.dtype)
    fwd_bytes = tensor_bytes(x, dy)
    bwd_bytes = tensor_bytes(dy, x)
    t_fwd = t_bwd = t_both = None
    if torch is not None:
        t_fwd, t_bwd, t_both = _torch_times(torch, torch_module(torch), x, dy)
    for name, (fwd, bwd) in variants.items():
        forward, backward, both = calls(fwd, bwd, x, dy, kernel, stride)
        rows.append(Row(f"{label} fwd", name, median_time(forward), fwd_bytes,
                        torch_seconds=t_fwd))
        rows.append(Row(f"{label} bwd", name, median_time(backward), bwd_bytes,
                        torch_seconds=t_bwd))
        rows.append(Row(f"{label} fwd+bwd", name, median_time(both), fwd_bytes + bwd_bytes,
                        torch_seconds=t_both))


def _bench_layers(rows, x):
    """The targets: the public layers tn.MaxPool2D(2) / tn.AvgPool2D(2), forward
    then backward, against torch's nn modules through autograd."""
    import tinynet as tn
    torch = try_torch()
    for label, layer, torch_module in (("layer MaxPool2D(2)", tn.MaxPool2D(2), "MaxPool2d"),
                                       ("layer AvgPool2D(2)", tn.AvgPool2D(2), "AvgPool2d")):
        dy = np.random.default_rng(1).standard_normal(
            (x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2)).astype(x.dtype)

        def step():
            layer.forward(x)
            layer.backward(dy)

        t_torch = None
        if torch is not None:
            t_torch = _torch_times(torch, getattr(torch.nn, torch_module)(2), x, dy)[2]
        rows.append(Row(label + " fwd+bwd", f"tinynet {tn.backend_name()}", median_time(step),
                        tensor_bytes(x, dy, dy, x), torch_seconds=t_torch))


def bench():
    rows = []
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    _bench_family(rows, "maxpool 2x2/2", MAX_VARIANTS,
                  lambda torch: torch.nn.MaxPool2d(2), x, (2, 2), (2, 2), _max_calls)
    _bench_family(rows, "maxpool 3x3/2", MAX_VARIANTS,
                  lambda torch: torch.nn.MaxPool2d(*OVERLAP), x, *OVERLAP, _max_calls)
    _bench_family(rows, "avgpool 2x2/2", AVG_VARIANTS,
                  lambda torch: torch.nn.AvgPool2d(2), x, (2, 2), (2, 2), _avg_calls)
    _bench_family(rows, "avgpool 3x3/2", AVG_VARIANTS,
                  lambda torch: torch.nn.AvgPool2d(*OVERLAP), x, *OVERLAP, _avg_calls)
    _bench_layers(rows, x)
    return rows


if __name__ == "__main__":
    lab_main("pool", check, bench)
