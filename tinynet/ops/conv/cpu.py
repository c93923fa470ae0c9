"""Conv2D on the CPU: Numba im2col / col2im kernels with the GEMMs run by BLAS,
and direct kernels for one input channel per group (depthwise).

The ops, their math and their argument checks are the contract's
(tinynet/ops/conv/__init__.py), which derives the im2col form. Here K =
C*KH*KW taps, P = OH*OW output pixels and Wm = W as (F, K).

BLAS does the matrix multiplies, called from inside the kernels: numba's
``np.dot`` in nopython code reaches the BLAS behind scipy, run on one thread
(tinynet.threads.single_threaded_kernel_blas), so each prange iteration
runs its own GEMMs on its own core and numba's and BLAS's thread pools
never compete for the cores (nor with a spinning OpenMP pool of torch's).
Without groups, two schedules, chosen by K (``schedule``, ``SCHEDULES``),
both promoted from the lab (kernels/conv.py, which races them against the
retired ones and explains the choice):

- "samples", K <= SMALL_K (few input channels, e.g. the first layer on a
  grey image): a prange over samples. Sample n's columns get an extra row
  of ones, (K + 1, P), and the bias rides in the GEMM: y[n] = [Wm | b]
  [cols[n]; 1] lands directly in NCHW, and [dW | db] = sum_n dy[n]
  [cols[n]; 1]^T gives the bias gradient as the last column (each
  sample's part summed in float64 in sample order, so that the sum does
  not depend on the thread count). The columns of the batch, (N, K + 1, P),
  are the cache.
- "chunks", K > SMALL_K: a prange over chunks of nb samples (``chunk_samples``)
  whose columns, (K, nb*P) of about FUSED_CHUNK_BYTES (forward) or
  FUSED_BACKWARD_CHUNK_BYTES (backward), stay in the core's
  L2 cache; the last chunk takes the remainder of the batch. Per chunk, in
  one thread: the columns, y^T = Wm cols (F, nb*P) and its copy to NCHW
  with the bias added; in the backward dy copied to dy^T (F, nb*P) with its
  per-(n, f) sums for db, the columns rebuilt from x, dW^T part = cols dy^T
  (the chunks' parts summed in float64 in chunk order), dcols = Wm^T dy^T
  and col2im. Nothing is cached.

The chunked schedule's forward of a 3x3 kernel with stride 1 and at least
24 input and output channels (``winograd_fits``) runs Winograd's F(2x2, 3x3) instead (``forward_winograd``,
Lavin and Gray 2016) when x and W are finite: per chunk of samples the 4x4
input tiles transformed, V = B^T d B (16, C, tiles), 16 single-threaded GEMMs
M[xi] = U[xi] V[xi] with U = G g G^T, and each 2x2 output block A^T m A
written to NCHW with the bias. The GEMMs do 2.25 times fewer multiply-adds
than the im2col form's; the transforms are scalar loops. Its backward is
the chunked schedule's. Forward alone, 2 threads, Intel Xeon (``python -m
kernels.conv --winograd-chunks``, which races it against the im2col
forward): the reference CNN's 32 -> 64 layer on 14x14 at batch 64 1.77 ms
against 2.14, the speedrun recipe's 24 -> 32 layer on 12x12 at batch 256
2.04 ms against 2.53.

A grouped convolution (groups G > 1) runs one of two more schedules
(``GROUPED_SCHEDULES``; kernels/conv.py's depthwise table races them):

- "depthwise", one input channel per group (C == G; F = C times a channel
  multiplier M): direct kernels over (sample, channel) planes, no im2col.
  Each plane is copied once into a zero-padded plane of width Wp = W + 2*pw,
  on which every tap (p, q) is one contiguous pass: with stride 1 y is
  computed on the padded width (the columns past OW dropped), all nine taps
  of a 3x3 kernel in one pass; the backward lays dy out on that width (with
  its strides, after a margin of zeros) so that dW is one dot product per
  tap, and dx a pass per tap, or for a 3x3 kernel with stride 1 the
  correlation of the margined dy with the flipped kernel, in one pass.
  Sums within a plane run in the input dtype (KH*KW terms for y, M*KH*KW
  for dx, a plane for dW, as the per-sample GEMMs do), the parts of dW and
  db over the batch in float64. A plane of x or a filter holding an inf or
  a NaN takes the taps one by one at the valid positions only, so that it
  reaches what it reaches in the reference. Nothing is cached.
- "groups", more input channels per group: a prange over (sample, group),
  each with its group's columns (C/G*KH*KW, OH*OW) and single-threaded BLAS
  GEMMs; the parts of dW summed over the batch in float64. Nothing is cached.

im2col and col2im of a stride-1 convolution with OW == W (the "same" width,
such as a 3x3 kernel with padding 1) copy whole taps at once: tap (p, q) of
the flat image is the flat image shifted by (p - ph)*W + (q - pw), except the
rows that leave the image and the columns that wrap around a row edge, which
are zero. Other strides and paddings copy row by row. The chunked schedule
computes a stride-1 convolution narrower than its input (an odd KW, 2*pw <
KW - 1, e.g. a 3x3 kernel without padding) on the input's width, with the
padding widened to (KW - 1)/2 (``widened``), and copies out the columns it
was asked for: rows of 10 floats (the speedrun recipe's 24 -> 32 layer on
12x12) copied one by one cost more than the GEMMs. It does so only when x
and W hold no inf or NaN (one vectorized pass over their bits): the dropped
columns multiply such a value by their zero gradient.

The GEMMs accumulate in the input dtype, as BLAS does: dW, and in the
per-sample schedule db, are float32 sums within a sample (or a chunk) for
float32 input. Sums over samples and chunks, the chunked schedule's db and
col2im's scatter-add are float64. Scratch arrays (a chunk's columns, dy^T,
dcols) are kept per calling Python thread, one row per numba thread
(numba.get_thread_id()), and reused across calls: a fresh multi-MB array
pays a page fault per 4 KB page on its first write, which doubled the time
of the chunked forward.
"""
import threading

import numpy as np
import numba

from .. import conv
from ..contract import implements
from . import conv2d_output_size
from ...threads import single_threaded_kernel_blas
from ...backends.cpu_blas import NOTRANS, gemm
from ...backends.cpu_jit import njit_kernel

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward"]

SMALL_K = 48
"""Largest C*KH*KW that takes the per-sample schedule (measured in kernels/conv.py)."""

FUSED_CHUNK_BYTES = 128 << 10
"""Target size of one chunk's columns in the chunked schedule's forward (per
thread), read at each call of forward_chunks unless it is given a
``chunk_bytes``: at most one sample per chunk for both layers below.
FUSED_BACKWARD_CHUNK_BYTES is the backward's. Raced forward + backward (the
forward's / the backward's chunk size; ``python -m kernels.conv --chunks``),
2 threads, Intel Xeon: the speedrun
recipe's 24 -> 32 layer on 12x12 at batch 256 (104 KB of widened columns
per sample) 9.68 ms at 256 / 256 KB, 8.89 at 128 / 256, 8.58 at 128 / 512;
the reference CNN's 32 -> 64 layer on 14x14 at batch 64 (226 KB per sample)
6.64, 6.61 and 6.44 ms. Earlier, for the 32 -> 64 layer alone, 256 KB, 1 MB
and 2 MB chunks for both passes took 8.35, 8.91 and 10.29 ms."""

FUSED_BACKWARD_CHUNK_BYTES = 512 << 10
"""Target size of one chunk's columns in the chunked schedule's backward (per
thread), read at each call of backward_chunks unless it is given a
``chunk_bytes``; measured with FUSED_CHUNK_BYTES. Its GEMM dW^T = cols dy^T
sums over the chunk's pixels, and longer sums ran faster."""


@njit_kernel()
def _valid_columns(off, sw, W, OW):
    """[lo, hi): the output columns j whose input column j*sw + off lies in [0, W)."""
    lo = 0
    if off < 0:
        lo = (-off + sw - 1) // sw
    hi = min(OW, (W - 1 - off) // sw + 1)
    return lo, max(lo, hi)


@njit_kernel()
def _shifted_range(p, q, ph, pw, H, W, OH):
    """For a stride-1 tap (p, q) with OW == W: the flat shift d, and the range
    [lo, hi) of flat output pixels m whose input pixel m + d is in the image
    (up to the columns that wrap around a row edge)."""
    d = (p - ph) * W + (q - pw)
    lo = max(max(0, ph - p) * W, -d)
    hi = min(min(OH, H + ph - p) * W, H * W - d)
    return d, lo, max(lo, hi)


@njit_kernel()
def im2col_channel(xs, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, out, r0, m0):
    """The taps of one channel of one sample: tap (p, q) of the flat image xs
    (H*W,) goes to row r0 + (c*kh + p)*kw + q of out, columns m0 .. m0 + OH*OW."""
    P = OH * OW
    shift = sh == 1 and sw == 1 and OW == W
    for p in range(kh):
        for q in range(kw):
            dst = out[r0 + (c * kh + p) * kw + q, m0:m0 + P]
            if shift:
                # The whole tap is the flat image shifted by d.
                d, lo, hi = _shifted_range(p, q, ph, pw, H, W, OH)
                for m in range(lo):
                    dst[m] = 0
                seg = dst[lo:hi]
                src = xs[lo + d:hi + d]
                for m in range(hi - lo):
                    seg[m] = src[m]
                for m in range(hi, P):
                    dst[m] = 0
                # Columns that wrapped around a row edge are padding.
                for j in range(min(W, pw - q)):
                    for i in range(OH):
                        dst[i * W + j] = 0
                for j in range(max(0, W - (q - pw)), W):
                    for i in range(OH):
                        dst[i * W + j] = 0
            else:
                _gather_rows(xs, H, W, p, q, sh, sw, ph, pw, OH, OW, dst)


@njit_kernel(parallel=True)
def im2col_into(x, n0, nb, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, out):
    """The columns of samples n0 .. n0 + nb - 1 of x (N, C, H, W), C-contiguous,
    written into the 2-D array out: tap r = (c*kh + p)*kw + q of sample n0 + k,
    output pixel m = i*OW + j, goes to out[k*rs + r, k*cs + m]. rs = R, cs = 0
    lays the samples out one below the other, (nb*R, OH*OW) for any R >= C*kh*kw
    (the im2col op's (N, K, P) with R = K); rs = 0, cs = OH*OW side by side,
    (C*kh*kw, nb*OH*OW). The im2col op runs it; kernels/conv.py builds its
    whole-batch and chunked schedules on it."""
    # Parallel axis: (sample, channel); iteration (k, c) writes only the rows
    # of channel c's taps in sample k's block, so no two iterations overlap.
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for t in numba.prange(nb * C):
        k = t // C
        c = t - k * C
        im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W, OH, OW,
                        out, k * rs, k * cs)


@njit_kernel()
def _gather_rows(xs, H, W, p, q, sh, sw, ph, pw, OH, OW, dst):
    """One tap, row by row: dst[i*OW + j] = xs[(i*sh + p - ph)*W + j*sw + q - pw],
    zero outside the image. Indices are unsigned, so Numba emits no
    negative-index wraparound and the copies stay plain loads and stores."""
    lo, hi = _valid_columns(q - pw, sw, W, OW)
    for i in range(OH):
        h = i * sh + p - ph
        row = np.uint64(i * OW)
        if h < 0 or h >= H:
            for j in range(OW):
                dst[row + np.uint64(j)] = 0
            continue
        for j in range(lo):
            dst[row + np.uint64(j)] = 0
        start = row + np.uint64(lo)
        src = np.uint64(h * W + lo * sw + q - pw)
        for j in range(hi - lo):
            dst[start + np.uint64(j)] = xs[src + np.uint64(j * sw)]
        for j in range(hi, OW):
            dst[row + np.uint64(j)] = 0


@njit_kernel()
def _scatter_rows(src, H, W, p, q, sh, sw, ph, pw, OH, OW, acc):
    """Adjoint of _gather_rows: acc[(i*sh + p - ph)*W + j*sw + q - pw] += src[i*OW + j]
    for every (i, j) that lands inside the image."""
    lo, hi = _valid_columns(q - pw, sw, W, OW)
    for i in range(OH):
        h = i * sh + p - ph
        if h < 0 or h >= H:
            continue
        start = np.uint64(i * OW + lo)
        dst = np.uint64(h * W + lo * sw + q - pw)
        for j in range(hi - lo):
            acc[dst + np.uint64(j * sw)] += src[start + np.uint64(j)]


@njit_kernel()
def col2im_channel(dcols, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, r0, m0, out, acc):
    """Adjoint of im2col_channel: scatter-adds the taps of channel c (rows
    r0 + (c*kh + p)*kw + q, columns m0 .. m0 + OH*OW of dcols) into the flat
    image out (H*W,), summing in the float64 scratch acc (at least H*W,
    contents undefined; the caller allocates it once per parallel iteration:
    with an allocation per channel the speedrun's 24 -> 32 layer took 10.63
    instead of 9.88 ms forward + backward at batch 256, ``python -m
    kernels.system.compare``). The stride-1
    "same width" path first zeroes, in dcols itself, the entries whose tap
    wrapped around a row edge: dcols is scratch and is overwritten there."""
    P = OH * OW
    shift = sh == 1 and sw == 1 and OW == W
    for m in range(H * W):
        acc[m] = 0.0
    for p in range(kh):
        for q in range(kw):
            src = dcols[r0 + (c * kh + p) * kw + q, m0:m0 + P]
            if shift:
                for j in range(min(W, pw - q)):
                    for i in range(OH):
                        src[i * W + j] = 0
                for j in range(max(0, W - (q - pw)), W):
                    for i in range(OH):
                        src[i * W + j] = 0
                d, lo, hi = _shifted_range(p, q, ph, pw, H, W, OH)
                seg = src[lo:hi]
                dst = acc[lo + d:hi + d]
                for m in range(hi - lo):
                    dst[m] += seg[m]
            else:
                _scatter_rows(src, H, W, p, q, sh, sw, ph, pw, OH, OW, acc)
    for m in range(H * W):
        out[m] = acc[m]


@njit_kernel(parallel=True)
def col2im_into(dcols, n0, nb, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, dx):
    """The adjoint of im2col_into: scatter-adds the columns of samples n0 ..
    n0 + nb - 1 of the 2-D array dcols, laid out as im2col_into writes them
    (rs, cs), into dx[n0 .. n0 + nb - 1] (N, C, H, W), summing in float64.
    dx's samples are overwritten, not added to. dcols is scratch: a stride-1
    tap with OW == W zeroes its entries that wrapped around a row edge. The
    col2im op runs it; kernels/conv.py builds its schedules on it."""
    # Parallel axis: (sample, channel); iteration (k, c) reads only channel c's
    # rows of sample k's block and writes only dx[n0 + k, c].
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for t in numba.prange(nb * C):
        k = t // C
        c = t - k * C
        acc = np.empty(H * W, np.float64)
        col2im_channel(dcols, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, k * rs, k * cs,
                        dx[n0 + k, c].reshape(H * W), acc)


@njit_kernel(parallel=True)
def _forward_fused(x, Wm, b, kh, kw, sh, sw, ph, pw, OH, OW, off, OWo, nb, cols_ws, yT_ws, y):
    # Per chunk of nb samples, in one thread: the chunk's columns (K, m*P),
    # y^T = Wm cols by a single-threaded BLAS GEMM (np.dot), then
    # y[n] = y^T's block of n + b in NCHW: columns off .. off + OWo of each
    # of the OW computed (OWo == OW unless the convolution was widened,
    # ``widened``).
    # Parallel axis: chunks; chunk ch writes only y[ch*nb:(ch + 1)*nb]. Its
    # scratch is row t = numba.get_thread_id() of cols_ws and yT_ws: a thread
    # runs one chunk at a time, so no two running chunks share a row.
    N, C, H, W = x.shape
    F, K = Wm.shape
    P = OH * OW
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        cols = cols_ws[t, :K * m * P].reshape((K, m * P))
        yT = yT_ws[t, :F * m * P].reshape((F, m * P))
        for k in range(m):
            for c in range(C):
                im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W,
                                OH, OW, cols, 0, k * P)
        np.dot(Wm, cols, yT)
        for k in range(m):
            for f in range(F):
                bf = b[f]
                dst = y[n0 + k, f]
                src = yT[f, k * P:(k + 1) * P]
                if OWo == OW:
                    for i in range(P):
                        dst[i] = src[i] + bf
                else:
                    for i in range(OH):
                        for j in range(OWo):
                            dst[i * OWo + j] = src[i * OW + off + j] + bf


@njit_kernel(parallel=True)
def _backward_fused(dy, x, WmT, kh, kw, sh, sw, ph, pw, OH, OW, off, OWo, nb, need_dx, cols_ws,
                    dyT_ws, dcols_ws, dWT_parts, dbias, dx):
    # Per chunk of nb samples, in one thread: dy^T (F, m*P) with the
    # per-(n, f) sums of dy for db (dy's OWo columns at off .. off + OWo of
    # the OW computed, zeros around them when the convolution was widened);
    # the chunk's columns rebuilt from x;
    # the chunk's dW^T part = cols dy^T (single-threaded BLAS) into
    # dWT_parts[ch]; with need_dx, dcols = Wm^T dy^T and col2im into dx[n]
    # for the chunk's samples. The parts are summed afterwards in chunk
    # order (_sum_parts), so dW does not depend on the thread count.
    # Parallel axis: chunks; chunk ch writes only dbias[n] and dx[n] of its
    # own samples and dWT_parts[ch], and its scratch is row t =
    # numba.get_thread_id(): a thread runs one chunk at a time.
    N, C, H, W = x.shape
    F = dy.shape[1]
    K = WmT.shape[0]
    P = OH * OW
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        cols = cols_ws[t, :K * m * P].reshape((K, m * P))
        dyT = dyT_ws[t, :F * m * P].reshape((F, m * P))
        for k in range(m):
            for f in range(F):
                src = dy[n0 + k, f]
                dst = dyT[f, k * P:(k + 1) * P]
                s = 0.0
                if OWo == OW:
                    for i in range(P):
                        v = src[i]
                        dst[i] = v
                        s += v
                else:
                    for i in range(P):
                        dst[i] = 0
                    for i in range(OH):
                        for j in range(OWo):
                            v = src[i * OWo + j]
                            dst[i * OW + off + j] = v
                            s += v
                dbias[n0 + k, f] = s
            for c in range(C):
                im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W,
                                OH, OW, cols, 0, k * P)
        np.dot(cols, dyT.T, dWT_parts[ch])
        if need_dx:
            dcols = dcols_ws[t, :K * m * P].reshape((K, m * P))
            np.dot(WmT, dyT, dcols)
            acc = np.empty(H * W, np.float64)
            for k in range(m):
                for c in range(C):
                    col2im_channel(dcols, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, 0, k * P,
                                    dx[n0 + k, c].reshape(H * W), acc)


@njit_kernel(parallel=True)
def _sum_parts(parts, out):
    # out[a, b] = sum over m of parts[m, a, b] in float64, m in increasing
    # order: the same sums for any thread count.
    # Parallel axis: rows a; iteration a writes only out[a].
    M, A, B = parts.shape
    for a in numba.prange(A):
        row = out[a]
        for b in range(B):
            row[b] = 0.0
        for m in range(M):
            part = parts[m, a]
            for b in range(B):
                row[b] += part[b]


@njit_kernel(parallel=True)
def _forward_samples(x, Wb, kh, kw, sh, sw, ph, pw, OH, OW, has_bias, cols, y):
    # Per sample n, in one thread: its columns cols[n] (K (+ 1), P), whose
    # last row is ones when has_bias, then y[n] = [Wm | b] cols[n] by a
    # single-threaded BLAS GEMM (np.dot), straight into NCHW.
    # Parallel axis: samples; iteration n writes only cols[n] and y[n].
    N, C, H, W = x.shape
    K = C * kh * kw
    for n in numba.prange(N):
        cn = cols[n]
        for c in range(C):
            im2col_channel(x[n, c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W, OH, OW,
                            cn, 0, 0)
        if has_bias:
            ones = cn[K]
            for m in range(OH * OW):
                ones[m] = 1
        np.dot(Wb, cn, y[n])


@njit_kernel(parallel=True)
def _backward_samples(dy, WmT, cols, kh, kw, sh, sw, ph, pw, OH, OW, need_dx, parts,
                      dcols_ws, dx):
    # Per sample n, in one thread: [dW | db] part = dy[n] cols[n]^T by a
    # single-threaded BLAS GEMM into parts[n] (summed afterwards in sample
    # order by _sum_parts, so dW does not depend on the thread count); with
    # need_dx, dcols = Wm^T dy[n] and col2im into dx[n].
    # Parallel axis: samples; iteration n writes only parts[n] and dx[n].
    # Its scratch is row t = numba.get_thread_id(): a thread runs one
    # iteration at a time.
    N = dy.shape[0]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for n in numba.prange(N):
        t = numba.get_thread_id()
        np.dot(dy[n], cols[n].T, parts[n])
        if need_dx:
            dcols = dcols_ws[t]
            np.dot(WmT, dy[n], dcols)
            acc = np.empty(H * W, np.float64)
            for c in range(C):
                col2im_channel(dcols, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, 0, 0,
                                dx[n, c].reshape(H * W), acc)


@implements(conv.im2col)
def im2col(x, kh, kw, stride, padding):
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = conv2d_output_size(H, W, kh, kw, stride, padding)
    K = C * kh * kw
    cols = np.empty((N, K, OH * OW), dtype=x.dtype)
    im2col_into(x, 0, N, kh, kw, *stride, *padding, OH, OW, K, 0, cols.reshape(N * K, OH * OW))
    return cols


@implements(conv.col2im)
def col2im(cols, x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    OH, OW = conv2d_output_size(H, W, kh, kw, stride, padding)
    K = C * kh * kw
    scratch = np.array(cols, order="C")  # the kernel overwrites wrapped taps
    dx = np.empty(x_shape, dtype=cols.dtype)
    col2im_into(scratch.reshape(N * K, OH * OW), 0, N, kh, kw, *stride, *padding, OH, OW, K,
                0, dx)
    return dx


_workspace = threading.local()


def _scratch(slot, size, dtype):
    """A 1-D scratch array of ``size`` elements (contents undefined), kept per
    slot name, dtype and thread and reused by later calls. A fresh multi-MB
    array costs a page fault per 4 KB on its first write, which measured as
    much as the im2col kernel itself."""
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    key = (slot, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype=dtype)
    return buffer[:size]


def _thread_slots():
    """Rows of per-thread scratch: one per thread numba's pool can run."""
    return numba.config.NUMBA_NUM_THREADS


def chunk_samples(N, K, P, itemsize, chunk_bytes):
    """Samples per chunk of the chunked schedule.

    Parameters
    ----------
    N : int
        Batch size.
    K, P : int
        C*KH*KW taps and OH*OW output pixels: a sample's columns are (K, P).
    itemsize : int
        Bytes per element.
    chunk_bytes : int
        Target size of one chunk's columns.

    Returns
    -------
    nb : int
        As many samples as keep a chunk's columns within chunk_bytes, at
        least 1 and at most N. The last of the ceil(N / nb) chunks holds the
        remaining N - (ceil(N / nb) - 1)*nb samples.
    """
    return max(1, min(N, chunk_bytes // (K * P * itemsize)))


@njit_kernel(parallel=True)
def _nonfinite_blocks(bits, exponent, out):
    # out[c] = 1 when block c of bits (a float array's bits, unsigned) holds a
    # value whose exponent field is all ones (an inf or a NaN), else 0. An
    # integer OR over the block, without an early exit, so that it vectorizes.
    # Parallel axis: the blocks; block c writes only out[c].
    n = bits.size
    blocks = out.size
    step = (n + blocks - 1) // blocks
    for c in numba.prange(blocks):
        acc = 0
        for e in range(c * step, min(n, (c + 1) * step)):
            acc |= (bits[e] & exponent) == exponent
        out[c] = acc


def _all_finite(a):
    """True when no element of the float array a is an inf or a NaN: one
    pass over its bits that vectorizes (a float loop with an early exit
    does not)."""
    a = np.ascontiguousarray(a).reshape(-1)
    if a.dtype == np.float32:
        bits, exponent = a.view(np.uint32), np.uint32(0x7F800000)
    else:
        bits, exponent = a.view(np.uint64), np.uint64(0x7FF0000000000000)
    out = np.zeros(64, np.uint8)
    _nonfinite_blocks(bits, exponent, out)
    return not out.any()


def widened(H, W, KW, stride, padding):
    """The padded width the chunked schedule computes a stride-1 convolution on.

    A stride-1 convolution whose output is narrower than its input (OW < W,
    e.g. a 3x3 kernel without padding) has output rows of OW pixels, and
    im2col / col2im copy them row by row: short runs that cost more than the
    GEMMs (the speedrun recipe's 24 -> 32 layer on 12x12). With the padding
    widened to pw' = (KW - 1)/2 the output is W wide, every tap of im2col is
    the image shifted as a whole, and the OW wanted columns are columns off
    .. off + OW of it, off = pw' - pw; the extra columns are computed and
    dropped (a 3x3 kernel on 12x12: 12 columns instead of 10, 20% more GEMM
    work; with the two chunk sizes the speedrun's 24 -> 32 layer went from
    9.90 to 8.71 ms forward + backward at batch 256, Intel Xeon, ``python -m
    kernels.system.compare``).

    Parameters
    ----------
    H, W : int
        The input's height and width.
    KW : int
        The kernel's width.
    stride, padding : (int, int)

    Returns
    -------
    (pw', off) : (int, int)
        (pw, 0), nothing widened, unless the stride is 1, KW is odd and
        2*pw < KW - 1. The caller also keeps (pw, 0) when x or W holds an inf
        or a NaN: the dropped columns multiply their zero gradient by those
        values, which would put NaN where the reference has none.
    """
    pw = padding[1]
    if tuple(stride) != (1, 1) or KW % 2 == 0 or 2 * pw >= KW - 1:
        return pw, 0
    wide = (KW - 1) // 2
    return wide, wide - pw


def _chunk_geometry(x, W, stride, padding):
    """(padding computed, OH, OW computed, off, OW wanted) of the chunked
    schedule for x and W (``widened``, kept narrow when x or W is not finite)."""
    H, Wd = x.shape[2], x.shape[3]
    _, _, KH, KW = W.shape
    OH, OWo = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    pw, off = widened(H, Wd, KW, stride, padding)
    if off and not (_all_finite(x.reshape(-1)) and _all_finite(W.reshape(-1))):
        pw, off = padding[1], 0
    OW = conv2d_output_size(H, Wd, KH, KW, stride, (padding[0], pw))[1]
    return (padding[0], pw), OH, OW, off, OWo


# Winograd F(2x2, 3x3) -------------------------------------------------------
# (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016.)
# A 2x2 block of outputs of a 3x3 kernel g over a 4x4 input tile d is
#     Y = A^T [(G g G^T) * (B^T d B)] A      (* elementwise, 4x4),
# B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
# G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
# A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]:
# 16 multiplies instead of 36. Summed over the input channels, each of the 16
# positions xi of the 4x4 is one GEMM: M[xi] (F, tiles) = U[xi] (F, C) V[xi]
# (C, tiles), U = G g G^T, V = B^T d B. Neighbouring tiles overlap by 2.

WINOGRAD_CHUNK_BYTES = 512 << 10
"""Target size of one chunk's V and M (per thread) in the Winograd forward,
read at each call of forward_winograd unless it is given a ``chunk_bytes``.
Raced by ``python -m kernels.conv --winograd-chunks``, 2 threads, Intel
Xeon: the speedrun recipe's 24 -> 32 layer on 12x12 at batch 256 took 2.33,
2.25, 2.04, 2.08 and 2.44 ms at 128 KB, 256 KB, 512 KB, 1 MB and 2 MB; the
reference CNN's 32 -> 64 layer on 14x14 at batch 64 1.75, 1.76, 1.77, 1.75
and 1.97 ms."""


@njit_kernel(inline="always")
def _winograd_filter_row(U, i, f, c, t0, t1, t2):
    # Row i of (G g) G^T from row i of G g: U[4i .. 4i + 3, f, c].
    U[4 * i, f, c] = t0
    U[4 * i + 1, f, c] = 0.5 * (t0 + t1 + t2)
    U[4 * i + 2, f, c] = 0.5 * (t0 - t1 + t2)
    U[4 * i + 3, f, c] = t2


@njit_kernel()
def _winograd_filters(W, U):
    # U[xi, f, c] = (G g G^T)[xi // 4, xi % 4] for g = W[f, c], computed in
    # float64 and rounded once to U's dtype.
    F, C = W.shape[0], W.shape[1]
    for f in range(F):
        for c in range(C):
            g = W[f, c]
            g00, g01, g02 = np.float64(g[0, 0]), np.float64(g[0, 1]), np.float64(g[0, 2])
            g10, g11, g12 = np.float64(g[1, 0]), np.float64(g[1, 1]), np.float64(g[1, 2])
            g20, g21, g22 = np.float64(g[2, 0]), np.float64(g[2, 1]), np.float64(g[2, 2])
            # rows of G g
            _winograd_filter_row(U, 0, f, c, g00, g01, g02)
            _winograd_filter_row(U, 1, f, c, 0.5 * (g00 + g10 + g20), 0.5 * (g01 + g11 + g21),
                                 0.5 * (g02 + g12 + g22))
            _winograd_filter_row(U, 2, f, c, 0.5 * (g00 - g10 + g20), 0.5 * (g01 - g11 + g21),
                                 0.5 * (g02 - g12 + g22))
            _winograd_filter_row(U, 3, f, c, g20, g21, g22)


@njit_kernel()
def _winograd_input(xs, H, W, ph, pw, TH, TW, xp, a, V, c, col0):
    # V[:, c, col0 + ty*TW + tx] = B^T d B for every tile (ty, tx) of the
    # plane xs (H*W), zero-padded by (ph, pw) into xp (2*TH + 2, 2*TW + 2):
    # first the column pass a = B^T d over whole padded rows (one per row
    # combination), then the row pass per tile.
    Hp, Wp = xp.shape
    for i in range(Hp):
        for j in range(Wp):
            xp[i, j] = 0
    for i in range(H):
        for j in range(W):
            xp[i + ph, j + pw] = xs[i * W + j]
    for ty in range(TH):
        r = 2 * ty
        for w in range(Wp):
            x0 = xp[r, w]
            x1 = xp[r + 1, w]
            x2 = xp[r + 2, w]
            x3 = xp[r + 3, w]
            a[0, w] = x0 - x2
            a[1, w] = x1 + x2
            a[2, w] = x2 - x1
            a[3, w] = x1 - x3
        base = col0 + ty * TW
        for i in range(4):
            for tx in range(TW):
                b0 = a[i, 2 * tx]
                b1 = a[i, 2 * tx + 1]
                b2 = a[i, 2 * tx + 2]
                b3 = a[i, 2 * tx + 3]
                V[4 * i, c, base + tx] = b0 - b2
                V[4 * i + 1, c, base + tx] = b1 + b2
                V[4 * i + 2, c, base + tx] = b2 - b1
                V[4 * i + 3, c, base + tx] = b1 - b3


@njit_kernel(inline="always")
def _winograd_tile_out(M, f, col):
    # A^T m A for m = M[:, f, col]: the tile's (y00, y01, y10, y11).
    s0 = M[0, f, col] + M[4, f, col] + M[8, f, col]
    s1 = M[1, f, col] + M[5, f, col] + M[9, f, col]
    s2 = M[2, f, col] + M[6, f, col] + M[10, f, col]
    s3 = M[3, f, col] + M[7, f, col] + M[11, f, col]
    t0 = M[4, f, col] - M[8, f, col] - M[12, f, col]
    t1 = M[5, f, col] - M[9, f, col] - M[13, f, col]
    t2 = M[6, f, col] - M[10, f, col] - M[14, f, col]
    t3 = M[7, f, col] - M[11, f, col] - M[15, f, col]
    return s0 + s1 + s2, s1 - s2 - s3, t0 + t1 + t2, t1 - t2 - t3


@njit_kernel()
def _winograd_output(M, f, col0, TH, TW, OH, OW, bias, ys):
    # ys (OH*OW), the plane y[n, f], = A^T m A + bias for every tile, m =
    # M[:, f, col0 + ty*TW + tx]. The whole tiles without a test in the
    # loop, then the last row and column of tiles past an odd OH or OW,
    # whose outputs past the plane are dropped.
    for ty in range(OH // 2):
        i0 = 2 * ty
        for tx in range(OW // 2):
            y00, y01, y10, y11 = _winograd_tile_out(M, f, col0 + ty * TW + tx)
            j0 = 2 * tx
            ys[i0 * OW + j0] = y00 + bias
            ys[i0 * OW + j0 + 1] = y01 + bias
            ys[(i0 + 1) * OW + j0] = y10 + bias
            ys[(i0 + 1) * OW + j0 + 1] = y11 + bias
    if OW % 2:
        j0 = OW - 1
        for ty in range(TH):
            i0 = 2 * ty
            y00, y01, y10, y11 = _winograd_tile_out(M, f, col0 + ty * TW + TW - 1)
            ys[i0 * OW + j0] = y00 + bias
            if i0 + 1 < OH:
                ys[(i0 + 1) * OW + j0] = y10 + bias
    if OH % 2:
        i0 = OH - 1
        for tx in range(OW // 2):
            y00, y01, y10, y11 = _winograd_tile_out(M, f, col0 + (TH - 1) * TW + tx)
            ys[i0 * OW + 2 * tx] = y00 + bias
            ys[i0 * OW + 2 * tx + 1] = y01 + bias


@njit_kernel(parallel=True)
def _forward_winograd(x, U, b, ph, pw, OH, OW, nb, V_ws, M_ws, y):
    # Per chunk of nb samples, in one thread: V of the chunk's tiles (16, C,
    # m*T), the 16 GEMMs M[xi] = U[xi] V[xi] (single-threaded BLAS), and
    # y = A^T M A + b into NCHW.
    # Parallel axis: chunks; chunk ch writes only y[ch*nb:(ch + 1)*nb], and
    # its scratch is row t = numba.get_thread_id() of V_ws and M_ws: a thread
    # runs one chunk at a time.
    N, C, H, W = x.shape
    F = U.shape[1]
    TH = (OH + 1) // 2
    TW = (OW + 1) // 2
    T = TH * TW
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        Tc = m * T
        V = V_ws[t, :16 * C * Tc].reshape((16, C, Tc))
        M = M_ws[t, :16 * F * Tc].reshape((16, F, Tc))
        xp = np.empty((2 * TH + 2, 2 * TW + 2), x.dtype)
        a = np.empty((4, 2 * TW + 2), x.dtype)
        for k in range(m):
            for c in range(C):
                _winograd_input(x[n0 + k, c].reshape(H * W), H, W, ph, pw, TH, TW, xp, a, V,
                                c, k * T)
        v0 = t * V_ws.shape[1]
        m0 = t * M_ws.shape[1]
        for xi in range(16):
            gemm(NOTRANS, NOTRANS, F, Tc, C, U, xi * F * C, C, V_ws, v0 + xi * C * Tc, Tc,
                 0.0, M_ws, m0 + xi * F * Tc, Tc)
        for k in range(m):
            for f in range(F):
                _winograd_output(M, f, k * T, TH, TW, OH, OW, b[f], y[n0 + k, f].reshape(OH * OW))


WINOGRAD_MIN_CHANNELS = 24
"""Fewest input and output channels for which conv2d_forward takes the
Winograd forward. Its transforms cost per channel, its GEMM savings per
pair of channels. ``python -m kernels.conv --winograd-sweep`` (batch 64,
3x3 'same', 2 threads, Intel Xeon), Winograd / im2col forward time: 1.7 to
1.9 with 6 or 8 channels each side, 1.2 to 1.4 on 16 -> 16, 32 -> 8 and
16 -> 32 at 14x14 (0.75 and 0.98 on 16 -> 16 and 8 -> 32 at 28x28, where
im2col is slower), and 0.77 to 0.83 from 24 -> 24 up, the reference CNN's
32 -> 64 among them."""


def winograd_fits(W, stride, groups=1):
    """True when conv2d_forward runs ``forward_winograd``: a 3x3 kernel,
    stride 1, no groups, and at least WINOGRAD_MIN_CHANNELS input and output
    channels (then C*9 > SMALL_K: layers of the chunked schedule)."""
    F, C, KH, KW = W.shape
    return (groups == 1 and KH == KW == 3 and tuple(stride) == (1, 1)
            and min(C, F) >= WINOGRAD_MIN_CHANNELS)


def forward_winograd(x, W, b, padding, chunk_bytes=None):
    """Conv2D forward of a 3x3 kernel with stride 1 by Winograd F(2x2, 3x3).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array
    W : (F, C, 3, 3) array of x's dtype
    b : (F,) array or None
    padding : (int, int)
    chunk_bytes : int or None
        Target size of one chunk's V and M (default WINOGRAD_CHUNK_BYTES).

    Returns
    -------
    (y, None) : y (N, F, OH, OW), as conv2d_forward.

    An inf or a NaN in x or W spreads over its tile through the transforms'
    differences (inf - inf), so y is the reference's only when x and W are
    finite: conv2d_forward checks that first (one pass over their bits; a
    test of every output inside the output transform, tried instead, cost
    more) and runs the chunked schedule otherwise. A bias that is not
    finite reaches its outputs only, as in the reference.

    Against the im2col form, 2.25 times fewer multiply-adds in the GEMMs, the
    rest in the transforms; float32 results differ from it by rounding (about
    1e-6 of the largest output).
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, C, H, Wd = x.shape
    F = W.shape[0]
    OH, OW = conv2d_output_size(H, Wd, 3, 3, (1, 1), padding)
    T = ((OH + 1) // 2) * ((OW + 1) // 2)
    U = np.empty((16, F, C), dtype=x.dtype)
    _winograd_filters(W, U)
    bias = np.zeros(F, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    threads = numba.get_num_threads()
    # A sample's V and M are (16, C + F, T): chunk_samples's columns (K, P).
    budget = WINOGRAD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    nb = max(1, min(chunk_samples(N, 16 * (C + F), T, x.itemsize, budget), -(-N // threads)))
    S = _thread_slots()
    V_ws = _scratch("winograd_V", S * 16 * C * T * nb, x.dtype).reshape(S, -1)
    M_ws = _scratch("winograd_M", S * 16 * F * T * nb, x.dtype).reshape(S, -1)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    with single_threaded_kernel_blas():
        _forward_winograd(x, U, bias, padding[0], padding[1], OH, OW, nb, V_ws, M_ws, y)
    return y, None


def forward_chunks(x, W, b, stride, padding, chunk_bytes=None):
    """The chunked schedule's forward (conv2d_forward's for C*KH*KW > SMALL_K).

    Same parameters and returns as conv2d_forward (unchecked: conv2d_forward
    checks them), plus ``chunk_bytes``, the target size of one chunk's
    columns (default FUSED_CHUNK_BYTES, read at each call); ``chunk_samples``
    gives the samples per chunk. The cache is None.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N = x.shape[0]
    F, _, KH, KW = W.shape
    pad, OH, OW, off, OWo = _chunk_geometry(x, W, stride, padding)
    Wm = W.reshape(F, -1)
    K, P = Wm.shape[1], OH * OW
    bias = np.zeros(F, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    y = np.empty((N, F, OH * OWo), dtype=x.dtype)
    nb = chunk_samples(N, K, P, x.itemsize,
                       FUSED_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    T = _thread_slots()
    cols_ws = _scratch("fused_cols", T * K * nb * P, x.dtype).reshape(T, K * nb * P)
    yT_ws = _scratch("fused_yT", T * F * nb * P, x.dtype).reshape(T, F * nb * P)
    with single_threaded_kernel_blas():
        _forward_fused(x, Wm, bias, KH, KW, *stride, *pad, OH, OW, off, OWo, nb, cols_ws,
                       yT_ws, y)
    return y.reshape(N, F, OH, OWo), None


def backward_chunks(dy, x, W, cache, stride, padding, has_bias, need_dx, chunk_bytes=None):
    """The chunked schedule's backward (conv2d_backward's for C*KH*KW > SMALL_K).

    Same parameters and returns as conv2d_backward (unchecked), plus
    ``chunk_bytes`` as in forward_chunks. ``cache`` is ignored: each chunk's
    columns are rebuilt from x.
    """
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, F = dy.shape[:2]
    _, C, KH, KW = W.shape
    pad, OH, OW, off, OWo = _chunk_geometry(x, W, stride, padding)
    K, P = C * KH * KW, OH * OW
    dtype = dy.dtype
    WmT = np.ascontiguousarray(W.reshape(F, K).T)
    dx = np.empty(x.shape if need_dx else (0, C, 1, 1), dtype=dtype)
    nb = chunk_samples(N, K, P, x.itemsize,
                       FUSED_BACKWARD_CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
    T = _thread_slots()
    cols_ws = _scratch("fused_cols", T * K * nb * P, dtype).reshape(T, K * nb * P)
    dyT_ws = _scratch("fused_dyT", T * F * nb * P, dtype).reshape(T, F * nb * P)
    dcols_ws = _scratch("fused_dcols", T * K * nb * P, dtype).reshape(T, K * nb * P)
    chunks = (N + nb - 1) // nb
    dWT_parts = _scratch("fused_dWT", chunks * K * F, dtype).reshape(chunks, K, F)
    dbias = np.empty((N, F), dtype=np.float64)
    with single_threaded_kernel_blas():
        _backward_fused(dy.reshape(N, F, OH * OWo), x, WmT, KH, KW, *stride, *pad, OH, OW, off,
                        OWo, nb, need_dx, cols_ws, dyT_ws, dcols_ws, dWT_parts, dbias, dx)
    dWT = np.empty((K, F), dtype=np.float64)
    _sum_parts(dWT_parts, dWT)
    dW = np.ascontiguousarray(dWT.T).astype(dtype).reshape(W.shape)
    db = dbias.sum(axis=0).astype(dtype) if has_bias else None
    return (dx if need_dx else None), dW, db


def forward_samples(x, W, b, stride, padding):
    """The per-sample schedule's forward (conv2d_forward's for C*KH*KW <= SMALL_K).

    Same parameters and returns as conv2d_forward (unchecked: conv2d_forward
    checks them). The cache is the columns with a ones row, (N, C*KH*KW + 1,
    OH*OW), or without it, (N, C*KH*KW, OH*OW), when b is None.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    K, P = C * KH * KW, OH * OW
    has_bias = b is not None
    Wb = W.reshape(F, K)
    if has_bias:
        Wb = np.concatenate([Wb, np.ascontiguousarray(b).reshape(F, 1)], axis=1)
    cols = np.empty((N, K + has_bias, P), dtype=x.dtype)
    y = np.empty((N, F, P), dtype=x.dtype)
    with single_threaded_kernel_blas():
        _forward_samples(x, Wb, KH, KW, *stride, *padding, OH, OW, has_bias, cols, y)
    return y.reshape(N, F, OH, OW), cols


def backward_samples(dy, x, W, cache, stride, padding, has_bias, need_dx):
    """The per-sample schedule's backward (conv2d_backward's for C*KH*KW <= SMALL_K).

    Same parameters and returns as conv2d_backward (unchecked). ``cache`` is
    what forward_samples returned, or None; the columns are rebuilt from x
    when it is None or lacks the ones row that db needs.
    """
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, F, OH, OW = dy.shape
    _, C, KH, KW = W.shape
    K, P = C * KH * KW, OH * OW
    dtype = dy.dtype
    cols = cache
    if cols is None or cols.shape[1] < K + has_bias:
        cols = forward_samples(x, W, np.zeros(F, dtype) if has_bias else None, stride,
                               padding)[1]
    R = cols.shape[1]
    T = _thread_slots()
    WmT = np.ascontiguousarray(W.reshape(F, K).T)
    parts = _scratch("samples_part", N * F * R, dtype).reshape(N, F, R)
    dcols_ws = _scratch("samples_dcols", T * K * P, dtype).reshape(T, K, P)
    dx = np.empty(x.shape if need_dx else (0, C, 1, 1), dtype=dtype)
    with single_threaded_kernel_blas():
        _backward_samples(dy.reshape(N, F, P), WmT, cols, KH, KW, *stride, *padding, OH, OW,
                          need_dx, parts, dcols_ws, dx)
    dWb = np.empty((F, R), dtype=np.float64)
    _sum_parts(parts, dWb)
    dW = dWb[:, :K].astype(dtype).reshape(W.shape)
    db = dWb[:, K].astype(dtype) if has_bias else None
    return (dx if need_dx else None), dW, db


@njit_kernel()
def _pad_plane(xs, H, W, ph, pw, xp):
    """xp[(h + ph)*Wp + pw + w] = xs[h*W + w] with Wp = W + 2*pw, and zero
    everywhere else in xp: the zero-padded plane, flat, with a zero tail.
    Returns True when every value of xs is finite."""
    Wp = W + 2 * pw
    for k in range(xp.shape[0]):
        xp[k] = 0
    bad = xp.dtype.type(0)
    for h in range(H):
        dst = xp[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W]
        src = xs[h * W:(h + 1) * W]
        for w in range(W):
            v = src[w]
            dst[w] = v
            bad += v - v  # 0 for a finite v, NaN for inf or NaN
    return bad == 0


@njit_kernel()
def _correlate_3x3(xp, w, Wp, add, acc):
    """acc[m] = sum_{p, q} w[p, q] * xp[p*Wp + q + m] for a 3x3 w, all nine taps
    in one pass, in acc's dtype; with ``add`` the sums are added to acc."""
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    L = acc.shape[0]
    r0 = xp[0:L + 2]
    r1 = xp[Wp:Wp + L + 2]
    r2 = xp[2 * Wp:2 * Wp + L + 2]
    for m in range(L):
        s = (w00 * r0[m] + w01 * r0[m + 1] + w02 * r0[m + 2]
             + w10 * r1[m] + w11 * r1[m + 1] + w12 * r1[m + 2]
             + w20 * r2[m] + w21 * r2[m + 1] + w22 * r2[m + 2])
        acc[m] = acc[m] + s if add else s


@njit_kernel()
def _correlate_taps(xp, w, Wp, acc):
    """acc[m] = sum_{p, q} w[p, q] * xp[p*Wp + q + m] for any (KH, KW) w: one
    contiguous multiply-add pass over acc per tap, in acc's dtype."""
    KH, KW = w.shape
    L = acc.shape[0]
    for m in range(L):
        acc[m] = 0
    for p in range(KH):
        for q in range(KW):
            wpq = w[p, q]
            src = xp[p * Wp + q:p * Wp + q + L]
            for m in range(L):
                acc[m] += wpq * src[m]


@njit_kernel()
def _correlate_strided(xp, w, bias, Wp, sh, sw, OH, OW, acc, out):
    """out[i, j] = bias + sum_{p, q} w[p, q] * xp[(i*sh + p)*Wp + j*sw + q], row
    by row, each row summed in acc (OW,)."""
    KH, KW = w.shape
    for i in range(OH):
        for j in range(OW):
            acc[j] = bias
        for p in range(KH):
            base = (i * sh + p) * Wp
            for q in range(KW):
                wpq = w[p, q]
                src = xp[base + q:base + q + (OW - 1) * sw + 1:sw]
                for j in range(OW):
                    acc[j] += wpq * src[j]
        row = out[i]
        for j in range(OW):
            row[j] = acc[j]


@njit_kernel(parallel=True)
def depthwise_forward_into(x, W, b, sh, sw, ph, pw, OH, OW, xp_ws, acc_ws, y):
    """y[n, f] = b[f] + the correlation of x[n, f // M] with W[f, 0], M = F // C,
    for every (n, f): the convolution with one input channel per group
    (groups = C; depthwise when F = C). x (N, C, H, W), W (F, 1, KH, KW), b (F,)
    and y (N, F, OH, OW) C-contiguous. xp_ws and acc_ws are per-thread
    scratch, (T, (H + 2*ph)*(W + 2*pw) + KW) of x's dtype and (T, OH*(W + 2*pw))
    of the accumulator's dtype: the sums run in acc_ws's dtype.

    Each (n, c) plane is copied once into a zero-padded plane xp of width
    Wp = W + 2*pw. With stride 1, output row i computed on that width makes
    every tap (p, q) one contiguous multiply-add over the OH*Wp elements
    xp[p*Wp + q + m] (the columns j >= OW of each row are dropped), and a 3x3
    kernel does all nine taps in one pass; other strides run row by row,
    reading every sw-th element."""
    # Parallel axis: (sample, channel) planes; iteration (n, c) writes only
    # y[n, c*M:(c + 1)*M] and row numba.get_thread_id() of the scratch (a
    # thread runs one iteration at a time).
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    M = F // C
    Wp = Wd + 2 * pw
    L = OH * Wp
    for t in numba.prange(N * C):
        n = t // C
        c = t - n * C
        tid = numba.get_thread_id()
        xp = xp_ws[tid]
        _pad_plane(x[n, c].reshape(H * Wd), H, Wd, ph, pw, xp)
        for f in range(c * M, (c + 1) * M):
            out = y[n, f]
            if sh == 1 and sw == 1:
                acc = acc_ws[tid, :L]
                if KH == 3 and KW == 3:
                    _correlate_3x3(xp, W[f, 0], Wp, False, acc)
                else:
                    _correlate_taps(xp, W[f, 0], Wp, acc)
                bf = b[f]
                for i in range(OH):
                    row = out[i]
                    src = acc[i * Wp:i * Wp + OW]
                    for j in range(OW):
                        row[j] = src[j] + bf
            else:
                _correlate_strided(xp, W[f, 0], b[f], Wp, sh, sw, OH, OW, acc_ws[tid, :OW], out)


@njit_kernel()
def _dW_3x3(dyd, xp, Wp, out):
    """out[3*p + q] = sum_k dyd[k] * xp[p*Wp + q + k], the nine sums of a 3x3
    kernel's dW in one pass over dyd, in dyd's dtype."""
    L = dyd.shape[0]
    r0 = xp[0:L + 2]
    r1 = xp[Wp:Wp + L + 2]
    r2 = xp[2 * Wp:2 * Wp + L + 2]
    zero = dyd.dtype.type(0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
    for k in range(L):
        d = dyd[k]
        s00 += d * r0[k]
        s01 += d * r0[k + 1]
        s02 += d * r0[k + 2]
        s10 += d * r1[k]
        s11 += d * r1[k + 1]
        s12 += d * r1[k + 2]
        s20 += d * r2[k]
        s21 += d * r2[k + 1]
        s22 += d * r2[k + 2]
    out[0], out[1], out[2] = s00, s01, s02
    out[3], out[4], out[5] = s10, s11, s12
    out[6], out[7], out[8] = s20, s21, s22


@njit_kernel(inline="always")
def _tap_dot(dyd, src, valid, exact):
    """sum_k dyd[k] * src[k] over the valid k, in dyd's dtype. Unless ``exact``,
    every k: dyd is zero where valid is False, which adds nothing while src is
    finite there."""
    zero = dyd.dtype.type(0)
    s = zero
    if exact:
        for k in range(dyd.shape[0]):
            s += dyd[k] * src[k] if valid[k] else zero
    else:
        for k in range(dyd.shape[0]):
            s += dyd[k] * src[k]
    return s


@njit_kernel(inline="always")
def _tap_axpy(w, dyd, valid, exact, dst):
    """dst[k] += w * dyd[k] for the valid k (for every k unless ``exact``, which
    adds zeros while w is finite)."""
    zero = dst.dtype.type(0)
    if exact:
        for k in range(dyd.shape[0]):
            dst[k] += w * dyd[k] if valid[k] else zero
    else:
        for k in range(dyd.shape[0]):
            dst[k] += w * dyd[k]


@njit_kernel(parallel=True)
def depthwise_backward_into(dy, x, W, sh, sw, ph, pw, need_dx, valid, xp_ws, dyd_ws, dxp_ws,
                            dW_parts, db_parts, dx):
    """The backward of depthwise_forward_into, per (n, c) plane: sample n's
    parts of dW and db, dW_parts[n] (F, KH*KW) summed in dW_parts's dtype and
    db_parts[n] (F,) in float64, and with need_dx dx[n, c] (N, C, H, W),
    summed in dxp_ws's dtype. Scratch per thread: xp_ws (T, Hp*Wp + KW) of
    x's dtype, the padded plane as in the forward; dyd_ws (T, at least
    (KH - 1)*Wp + KW - 1 + (Hp + KH)*Wp + KW) of dy's dtype; dxp_ws (T,
    Hp*Wp + KW). valid (L,), L = ((OH - 1)*sh + 1)*Wp, is True at the
    positions i*sh*Wp + j*sw of the outputs (i, j) and False elsewhere.

    dy[n, f] is laid out on the padded width with its strides, after a margin
    of KH - 1 zero rows and KW - 1 zero columns: dyd[i*sh*Wp + j*sw] =
    dy[n, f, i, j], zero elsewhere. Then every tap (p, q) is one contiguous
    pass over dyd and the shifted plane: dW[f, p, q] = sum of dyd * xp[p*Wp +
    q:], and dxp[p*Wp + q:] += W[f, 0, p, q] * dyd; dx is dxp without its
    padding. A 3x3 kernel with stride 1 does the nine dW sums in one pass,
    and dx as the 3x3 correlation of the margined dy with the flipped
    kernel, in one pass. The zeros of dyd and of its margin add nothing as
    long as x's plane (for dW) and W[f] (for dx) are finite; a plane or a
    filter with an inf or a NaN takes the taps one by one, at the valid
    positions only (a select), so that it reaches exactly the gradients it
    reaches in the reference."""
    # Parallel axis: (sample, channel) planes; iteration (n, c) writes only
    # dW_parts[n, f], db_parts[n, f] of its filters f = c*M .. (c + 1)*M - 1,
    # dx[n, c] and row numba.get_thread_id() of the scratch.
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = dy.shape[2], dy.shape[3]
    M = F // C
    Wp = Wd + 2 * pw
    L = valid.shape[0]
    off = (KH - 1) * Wp + KW - 1
    one_pass = KH == 3 and KW == 3 and sh == 1 and sw == 1
    for t in numba.prange(N * C):
        n = t // C
        c = t - n * C
        tid = numba.get_thread_id()
        xp = xp_ws[tid]
        x_finite = _pad_plane(x[n, c].reshape(H * Wd), H, Wd, ph, pw, xp)
        dydm = dyd_ws[tid]
        for k in range(dydm.shape[0]):
            dydm[k] = 0
        dyd = dydm[off:off + L]
        dxp = dxp_ws[tid]
        if need_dx:
            for k in range(dxp.shape[0]):
                dxp[k] = 0
        for f in range(c * M, (c + 1) * M):
            for i in range(OH):
                row = dy[n, f, i]
                for j in range(OW):
                    dyd[i * sh * Wp + j * sw] = row[j]
            plane = dy[n, f].reshape(OH * OW)
            total = 0.0
            for m in range(OH * OW):
                total += plane[m]
            db_parts[n, f] = total
            w = W[f, 0]
            w_bad = w[0, 0] - w[0, 0]
            for p in range(KH):
                for q in range(KW):
                    w_bad += w[p, q] - w[p, q]  # 0 while every tap is finite
            if one_pass and x_finite:
                _dW_3x3(dyd, xp, Wp, dW_parts[n, f])
            else:
                for p in range(KH):
                    for q in range(KW):
                        dW_parts[n, f, p * KW + q] = _tap_dot(
                            dyd, xp[p * Wp + q:p * Wp + q + L], valid, not x_finite)
            if not need_dx:
                continue
            if one_pass and w_bad == 0:
                # dxp[(h + ph)*Wp + pw + v] =
                #     sum_{p, q} w[2 - p, 2 - q] * dydm[(h + ph + p)*Wp + pw + q + v]
                start = ph * Wp + pw
                _correlate_3x3(dydm[start:], w[::-1, ::-1], Wp, True,
                               dxp[start:start + H * Wp])
            else:
                for p in range(KH):
                    for q in range(KW):
                        _tap_axpy(w[p, q], dyd, valid, w_bad != 0,
                                  dxp[p * Wp + q:p * Wp + q + L])
        if need_dx:
            for h in range(H):
                row = dx[n, c, h]
                src = dxp[(h + ph) * Wp + pw:(h + ph) * Wp + pw + Wd]
                for v in range(Wd):
                    row[v] = src[v]


def output_positions(OH, OW, sh, sw, Wp):
    """valid (((OH - 1)*sh + 1)*Wp,) bool: True at i*sh*Wp + j*sw for the
    outputs (i, j), the layout of dy in depthwise_backward_into."""
    valid = np.zeros(((OH - 1) * sh + 1) * Wp, dtype=np.bool_)
    valid[(np.arange(OH)[:, None] * sh * Wp + np.arange(OW) * sw).reshape(-1)] = True
    return valid


def forward_depthwise(x, W, b, stride, padding, groups):
    """The direct schedule's forward: one input channel per group (C == groups).

    Same parameters and returns as conv2d_forward (unchecked: conv2d_forward
    checks them); the cache is None. y's sums run in x's dtype: KH*KW terms
    each, as a GEMM's for a K = KH*KW convolution.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    (ph, pw) = padding
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    bias = np.zeros(F, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    T = _thread_slots()
    xp_ws = _scratch("dw_xp", T * (Hp * Wp + KW), x.dtype).reshape(T, Hp * Wp + KW)
    acc_ws = _scratch("dw_acc", T * OH * Wp, x.dtype).reshape(T, OH * Wp)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    depthwise_forward_into(x, W, bias, *stride, *padding, OH, OW, xp_ws, acc_ws, y)
    return y, None


def backward_depthwise(dy, x, W, cache, stride, padding, has_bias, need_dx, groups):
    """The direct schedule's backward (C == groups).

    Same parameters and returns as conv2d_backward (unchecked); ``cache`` is
    ignored. Each sample's part of dW (a plane's sum) and dx (M*KH*KW terms)
    are summed in the input dtype, as the per-sample GEMMs do; db and the
    sums of the parts over the batch in float64, in sample order.
    """
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = dy.shape[2], dy.shape[3]
    (sh, sw), (ph, pw) = stride, padding
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    dtype = dy.dtype
    T = _thread_slots()
    xp_ws = _scratch("dw_xp", T * (Hp * Wp + KW), dtype).reshape(T, Hp * Wp + KW)
    Ld = (KH - 1) * Wp + KW - 1 + (Hp + KH) * Wp + KW  # the margin, then dy, then zeros
    dyd_ws = _scratch("dw_dyd", T * Ld, dtype).reshape(T, Ld)
    dxp_ws = _scratch("dw_dxp", T * (Hp * Wp + KW), dtype).reshape(T, Hp * Wp + KW)
    dW_parts = _scratch("dw_dW", N * F * KH * KW, dtype).reshape(N, F, KH * KW)
    db_parts = np.empty((N, F), dtype=np.float64)
    dx = np.empty(x.shape if need_dx else (0, C, 1, 1), dtype=dtype)
    valid = output_positions(OH, OW, sh, sw, Wp)
    depthwise_backward_into(dy, x, W, sh, sw, ph, pw, need_dx, valid, xp_ws, dyd_ws, dxp_ws,
                            dW_parts, db_parts, dx)
    dW = np.empty((F, KH * KW), dtype=np.float64)
    _sum_parts(dW_parts, dW)
    db = db_parts.sum(axis=0).astype(dtype) if has_bias else None
    return (dx if need_dx else None), dW.astype(dtype).reshape(W.shape), db


@njit_kernel(parallel=True)
def _forward_groups(x, Wg, b, kh, kw, sh, sw, ph, pw, OH, OW, cols_ws, y):
    # Per (sample n, group g), in one thread: the columns of the group's Cg
    # channels (Kg, P), then y[n, g*Fg:(g + 1)*Fg] = Wm_g cols + b by a
    # single-threaded BLAS GEMM (np.dot), straight into NCHW.
    # Parallel axis: (sample, group); iteration (n, g) writes only the Fg
    # rows of its group in y[n], and row numba.get_thread_id() of cols_ws.
    N, C, H, W = x.shape
    G, Fg, Kg = Wg.shape
    Cg = C // G
    P = OH * OW
    yf = y.reshape((N, G * Fg * P))
    for t in numba.prange(N * G):
        n = t // G
        g = t - n * G
        cols = cols_ws[numba.get_thread_id(), :Kg * P].reshape((Kg, P))
        for c in range(Cg):
            im2col_channel(x[n, g * Cg + c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W,
                            OH, OW, cols, 0, 0)
        out = yf[n, g * Fg * P:(g + 1) * Fg * P].reshape((Fg, P))
        np.dot(Wg[g], cols, out)
        for f in range(Fg):
            bf = b[g * Fg + f]
            row = out[f]
            for m in range(P):
                row[m] += bf


@njit_kernel(parallel=True)
def _backward_groups(dy, x, WgT, kh, kw, sh, sw, ph, pw, OH, OW, need_dx, cols_ws, dcols_ws,
                     parts, dbias, dx):
    # Per (sample n, group g), in one thread: the group's columns rebuilt
    # from x; its part of dW, parts[n, g] = dy_g[n] cols^T (Fg, Kg), by a
    # single-threaded BLAS GEMM (summed over n afterwards in sample order by
    # _sum_parts); the per-(n, f) sums of dy for db, in float64; with
    # need_dx, dcols = Wm_g^T dy_g[n] and col2im into the group's channels of dx[n].
    # Parallel axis: (sample, group); iteration (n, g) writes only parts[n, g],
    # dbias[n] and dx[n] of its group's channels, and row numba.get_thread_id()
    # of the scratch.
    N, C, H, W = x.shape
    G, Kg, Fg = WgT.shape
    Cg = C // G
    P = OH * OW
    dyf = dy.reshape((N, G * Fg * P))
    for t in numba.prange(N * G):
        n = t // G
        g = t - n * G
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :Kg * P].reshape((Kg, P))
        for c in range(Cg):
            im2col_channel(x[n, g * Cg + c].reshape(H * W), c, kh, kw, sh, sw, ph, pw, H, W,
                            OH, OW, cols, 0, 0)
        dyg = dyf[n, g * Fg * P:(g + 1) * Fg * P].reshape((Fg, P))
        np.dot(dyg, cols.T, parts[n, g])
        for f in range(Fg):
            row = dyg[f]
            s = 0.0
            for m in range(P):
                s += row[m]
            dbias[n, g * Fg + f] = s
        if need_dx:
            dcols = dcols_ws[tid, :Kg * P].reshape((Kg, P))
            np.dot(WgT[g], dyg, dcols)
            acc = np.empty(H * W, np.float64)
            for c in range(Cg):
                col2im_channel(dcols, c, kh, kw, sh, sw, ph, pw, H, W, OH, OW, 0, 0,
                                dx[n, g * Cg + c].reshape(H * W), acc)


def forward_groups(x, W, b, stride, padding, groups):
    """The per-group schedule's forward: im2col and one GEMM per (sample, group).

    Same parameters and returns as conv2d_forward (unchecked); the cache is None.
    """
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, C, H, Wd = x.shape
    F, Cg, KH, KW = W.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    Kg, P = Cg * KH * KW, OH * OW
    Wg = W.reshape(groups, F // groups, Kg)
    bias = np.zeros(F, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    T = _thread_slots()
    cols_ws = _scratch("groups_cols", T * Kg * P, x.dtype).reshape(T, Kg * P)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    with single_threaded_kernel_blas():
        _forward_groups(x, Wg, bias, KH, KW, *stride, *padding, OH, OW, cols_ws, y)
    return y, None


def backward_groups(dy, x, W, cache, stride, padding, has_bias, need_dx, groups):
    """The per-group schedule's backward.

    Same parameters and returns as conv2d_backward (unchecked); ``cache`` is
    ignored: the columns are rebuilt from x.
    """
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    N, F, OH, OW = dy.shape
    _, Cg, KH, KW = W.shape
    Kg, P, Fg = Cg * KH * KW, OH * OW, F // groups
    dtype = dy.dtype
    WgT = np.ascontiguousarray(W.reshape(groups, Fg, Kg).transpose(0, 2, 1))
    T = _thread_slots()
    cols_ws = _scratch("groups_cols", T * Kg * P, dtype).reshape(T, Kg * P)
    dcols_ws = _scratch("groups_dcols", T * Kg * P, dtype).reshape(T, Kg * P)
    parts = _scratch("groups_part", N * F * Kg, dtype).reshape(N, groups, Fg, Kg)
    dbias = np.empty((N, F), dtype=np.float64)
    dx = np.empty(x.shape if need_dx else (0, x.shape[1], 1, 1), dtype=dtype)
    with single_threaded_kernel_blas():
        _backward_groups(dy, x, WgT, KH, KW, *stride, *padding, OH, OW, need_dx, cols_ws,
                         dcols_ws, parts, dbias, dx)
    dW = np.empty((F, Kg), dtype=np.float64)
    _sum_parts(parts.reshape(N, F, Kg), dW)
    db = dbias.sum(axis=0).astype(dtype) if has_bias else None
    return (dx if need_dx else None), dW.astype(dtype).reshape(W.shape), db


SCHEDULES = {"samples": (forward_samples, backward_samples),
             "chunks": (forward_chunks, backward_chunks)}
"""Both schedules by name, (forward, backward): the production entries that
kernels/conv.py times and tests/ops/test_conv_cpu.py runs on every shape."""


GROUPED_SCHEDULES = {"depthwise": (forward_depthwise, backward_depthwise),
                     "groups": (forward_groups, backward_groups)}
"""The schedules of a grouped convolution by name, (forward, backward), taking
``groups`` as their last argument: "depthwise" (one input channel per group,
any number of filters per group) and "groups" (any groups; groups = 1 too)."""


def schedule(K, groups=1, Cg=None):
    """The schedule conv2d_forward and conv2d_backward run.

    Parameters
    ----------
    K : int
        C/groups*KH*KW, the taps of one output pixel.
    groups : int
        G (default 1).
    Cg : int or None
        C/groups, the input channels per group; read only when groups > 1.

    Returns
    -------
    name : str
        A key of SCHEDULES when groups == 1 ("samples" for K <= SMALL_K,
        else "chunks"), else of GROUPED_SCHEDULES ("depthwise" for Cg == 1,
        else "groups").
    """
    if groups == 1:
        return "samples" if K <= SMALL_K else "chunks"
    return "depthwise" if Cg == 1 else "groups"


@implements(conv.conv2d_forward)
def conv2d_forward(x, W, b, stride, padding, groups=1):
    """Runs SCHEDULES[schedule(C*KH*KW)] when groups == 1: the cache is the
    columns with a ones row, (N, C*KH*KW + 1, OH*OW) (no ones row without a
    bias), when C*KH*KW <= SMALL_K; otherwise None (the backward rebuilds the
    columns from x). With groups > 1, GROUPED_SCHEDULES[...]: the direct
    "depthwise" kernels when C == groups, else "groups"; the cache is None."""
    _, Cg, KH, KW = W.shape
    name = schedule(Cg * KH * KW, groups, Cg)
    if (name == "chunks" and winograd_fits(W, stride, groups)
            and _all_finite(x) and _all_finite(W)):
        return forward_winograd(x, W, b, padding)
    if groups == 1:
        return SCHEDULES[name][0](x, W, b, stride, padding)
    return GROUPED_SCHEDULES[name][0](x, W, b, stride, padding, groups)


@implements(conv.conv2d_backward)
def conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    """Runs the schedule conv2d_forward ran; ``cache`` is what this backend's
    conv2d_forward returned, or None."""
    _, Cg, KH, KW = W.shape
    name = schedule(Cg * KH * KW, groups, Cg)
    if groups == 1:
        return SCHEDULES[name][1](dy, x, W, cache, stride, padding, has_bias, need_dx)
    return GROUPED_SCHEDULES[name][1](dy, x, W, cache, stride, padding, has_bias, need_dx,
                                      groups)
