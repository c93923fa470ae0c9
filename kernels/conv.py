"""Kernel lab: Conv2D forward + backward (im2col + BLAS GEMM, and a direct kernel).

The op is the contract's (tinynet/ops/conv/__init__.py), which states the
math and derives the im2col form. Here K = C*KH*KW taps, P = OH*OW output
pixels, cols[n] (K, P) the columns of sample n and Wm = W as (F, K):
y[n] = Wm cols[n] + b, dW = sum_n dy[n] cols[n]^T, dcols[n] = Wm^T dy[n],
dx = col2im(dcols).

Each variant is a pair (forward, backward) with the signatures of the ops
(``conv2d_forward(x, W, b, stride, padding) -> (y, cache)``,
``conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx)``);
the docstring of each forward says what it does, and VARIANTS numbers them
in the order they were written. The retired ones are this file's own code,
built on the production column kernels ``im2col_into`` / ``col2im_into``;
the fused and the per-sample-in-the-pool rows call production's schedules
(tinynet.ops.conv.cpu.SCHEDULES, with its ``chunk_bytes`` argument for the
chunk sizes), and the tinynet row the backend's ops, which pick a schedule
by K.

GFLOP/s counts 2*N*F*K*P per GEMM-equivalent: 2 for forward + backward
without dx, 3 with dx. Floor: the bytes of x, W, y, dy and dW (and dx).
GEMM floor: those FLOPs at the best sgemm rate of the sgemm rows, which
time the three GEMMs of the 32 -> 64 convolution (whole batch) by numpy,
by one single-threaded np.dot per thread in a prange, and by torch, in the
same run.

The bench races the variants on the two convolutions of the reference CNN
(conv32-norm-relu-pool, conv64-norm-relu-pool on 28x28 MNIST, batch 64):
1 -> 32 on 28x28 (with and without dx; the first layer needs none) and
32 -> 64 on 14x14, 3x3 kernels, padding 1, float32. It sweeps C on 28x28 for
the switch between the two production schedules (SMALL_K), and times the
public layer tn.Conv2D against torch.nn.Conv2d (forward + backward(dy);
torch's input has requires_grad=False where tinynet's layer has
requires_input_grad=False).

The depthwise table (DW_VARIANTS, the second half of this file) races the
depthwise 3x3 convolution, Conv2D(C, C, 3, padding=1, groups=C), forward,
and forward + backward with dx, float32, batch 64, on the two shapes of
DW_LAYERS (32 channels on 28x28 and 64 channels on 14x14) against torch's
F.conv2d(groups=C), with race() (every variant, torch and the public layer
take turns, so a burst of load hits them alike); then the variants that
take several input channels per group on GROUPS_LAYERS (groups=4, 32 -> 64
on 14x14) against F.conv2d(groups=4). Its variants take groups as their
last argument, as the ops do.

    python -m kernels.conv --check      every variant against the reference
    python -m kernels.conv --bench      timings, GFLOP/s, torch beside them
    python -m kernels.conv --depthwise --check / --bench    the depthwise table only
    python -m kernels.conv --breakdown  where the chunked schedule's time goes
    python -m kernels.conv --chunks     the chunked schedule's chunk sizes, raced
    python -m kernels.conv --winograd-chunks   the Winograd forward's chunk sizes, raced
    python -m kernels.conv --winograd-sweep    Winograd against im2col over channel counts

The breakdown (BREAKDOWN_LAYERS: the speedrun recipe's 24 -> 32 layer and
the reference CNN's 32 -> 64 layer) runs copies of the chunked schedule's
two kernels, ``_forward_parts`` and ``_backward_parts``, with each stage
switched on alone (im2col, the GEMMs, col2im, the copies), on the same
chunks and scratch as production; with every stage on they must give
production's results, which the breakdown checks before it times.
"""
import sys

import numpy as np
import numba

from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.conv import conv2d_output_size
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.ops.conv.cases import CASES, GROUPED_CASES, ConvCase
from kernels.common import (Row, lab_main, median_time, race, tensor_bytes, torch_layer_seconds,
                            try_torch)

BATCH = 64
LAYERS = (("1->32 28x28", 1, 32, 28), ("32->64 14x14", 32, 64, 14))
SWEEP_C = (2, 3, 4, 6, 8)
CHUNK_BYTES = 4 << 20
"""Target size of one chunk of columns in the chunked variants that run
im2col, the GEMM and col2im as separate parallel steps. On one thread 1 to
4 MB ran within 3 % of each other and 8 MB or more 15 to 40 % slower; on two
threads fewer chunks mean fewer thread-pool wake-ups, and 4 MB was best."""

LAB_CASES = (ConvCase("lab-c32-n19-chunks", 19, 32, 14, 14, 8, 3, 3, (1, 1), (1, 1)),)
"""Beside tinynet.ops.conv.cases: a batch that every chunked variant splits
into several chunks with a remainder (a sample's columns are 221 KB in
float32)."""


def _geometry(x, W, stride, padding):
    """(N, C, F, KH, KW, OH, OW, K, P) of a convolution of x by W."""
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    return N, C, F, KH, KW, OH, OW, C * KH * KW, OH * OW


_buffers = {}


def _buffer(slot, size, dtype):
    """A 1-D array of ``size`` elements (contents undefined), reused by later
    calls with the same slot and dtype, so that no timing pays the page
    faults of a fresh multi-MB array."""
    key = (slot, np.dtype(dtype))
    if key not in _buffers or _buffers[key].size < size:
        _buffers[key] = np.empty(size, dtype)
    return _buffers[key][:size]


@njit_kernel(parallel=True)
def _im2col_scalar(x, n0, nb, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, out):
    # im2col_into's layout (tap r of sample n0 + k, pixel m, goes to
    # out[k*rs + r, k*cs + m]), one index test per element.
    # Parallel axis: samples; iteration k writes only sample k's rows / columns.
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for k in numba.prange(nb):
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    r = k * rs + (c * kh + p) * kw + q
                    for i in range(OH):
                        h = i * sh + p - ph
                        for j in range(OW):
                            w = j * sw + q - pw
                            if 0 <= h < H and 0 <= w < W:
                                out[r, k * cs + i * OW + j] = x[n0 + k, c, h, w]
                            else:
                                out[r, k * cs + i * OW + j] = 0


@njit_kernel(parallel=True)
def _col2im_scalar(dcols, n0, nb, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, dx):
    # Adjoint of _im2col_scalar, summing in dx's dtype as the reference does.
    # Parallel axis: samples; iteration k reads sample k's block, writes dx[n0 + k].
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for k in numba.prange(nb):
        img = dx[n0 + k]
        img[:] = 0
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    r = k * rs + (c * kh + p) * kw + q
                    for i in range(OH):
                        h = i * sh + p - ph
                        for j in range(OW):
                            w = j * sw + q - pw
                            if 0 <= h < H and 0 <= w < W:
                                img[c, h, w] += dcols[r, k * cs + i * OW + j]


@njit_kernel(parallel=True)
def _nchw_plus_bias(yT, b, n0, y):
    # y[n0 + k, f] = yT[f, k*P:(k + 1)*P] + b[f]: a GEMM output (F, nb*P) in NCHW.
    # Parallel axis: (sample, filter); iteration t writes only y[n0 + k, f].
    F, P = y.shape[1], y.shape[2]
    for t in numba.prange(yT.shape[1] // P * F):
        k, f = t // F, t % F
        row = yT[f, k * P:(k + 1) * P]
        out = y[n0 + k, f]
        for m in range(P):
            out[m] = row[m] + b[f]


@njit_kernel(parallel=True)
def _transpose_dy_and_sum(dy, n0, dyT, dbias):
    # dyT[f, k*P:(k + 1)*P] = dy[n0 + k, f] (NCHW to (F, nb*P)), and
    # dbias[n0 + k, f] = the sum of dy[n0 + k, f] in float64.
    # Parallel axis: (sample, filter); iteration t writes only its own slice
    # of dyT and dbias[n0 + k, f].
    F, P = dy.shape[1], dy.shape[2]
    for t in numba.prange(dyT.shape[1] // P * F):
        k, f = t // F, t % F
        dyT[f, k * P:(k + 1) * P] = dy[n0 + k, f]
        row = dy[n0 + k, f]
        total = np.float64(0.0)
        for m in range(P):
            total += row[m]
        dbias[n0 + k, f] = total


def naive_forward(x, W, b, stride, padding):
    """The naive port, the design's starting point: im2col with prange over
    the batch and an index test per element, columns (N, K, P); ``np.matmul``
    runs one GEMM per sample (y, and dcols in the backward) and dW is the sum
    of N per-sample GEMMs; bias and db in NumPy."""
    N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
    cols = np.empty((N, K, P), dtype=x.dtype)
    _im2col_scalar(x, 0, N, KH, KW, *stride, *padding, OH, OW, K, 0, cols.reshape(N * K, P))
    y = np.matmul(W.reshape(F, K), cols)
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, OH, OW), cols


def naive_backward(dy, x, W, cols, stride, padding, has_bias, need_dx):
    N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
    dy3 = dy.reshape(N, F, P)
    dW = np.matmul(dy3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
    db = dy3.sum(axis=(0, 2)) if has_bias else None
    dx = None
    if need_dx:
        dcols = np.matmul(W.reshape(F, K).T, dy3)
        dx = np.empty(x.shape, dtype=x.dtype)
        _col2im_scalar(dcols.reshape(N * K, P), 0, N, KH, KW, *stride, *padding, OH, OW, K, 0,
                       dx)
    return dx, dW, db


def _whole_batch(im2col, col2im):
    """One GEMM per product over the whole batch: columns (K, N*P). y^T = Wm
    cols is (F, N*P), so one kernel copies it to NCHW and adds the bias; one
    kernel copies dy to dy^T (F, N*P) and sums db on the way; dW = dy^T
    cols^T and dcols = Wm^T dy^T are single GEMMs. im2col / col2im over
    (sample, channel) by the kernels given."""

    def forward(x, W, b, stride, padding):
        N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
        cols = np.empty((K, N * P), dtype=x.dtype)
        im2col(x, 0, N, KH, KW, *stride, *padding, OH, OW, 0, P, cols)
        y = np.empty((N, F, P), dtype=x.dtype)
        _nchw_plus_bias(W.reshape(F, K) @ cols, np.zeros(F, x.dtype) if b is None else b, 0, y)
        return y.reshape(N, F, OH, OW), cols

    def backward(dy, x, W, cols, stride, padding, has_bias, need_dx):
        N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
        dyT = np.empty((F, N * P), dtype=dy.dtype)
        dbias = np.empty((N, F), dtype=np.float64)
        _transpose_dy_and_sum(dy.reshape(N, F, P), 0, dyT, dbias)
        dx = None
        if need_dx:
            dx = np.empty(x.shape, dtype=x.dtype)
            col2im(W.reshape(F, K).T @ dyT, 0, N, KH, KW, *stride, *padding, OH, OW, 0, P, dx)
        db = dbias.sum(axis=0).astype(dy.dtype) if has_bias else None
        return dx, (dyT @ cols.T).reshape(W.shape), db

    forward.__doc__ = _whole_batch.__doc__
    return forward, backward


def _chunked(dW_transposed):
    """The whole-batch schedule with the production column kernels, in
    chunks of nb samples whose columns are about CHUNK_BYTES, so they stay in
    cache between im2col and the GEMM, and dcols between the GEMM and col2im;
    the backward rebuilds each chunk's columns from x instead of caching the
    whole (K, N*P) array. dW = dy^T cols^T, or with ``dW_transposed`` dW^T =
    cols dy^T: the same product in the orientation OpenBLAS runs faster. The
    chunks' parts of dW are summed in float64."""

    def forward(x, W, b, stride, padding):
        N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
        nb = cpu_conv.chunk_samples(N, K, P, x.itemsize, CHUNK_BYTES)
        cols_buf = _buffer("cols", K * nb * P, x.dtype)
        yT_buf = _buffer("yT", F * nb * P, x.dtype)
        bias = np.zeros(F, x.dtype) if b is None else b
        y = np.empty((N, F, P), dtype=x.dtype)
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            cols = cols_buf[:K * m * P].reshape(K, m * P)
            cpu_conv.im2col_into(x, n0, m, KH, KW, *stride, *padding, OH, OW, 0, P, cols)
            yT = yT_buf[:F * m * P].reshape(F, m * P)
            np.matmul(W.reshape(F, K), cols, out=yT)
            _nchw_plus_bias(yT, bias, n0, y)
        return y.reshape(N, F, OH, OW), None

    def backward(dy, x, W, cache, stride, padding, has_bias, need_dx):
        N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
        nb = cpu_conv.chunk_samples(N, K, P, x.itemsize, CHUNK_BYTES)
        WmT = np.ascontiguousarray(W.reshape(F, K).T)
        dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
        dW_sum = np.zeros((K, F) if dW_transposed else (F, K), dtype=np.float64)
        dW_part = np.empty(dW_sum.shape, dtype=x.dtype)
        dbias = np.empty((N, F), dtype=np.float64)
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            dyT = _buffer("dyT", F * m * P, x.dtype).reshape(F, m * P)
            _transpose_dy_and_sum(dy.reshape(N, F, P), n0, dyT, dbias)
            cols = _buffer("cols", K * m * P, x.dtype).reshape(K, m * P)
            cpu_conv.im2col_into(x, n0, m, KH, KW, *stride, *padding, OH, OW, 0, P, cols)
            if dW_transposed:
                np.matmul(cols, dyT.T, out=dW_part)
            else:
                np.matmul(dyT, cols.T, out=dW_part)
            dW_sum += dW_part
            if need_dx:
                dcols = _buffer("dcols", K * m * P, x.dtype).reshape(K, m * P)
                np.matmul(WmT, dyT, out=dcols)
                cpu_conv.col2im_into(dcols, n0, m, KH, KW, *stride, *padding, OH, OW, 0, P, dx)
        dW = (dW_sum.T if dW_transposed else dW_sum).astype(x.dtype).reshape(W.shape)
        return dx, dW, (dbias.sum(axis=0).astype(x.dtype) if has_bias else None)

    forward.__doc__ = _chunked.__doc__
    return forward, backward


def _columns_with_ones(x, KH, KW, stride, padding, ones_row):
    """The columns of the batch, (N, K + ones_row, P); the extra row is ones."""
    N, C, H, Wd = x.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    R = C * KH * KW + ones_row
    cols = np.empty((N, R, OH * OW), dtype=x.dtype)
    cpu_conv.im2col_into(x, 0, N, KH, KW, *stride, *padding, OH, OW, R, 0,
                         cols.reshape(N * R, OH * OW))
    if ones_row:
        cols[:, R - 1] = 1
    return cols


def ones_row_forward(x, W, b, stride, padding):
    """Per sample with a ones row: columns (N, K + 1, P) whose last row is 1.
    [Wm | b] [cols[n]; 1] puts the bias in the GEMM and y lands in NCHW (no
    transposes); [dW | db] = sum_n dy[n] [cols[n]; 1]^T gives db as the last
    column of the same GEMMs (summed over the batch in float64). One small
    GEMM per sample (numpy's matmul) is cheap when K is small and slow when
    K is large."""
    N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
    cols = _columns_with_ones(x, KH, KW, stride, padding, b is not None)
    Wb = W.reshape(F, K) if b is None else np.concatenate([W.reshape(F, K), b[:, None]], axis=1)
    # (F, R) @ (N, R, P) -> (N, F, P): y in NCHW, bias included.
    return np.matmul(Wb, cols).reshape(N, F, OH, OW), cols


def ones_row_backward(dy, x, W, cols, stride, padding, has_bias, need_dx):
    N, C, F, KH, KW, OH, OW, K, P = _geometry(x, W, stride, padding)
    if cols is None or cols.shape[1] < K + has_bias:
        cols = _columns_with_ones(x, KH, KW, stride, padding, has_bias)
    dy3 = dy.reshape(N, F, P)
    dWb = np.matmul(dy3, cols.transpose(0, 2, 1)).sum(axis=0, dtype=np.float64)
    dx = None
    if need_dx:
        dcols = _buffer("dcols", N * K * P, dy.dtype).reshape(N, K, P)
        np.matmul(np.ascontiguousarray(W.reshape(F, K).T), dy3, out=dcols)
        dx = np.empty(x.shape, dtype=dy.dtype)
        cpu_conv.col2im_into(dcols.reshape(N * K, P), 0, N, KH, KW, *stride, *padding, OH, OW,
                             K, 0, dx)
    db = dWb[:, K].astype(dy.dtype) if has_bias else None
    return dx, dWb[:, :K].astype(dy.dtype).reshape(W.shape), db


@njit_kernel()
def _pad_planes(x, n, ph, pw, xp):
    """xp[c] = x[n, c] padded with zeros to (H + 2*ph, W + 2*pw), flat, in float64."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Wp = W + 2 * pw
    xp[:] = 0
    for c in range(C):
        for h in range(H):
            dst = xp[c, (h + ph) * Wp + pw:(h + ph) * Wp + pw + W]
            src = x[n, c, h]
            for w in range(W):
                dst[w] = src[w]


@njit_kernel(parallel=True)
def _direct_forward(x, W, b, ph, pw, OH, OW, y):
    # Parallel axis: samples; iteration n writes only y[n].
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    Wp = Wd + 2 * pw
    L = OH * Wp
    for n in numba.prange(N):
        xp = np.empty((C, (H + 2 * ph) * Wp + KW), np.float64)
        _pad_planes(x, n, ph, pw, xp)
        acc = np.empty(L, np.float64)
        for f in range(F):
            acc[:] = b[f]
            for c in range(C):
                for p in range(KH):
                    for q in range(KW):
                        w = np.float64(W[f, c, p, q])
                        src = xp[c, p * Wp + q:p * Wp + q + L]
                        for m in range(L):
                            acc[m] += w * src[m]
            for i in range(OH):
                dst = y[n, f, i]
                src = acc[i * Wp:i * Wp + OW]
                for j in range(OW):
                    dst[j] = src[j]


@njit_kernel(parallel=True)
def _direct_dW(dy, x, ph, pw, KH, KW, dWn, dbn):
    # dWn[n] and dbn[n] are sample n's sums; the caller adds them over n.
    # Parallel axis: samples; iteration n writes only dWn[n], dbn[n].
    N, C, H, Wd = x.shape
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    Wp = Wd + 2 * pw
    L = OH * Wp
    for n in numba.prange(N):
        xp = np.empty((C, (H + 2 * ph) * Wp + KW), np.float64)
        _pad_planes(x, n, ph, pw, xp)
        dyw = np.zeros(L, np.float64)
        for f in range(F):
            s = 0.0
            for i in range(OH):
                dst = dyw[i * Wp:i * Wp + OW]
                src = dy[n, f, i]
                for j in range(OW):
                    dst[j] = src[j]
                    s += src[j]
            dbn[n, f] = s
            for c in range(C):
                for p in range(KH):
                    for q in range(KW):
                        src = xp[c, p * Wp + q:p * Wp + q + L]
                        t = 0.0
                        for m in range(L):
                            t += dyw[m] * src[m]
                        dWn[n, f, c, p, q] = t


@njit_kernel(parallel=True)
def _direct_dx(dy, W, ph, pw, dx):
    # Parallel axis: samples; iteration n writes only dx[n].
    N, C, H, Wd = dx.shape
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, KW = W.shape[2], W.shape[3]
    Wp = Wd + 2 * pw
    L = OH * Wp
    for n in numba.prange(N):
        dxp = np.zeros((C, (H + 2 * ph) * Wp + KW), np.float64)
        dyw = np.zeros(L, np.float64)
        for f in range(F):
            for i in range(OH):
                dst = dyw[i * Wp:i * Wp + OW]
                src = dy[n, f, i]
                for j in range(OW):
                    dst[j] = src[j]
            for c in range(C):
                for p in range(KH):
                    for q in range(KW):
                        w = np.float64(W[f, c, p, q])
                        dst = dxp[c, p * Wp + q:p * Wp + q + L]
                        for m in range(L):
                            dst[m] += w * dyw[m]
        for c in range(C):
            for h in range(H):
                dst = dx[n, c, h]
                src = dxp[c, (h + ph) * Wp + pw:(h + ph) * Wp + pw + Wd]
                for w in range(Wd):
                    dst[w] = src[w]


def direct_forward(x, W, b, stride, padding):
    """Direct, no im2col (stride 1): each sample's image is copied into a zero
    padded plane of width Wp = W + 2*pw; output row i is computed on that
    width, so every tap is one contiguous multiply-add over OH*Wp elements
    (the extra columns are dropped); dW is a dot product of the same shifted
    planes with dy; dx scatters dy back the same way. float64 accumulators."""
    N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)[:7]
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    bias = np.zeros(F, dtype=x.dtype) if b is None else b
    _direct_forward(x, W, bias, *padding, OH, OW, y)
    return y, None


def direct_backward(dy, x, W, cache, stride, padding, has_bias, need_dx):
    N, F = dy.shape[:2]
    dWn = np.empty((N,) + W.shape, dtype=np.float64)
    dbn = np.empty((N, F), dtype=np.float64)
    _direct_dW(dy, x, *padding, W.shape[2], W.shape[3], dWn, dbn)
    db = dbn.sum(axis=0).astype(x.dtype) if has_bias else None
    dx = None
    if need_dx:
        dx = np.empty(x.shape, dtype=x.dtype)
        _direct_dx(dy, W, *padding, dx)
    return dx, dWn.sum(axis=0).astype(x.dtype), db


STRIDE_1_ONLY = (direct_forward,)
"""Forwards of variants that handle stride 1 only."""


def winograd_forward(x, W, b, stride, padding):
    """Production's Winograd F(2x2, 3x3) forward (``forward_winograd``, 3x3
    kernels with stride 1), whatever C, on any input (no finite check)."""
    return cpu_conv.forward_winograd(x, W, b, padding)


WINOGRAD_ONLY = (winograd_forward,)
"""Forwards of variants that handle 3x3 kernels with stride 1 only."""


def _production(name, chunk_bytes=None):
    """Production's schedule ``name`` (tinynet.ops.conv.cpu.SCHEDULES), with
    columns of about ``chunk_bytes`` per chunk when given."""
    forward, backward = cpu_conv.SCHEDULES[name]
    if chunk_bytes is None:
        return forward, backward

    def forward_sized(x, W, b, stride, padding):
        return forward(x, W, b, stride, padding, chunk_bytes=chunk_bytes)

    def backward_sized(dy, x, W, cache, stride, padding, has_bias, need_dx):
        return backward(dy, x, W, cache, stride, padding, has_bias, need_dx,
                        chunk_bytes=chunk_bytes)
    return forward_sized, backward_sized


VARIANTS = {
    "1 naive port": (naive_forward, naive_backward),
    "2 whole-batch GEMMs": _whole_batch(_im2col_scalar, _col2im_scalar),
    "3 + vector im2col": _whole_batch(cpu_conv.im2col_into, cpu_conv.col2im_into),
    "4 chunked": _chunked(dW_transposed=False),
    "5 chunked, dW^T": _chunked(dW_transposed=True),
    "6 per-sample, ones row": (ones_row_forward, ones_row_backward),
    "7 direct": (direct_forward, direct_backward),
    "8 fused, BLAS in prange": _production("chunks"),
    "8 fused, 1 MB chunks": _production("chunks", 1 << 20),
    "8 fused, 2 MB chunks": _production("chunks", 2 << 20),
    "9 per-sample in the pool": _production("samples"),
    "10 tinynet": (cpu.conv2d_forward, cpu.conv2d_backward),
    "11 Winograd forward, fused backward": (winograd_forward, cpu_conv.SCHEDULES["chunks"][1]),
}
"""Every variant, numbered in the order they were written. Fused, BLAS in
prange is production's "chunks" schedule (K > SMALL_K): one prange over
chunks of samples (columns of about FUSED_CHUNK_BYTES, in the core's L2
cache); each chunk, in one thread, builds its columns, calls a
single-threaded BLAS GEMM (numba's ``np.dot``, so numba's and BLAS's
threads never compete for cores), and adds the bias (forward) or folds dy^T
with db's sums, computes its dW^T part, dcols and col2im (backward); rows
for 1 MB and 2 MB chunks beside it. Per-sample in the pool is production's
"samples" schedule (K <= SMALL_K): the ones-row variant as a prange over
samples, each sample's im2col (with the ones row) and its GEMMs
single-threaded BLAS calls in one thread, dW summed in float64 in sample
order. The tinynet row is the backend's op, which picks one of the two by
K, and for a 3x3 kernel with stride 1 under the fused schedule runs the
Winograd forward (of row 11) when x and W are finite. Winograd forward,
fused backward: F(2x2, 3x3), 16 GEMMs of (F, C) by (C, tiles) per chunk of
samples between scalar input and output transforms, then the fused
schedule's backward."""


def _check_case(rng, case):
    x64 = rng.standard_normal(case.x_shape)
    W64 = rng.standard_normal(case.w_shape) / np.sqrt(case.K)
    b64 = rng.standard_normal(case.F) if case.bias else None
    y_ref, cache = ref.conv2d_forward(x64, W64, b64, case.stride, case.padding)
    dy64 = rng.standard_normal(y_ref.shape)
    grads_ref = ref.conv2d_backward(dy64, x64, W64, cache, case.stride, case.padding, case.bias,
                                    case.need_dx)
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-4)):
        x, W, b, dy = (None if a is None else a.astype(dtype) for a in (x64, W64, b64, dy64))
        for name, (forward, backward) in VARIANTS.items():
            if forward in STRIDE_1_ONLY and case.stride != (1, 1):
                continue
            if forward in WINOGRAD_ONLY and (case.stride != (1, 1) or case.kernel != (3, 3)):
                continue
            y, cache = forward(x, W, b, case.stride, case.padding)
            got = (y,) + tuple(backward(dy, x, W, cache, case.stride, case.padding, case.bias,
                                        case.need_dx))
            for what, g, want in zip(("y", "dx", "dW", "db"), got, (y_ref,) + grads_ref):
                if want is None and g is None:
                    continue
                scale = max(1.0, float(np.abs(want).max())) if want is not None else 1.0
                if (g is None or want is None or g.dtype != dtype
                        or not np.allclose(g, want, rtol=tol, atol=tol * scale)):
                    raise AssertionError(f"variant {name}: {what} wrong for {dtype.__name__} "
                                         f"case {case.name}")


def check():
    """Every variant against tinynet.backends.ref (float64) on every case of
    tinynet.ops.conv.cases and LAB_CASES, in float64 and float32; then the
    depthwise table (check_depthwise)."""
    rng = np.random.default_rng(0)
    for case in CASES + LAB_CASES:
        _check_case(rng, case)
    check_depthwise()


def _torch_seconds(torch, x, W, dy, need_dx):
    """torch.nn.Conv2d forward + backward(dy), 3x3 padding 1."""
    conv = torch.nn.Conv2d(W.shape[1], W.shape[0], 3, padding=1)
    return torch_layer_seconds(torch, conv, x, dy, input_grad=need_dx, repeat=21)


def _inputs(C, F, H):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, C, H, H)).astype(np.float32)
    W = (0.1 * rng.standard_normal((F, C, 3, 3))).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    dy = rng.standard_normal((BATCH, F, H, H)).astype(np.float32)
    return x, W, b, dy


def _flops_bytes(x, W, dy, need_dx):
    gemm = 2 * x.shape[0] * W.size * dy.shape[2] * dy.shape[3]
    floor = tensor_bytes(x, W, dy, dy, W) + (x.nbytes if need_dx else 0)
    return gemm * (3 if need_dx else 2), floor


@njit_kernel(parallel=True)
def _dot_blocks(A, Bb, Cb):
    # Cb[i] = A @ Bb[i], one single-threaded BLAS call per block.
    # Parallel axis: blocks; block i writes only Cb[i].
    for i in numba.prange(Bb.shape[0]):
        np.dot(A, Bb[i], Cb[i])


def sgemm_rows(torch):
    """The three GEMMs of the 32 -> 64 convolution over the whole batch,
    float32: y^T = Wm cols (64 x 288 x 12544), dW^T = cols dy^T (288 x 12544
    x 64) and dcols = Wm^T dy^T (288 x 64 x 12544), each by numpy's matmul
    (BLAS's own threads), by one single-threaded np.dot per thread on
    blocks of 4 samples in a prange (as the fused schedule runs them) and
    by torch.matmul. The best rate is the GEMM floor's rate."""
    from tinynet.threads import single_threaded_kernel_blas
    rng = np.random.default_rng(0)
    F, K, P, N, nb = 64, 288, 196, BATCH, 4
    Wm = rng.standard_normal((F, K)).astype(np.float32)
    WmT = np.ascontiguousarray(Wm.T)
    cols = rng.standard_normal((K, N * P)).astype(np.float32)
    dyT = rng.standard_normal((F, N * P)).astype(np.float32)
    def blocks(a):
        return np.ascontiguousarray(a.reshape(a.shape[0], N // nb, nb * P).transpose(1, 0, 2))
    cols_b, dyT_b = blocks(cols), blocks(dyT)
    yT_b, dcols_b = np.empty_like(dyT_b), np.empty_like(cols_b)
    flops = 2 * F * K * N * P
    cases = [("sgemm y^T = Wm cols", lambda: Wm @ cols, lambda: _dot_blocks(Wm, cols_b, yT_b),
              (Wm, cols)),
             ("sgemm dcols = Wm^T dy^T", lambda: WmT @ dyT,
              lambda: _dot_blocks(WmT, dyT_b, dcols_b), (WmT, dyT))]
    rows = []
    for op, numpy_gemm, pool_gemm, (a, b) in cases:
        rows.append(Row(op, "numpy matmul", median_time(numpy_gemm), flops=flops))
        with single_threaded_kernel_blas():
            rows.append(Row(op, "np.dot per thread, prange", median_time(pool_gemm),
                            flops=flops))
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            rows.append(Row(op, "torch.matmul", median_time(lambda: ta @ tb), flops=flops))
    dWT = np.empty((K, F), np.float32)
    rows.append(Row("sgemm dW^T = cols dy^T", "numpy matmul",
                    median_time(lambda: np.matmul(cols, dyT.T, out=dWT)), flops=flops))
    if torch is not None:
        tc, td = torch.from_numpy(cols), torch.from_numpy(dyT)
        rows.append(Row("sgemm dW^T = cols dy^T", "torch.matmul",
                        median_time(lambda: tc @ td.T), flops=flops))
    return rows


def _bench_variants(rows, torch, label, C, F, H, variants, need_dx_cases, gemm_rate=None):
    x, W, b, dy = _inputs(C, F, H)
    for need_dx in need_dx_cases:
        op = f"{label} {'fwd+bwd' if need_dx else 'fwd+bwd no dx'}"
        flops, floor = _flops_bytes(x, W, dy, need_dx)
        t_torch = _torch_seconds(torch, x, W, dy, need_dx) if torch is not None else None
        for name in variants:
            fwd, bwd = VARIANTS[name]

            def step():
                _, cache = fwd(x, W, b, (1, 1), (1, 1))
                bwd(dy, x, W, cache, (1, 1), (1, 1), True, need_dx)
            rows.append(Row(op, name, median_time(step, repeat=21), floor, flops, t_torch,
                            gemm_rate))


def _bench_layers(rows, torch, gemm_rate=None):
    """The targets: tn.Conv2D forward + backward against torch.nn.Conv2d."""
    import tinynet as tn
    for label, C, F, H in LAYERS:
        x, _, _, dy = _inputs(C, F, H)
        for need_dx in ((False, True) if C == 1 else (True,)):
            layer = tn.Conv2D(C, F, 3, padding=1)
            layer.requires_input_grad = need_dx

            def step():
                layer.zero_grad()  # as torch's side, whose grads are set to None each time
                layer.forward(x)
                layer.backward(dy)
            flops, floor = _flops_bytes(x, layer.weight.data, dy, need_dx)
            t_torch = _torch_seconds(torch, x, layer.weight.data, dy, need_dx) if torch else None
            op = f"Conv2D {label.split()[0]} {'fwd+bwd' if need_dx else 'fwd+bwd no dx'}"
            seconds = median_time(step, repeat=21)
            rows.append(Row(op, f"layer, tinynet {tn.backend_name()}", seconds, floor, flops,
                            t_torch, gemm_rate))


def bench():
    torch = try_torch()
    rows = sgemm_rows(torch)
    rate = max(r.flops / r.seconds for r in rows)
    all_but_direct = [name for name, (fwd, _) in VARIANTS.items() if fwd not in STRIDE_1_ONLY]
    _bench_variants(rows, torch, LAYERS[0][0], 1, 32, 28, list(VARIANTS), (False, True), rate)
    _bench_variants(rows, torch, LAYERS[1][0], 32, 64, 14, all_but_direct, (True,), rate)
    for C in SWEEP_C:
        _bench_variants(rows, torch, f"{C}->32 28x28 K={9 * C}", C, 32, 28,
                        ("5 chunked, dW^T", "6 per-sample, ones row", "8 fused, BLAS in prange",
                         "9 per-sample in the pool"),
                        (True,), rate)
    _bench_layers(rows, torch, rate)
    return rows + bench_depthwise()


# -- the depthwise table ---------------------------------------------------------
#
# One input channel per group (groups = C, depthwise when F = C): each output
# plane y[n, f] is a KH x KW correlation of one input plane. K = KH*KW is far
# too short for a GEMM; the variants race the im2col schedules against direct
# kernels over (sample, channel) planes.

DW_LAYERS = (("dw 32x28x28", 32, 28), ("dw 64x14x14", 64, 14))
"""(label, C, H = W) of the depthwise 3x3 convolutions raced, batch BATCH."""


def naive_grouped_forward(x, W, b, stride, padding, groups):
    """The naive port, once per group: the group's channels and filters
    sliced out and convolved by naive_forward (im2col with an index test per
    element, one GEMM per sample), the outputs concatenated."""
    Cg, Fg = x.shape[1] // groups, W.shape[0] // groups
    parts = [naive_forward(np.ascontiguousarray(x[:, g * Cg:(g + 1) * Cg]),
                           W[g * Fg:(g + 1) * Fg], None if b is None else b[g * Fg:(g + 1) * Fg],
                           stride, padding) for g in range(groups)]
    return np.concatenate([y for y, _ in parts], axis=1), [cols for _, cols in parts]


def naive_grouped_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups):
    Cg, Fg = x.shape[1] // groups, W.shape[0] // groups
    grads = [naive_backward(np.ascontiguousarray(dy[:, g * Fg:(g + 1) * Fg]),
                            np.ascontiguousarray(x[:, g * Cg:(g + 1) * Cg]),
                            W[g * Fg:(g + 1) * Fg], cache[g], stride, padding, has_bias, need_dx)
             for g in range(groups)]
    dx = np.concatenate([g[0] for g in grads], axis=1) if need_dx else None
    db = np.concatenate([g[2] for g in grads]) if has_bias else None
    return dx, np.concatenate([g[1] for g in grads]), db


@njit_kernel()
def _dw_pad(xs, H, W, ph, pw, xp):
    """xp = the plane xs (H*W,) zero-padded to width Wp = W + 2*pw, flat, with
    a zero tail."""
    Wp = W + 2 * pw
    xp[:] = 0
    for h in range(H):
        dst = xp[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W]
        src = xs[h * W:(h + 1) * W]
        for w in range(W):
            dst[w] = src[w]


@njit_kernel(parallel=True)
def _dw_forward(x, W, b, ph, pw, OH, OW, one_pass, xp_ws, acc_ws, y):
    # Stride 1, one input channel per group (filter f reads channel f // M):
    # each (n, c) plane padded once into xp of width Wp; output row i computed
    # on that width makes tap (p, q) a contiguous pass over xp[p*Wp + q:]
    # (tap by tap into acc, or with ``one_pass`` a 3x3 kernel's nine taps in
    # one pass); sums in acc_ws's dtype.
    # Parallel axis: (sample, channel) planes; iteration (n, c) writes only
    # y[n, c*M:(c + 1)*M] and scratch row numba.get_thread_id().
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
        _dw_pad(x[n, c].reshape(H * Wd), H, Wd, ph, pw, xp)
        acc = acc_ws[tid, :L]
        for f in range(c * M, (c + 1) * M):
            w = W[f, 0]
            if one_pass:
                r0, r1, r2 = xp[0:L + 2], xp[Wp:Wp + L + 2], xp[2 * Wp:2 * Wp + L + 2]
                for m in range(L):
                    acc[m] = (b[f] + w[0, 0] * r0[m] + w[0, 1] * r0[m + 1] + w[0, 2] * r0[m + 2]
                              + w[1, 0] * r1[m] + w[1, 1] * r1[m + 1] + w[1, 2] * r1[m + 2]
                              + w[2, 0] * r2[m] + w[2, 1] * r2[m + 1] + w[2, 2] * r2[m + 2])
            else:
                for m in range(L):
                    acc[m] = b[f]
                for p in range(KH):
                    for q in range(KW):
                        src = xp[p * Wp + q:p * Wp + q + L]
                        for m in range(L):
                            acc[m] += w[p, q] * src[m]
            for i in range(OH):
                row = y[n, f, i]
                for j in range(OW):
                    row[j] = acc[i * Wp + j]


@njit_kernel(parallel=True)
def _dw_backward(dy, x, W, ph, pw, need_dx, one_pass, select, valid, xp_ws, dyd_ws, acc_ws,
                 dWn, dbn, dx):
    # Stride 1. dy[n, f] laid out on the padded width after a margin of
    # KH - 1 zero rows and KW - 1 zero columns: dyd[off + i*Wp + j], off =
    # (KH - 1)*Wp + KW - 1, zero elsewhere. Tap by tap: dW[f, p, q] = dyd .
    # xp[p*Wp + q:] and dxp[p*Wp + q:] += W[f, 0, p, q] * dyd (with ``select``
    # only at the valid positions, so that inf and NaN reach what they reach in
    # the reference), sums in dWn's and acc_ws's dtype. With ``one_pass`` (3x3):
    # the nine dW sums in one pass, and dx as the 3x3 correlation of the
    # margined dyd with the flipped kernel, one pass, no select.
    # Parallel axis: (sample, channel) planes; iteration (n, c) writes only
    # dWn[n, f], dbn[n, f] of its filters, dx[n, c] and scratch row
    # numba.get_thread_id().
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = dy.shape[2], dy.shape[3]
    M = F // C
    Wp = Wd + 2 * pw
    L = OH * Wp
    off = (KH - 1) * Wp + KW - 1
    for t in numba.prange(N * C):
        n = t // C
        c = t - n * C
        tid = numba.get_thread_id()
        xp = xp_ws[tid]
        _dw_pad(x[n, c].reshape(H * Wd), H, Wd, ph, pw, xp)
        dydm = dyd_ws[tid]
        dydm[:] = 0
        dyd = dydm[off:off + L]
        acc = acc_ws[tid]
        acc[:] = 0
        for f in range(c * M, (c + 1) * M):
            total = 0.0
            for i in range(OH):
                row = dy[n, f, i]
                for j in range(OW):
                    dyd[i * Wp + j] = row[j]
                    total += row[j]
            dbn[n, f] = total
            w = W[f, 0]
            if one_pass:
                r0, r1, r2 = xp[0:L + 2], xp[Wp:Wp + L + 2], xp[2 * Wp:2 * Wp + L + 2]
                zero = dWn.dtype.type(0)
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
                dW = dWn[n, f]
                dW[0], dW[1], dW[2], dW[3], dW[4] = s00, s01, s02, s10, s11
                dW[5], dW[6], dW[7], dW[8] = s12, s20, s21, s22
                if need_dx:
                    # dx[h, v] = sum_{p, q} w[2 - p, 2 - q] * a0[(h + p)*Wp + q + v],
                    # a0 = dydm[ph*Wp + pw:], summed on width Wp in acc.
                    a0 = dydm[ph * Wp + pw:]
                    a1, a2 = a0[Wp:], a0[2 * Wp:]
                    for m in range(H * Wp):
                        acc[m] += (w[2, 2] * a0[m] + w[2, 1] * a0[m + 1] + w[2, 0] * a0[m + 2]
                                   + w[1, 2] * a1[m] + w[1, 1] * a1[m + 1] + w[1, 0] * a1[m + 2]
                                   + w[0, 2] * a2[m] + w[0, 1] * a2[m + 1] + w[0, 0] * a2[m + 2])
            else:
                zero, zero_acc = dWn.dtype.type(0), acc.dtype.type(0)
                for p in range(KH):
                    for q in range(KW):
                        src = xp[p * Wp + q:p * Wp + q + L]
                        s = zero
                        for k in range(L):
                            if select:
                                s += dyd[k] * src[k] if valid[k] else zero
                            else:
                                s += dyd[k] * src[k]
                        dWn[n, f, p * KW + q] = s
                        if need_dx:
                            dst = acc[p * Wp + q:p * Wp + q + L]
                            for k in range(L):
                                if select:
                                    dst[k] += w[p, q] * dyd[k] if valid[k] else zero_acc
                                else:
                                    dst[k] += w[p, q] * dyd[k]
        if need_dx:
            for h in range(H):
                row = dx[n, c, h]
                for v in range(Wd):
                    row[v] = acc[(h + ph) * Wp + pw + v] if not one_pass else acc[h * Wp + v]


def _direct(acc_dtype=None, one_pass=False, select=False):
    """Direct kernels over (sample, channel) planes, stride 1 (one_pass: 3x3
    only): y and dx summed in ``acc_dtype`` (None: the input's), each plane's
    dW sums too, their sum over the batch and db in float64."""

    def forward(x, W, b, stride, padding, groups):
        acc = x.dtype if acc_dtype is None else acc_dtype
        N, C, H, Wd = x.shape
        F, _, KH, KW = W.shape
        (ph, pw) = padding
        OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
        Wp = Wd + 2 * pw
        T = numba.config.NUMBA_NUM_THREADS
        xp_ws = _buffer("dw_xp", T * ((H + 2 * ph) * Wp + KW), x.dtype).reshape(T, -1)
        acc_ws = _buffer("dw_acc", T * OH * Wp, acc).reshape(T, -1)
        y = np.empty((N, F, OH, OW), dtype=x.dtype)
        bias = np.zeros(F, x.dtype) if b is None else b
        _dw_forward(x, W, bias, ph, pw, OH, OW, one_pass, xp_ws, acc_ws, y)
        return y, None

    def backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups):
        acc = x.dtype if acc_dtype is None else acc_dtype
        N, C, H, Wd = x.shape
        F, _, KH, KW = W.shape
        OH, OW = dy.shape[2], dy.shape[3]
        (ph, pw) = padding
        Hp, Wp = H + 2 * ph, Wd + 2 * pw
        T = numba.config.NUMBA_NUM_THREADS
        xp_ws = _buffer("dw_xp", T * (Hp * Wp + KW), x.dtype).reshape(T, -1)
        margin = (KH - 1) * Wp + KW - 1
        dyd_ws = _buffer("dw_dyd", T * (2 * margin + (Hp + KH) * Wp), dy.dtype).reshape(T, -1)
        acc_ws = _buffer("dw_dxp", T * (Hp * Wp + KW), acc).reshape(T, -1)
        dWn = np.empty((N, F, KH * KW), dtype=acc)
        dbn = np.empty((N, F), dtype=np.float64)
        dx = np.empty(x.shape if need_dx else (0, C, 1, 1), dtype=dy.dtype)
        valid = cpu_conv.output_positions(OH, OW, 1, 1, Wp)
        _dw_backward(dy, x, W, ph, pw, need_dx, one_pass, select, valid, xp_ws, dyd_ws, acc_ws,
                     dWn, dbn, dx)
        db = dbn.sum(axis=0).astype(dy.dtype) if has_bias else None
        dW = dWn.sum(axis=0, dtype=np.float64).astype(dy.dtype).reshape(W.shape)
        return (dx if need_dx else None), dW, db

    forward.__doc__ = _direct.__doc__
    return forward, backward


DW_VARIANTS = {
    "dw1 naive, per group": (naive_grouped_forward, naive_grouped_backward),
    "dw2 per-group GEMMs in the pool": cpu_conv.GROUPED_SCHEDULES["groups"],
    "dw3 direct, taps, float64 sums, select": _direct(np.float64, select=True),
    "dw4 direct, taps, input-dtype sums": _direct(),
    "dw5 direct, 3x3 one pass, dx gather": _direct(one_pass=True),
    "dw6 shipped direct": cpu_conv.GROUPED_SCHEDULES["depthwise"],
    "dw7 tinynet": (cpu.conv2d_forward, cpu.conv2d_backward),
}
"""The depthwise variants, numbered in the order they were written. Naive:
the naive port once per group. Per-group GEMMs: production's "groups"
schedule (im2col and one single-threaded BLAS GEMM per (sample, group) in
numba's pool). The direct ones run over (sample, channel) planes, each input
plane padded once, stride 1: tap by tap with float64 sums and a select at
the valid positions (the first direct kernel); tap by tap with sums in the
input dtype (as a GEMM's within a sample); a 3x3 kernel's nine taps in one
pass for y and dW and dx as the correlation of the zero-margined dy with the
flipped kernel (no select: exact only for finite x and W). Shipped:
production's "depthwise" schedule, the direct kernels for any kernel and
stride, sums in the input dtype: for a 3x3 kernel with stride 1 the
one-pass y, dW and dx of dw5, other kernels tap by tap, other strides row by
row (y) and on dy laid out with its strides (dW, dx); a plane or filter
holding an inf or a NaN takes the taps one by one with the select.
tinynet: the backend's ops, which pick the schedule."""
DW_STRIDE_1_ONLY = tuple(DW_VARIANTS[name][0] for name in (
    "dw3 direct, taps, float64 sums, select", "dw4 direct, taps, input-dtype sums",
    "dw5 direct, 3x3 one pass, dx gather"))
DW_3X3_ONLY = (DW_VARIANTS["dw5 direct, 3x3 one pass, dx gather"][0],)


def check_depthwise():
    """Every depthwise variant against tinynet.backends.ref (float64) on every
    case of tinynet.ops.conv.cases with one input channel per group (groups =
    C, C = 1 included), in float64 and float32; stride-1-only and 3x3-only
    variants on the cases they take."""
    rng = np.random.default_rng(0)
    for case in (c for c in CASES + GROUPED_CASES if c.Cg == 1):
        x64 = rng.standard_normal(case.x_shape)
        W64 = rng.standard_normal(case.w_shape) / np.sqrt(case.K)
        b64 = rng.standard_normal(case.F) if case.bias else None
        args = (case.stride, case.padding)
        y_ref, _ = ref.conv2d_forward(x64, W64, b64, *args, case.groups)
        dy64 = rng.standard_normal(y_ref.shape)
        grads_ref = ref.conv2d_backward(dy64, x64, W64, None, *args, case.bias, case.need_dx,
                                        case.groups)
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-4)):
            x, W, b, dy = (None if a is None else a.astype(dtype) for a in (x64, W64, b64, dy64))
            for name, (forward, backward) in DW_VARIANTS.items():
                if ((forward in DW_STRIDE_1_ONLY and case.stride != (1, 1))
                        or (forward in DW_3X3_ONLY and case.kernel != (3, 3))):
                    continue
                y, cache = forward(x, W, b, *args, case.groups)
                got = (y,) + tuple(backward(dy, x, W, cache, *args, case.bias, case.need_dx,
                                            case.groups))
                for what, g, want in zip(("y", "dx", "dW", "db"), got, (y_ref,) + grads_ref):
                    if want is None and g is None:
                        continue
                    scale = max(1.0, float(np.abs(want).max())) if want is not None else 1.0
                    if (g is None or want is None or g.dtype != dtype
                            or not np.allclose(g, want, rtol=tol, atol=tol * scale)):
                        raise AssertionError(f"variant {name}: {what} wrong for "
                                             f"{dtype.__name__} case {case.name}")


def _torch_grouped_fns(torch, x, W, b, dy, groups):
    """torch's forward and forward + backward(dy) with dx of the grouped
    convolution, by torch.nn.functional.conv2d(groups=groups), padding 1."""
    F = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(True)
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    bt = torch.from_numpy(b.copy()).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def forward():
        with torch.no_grad():
            return F.conv2d(xt, Wt, bt, padding=1, groups=groups)

    def step():
        xt.grad = Wt.grad = bt.grad = None
        F.conv2d(xt, Wt, bt, padding=1, groups=groups).backward(dyt)
    return forward, step


GROUPS_LAYERS = (("g4 32->64 14x14", 32, 64, 14, 4),)
"""(label, C, F, H = W, groups) of the grouped 3x3 convolutions with several
input channels per group raced by the variants that take them."""


def _bench_grouped(rows, torch, label, C, F, H, groups, variants):
    """Race ``variants`` (names of DW_VARIANTS), torch and the public layer
    tn.Conv2D(C, F, 3, padding=1, groups=groups) on a batch of BATCH C x H x H
    images, float32: forward, and forward + backward with dx."""
    import tinynet as tn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, C, H, H)).astype(np.float32)
    W = (0.3 * rng.standard_normal((F, C // groups, 3, 3))).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    dy = rng.standard_normal((BATCH, F, H, H)).astype(np.float32)
    conv = ((1, 1), (1, 1))
    fns = {}
    for name in variants:
        fwd, bwd = DW_VARIANTS[name]
        fns[(name, "fwd")] = lambda fwd=fwd: fwd(x, W, b, *conv, groups)
        fns[(name, "fwd+bwd")] = lambda fwd=fwd, bwd=bwd: bwd(
            dy, x, W, fwd(x, W, b, *conv, groups)[1], *conv, True, True, groups)
    if torch is not None:
        fns[("torch", "fwd")], fns[("torch", "fwd+bwd")] = _torch_grouped_fns(torch, x, W, b, dy,
                                                                              groups)
    layer = tn.Conv2D(C, F, 3, padding=1, groups=groups)

    def layer_step():
        layer.zero_grad()  # as torch's side, whose grads are set to None each time
        layer.forward(x)
        layer.backward(dy)
    fns[("layer", "fwd+bwd")] = layer_step
    t = race(fns)
    flops = 2 * BATCH * W.size * H * H
    floor = {"fwd": tensor_bytes(x, dy), "fwd+bwd": tensor_bytes(x, dy, dy, x, x)}
    for name in variants:
        for part, k in (("fwd", 1), ("fwd+bwd", 3)):
            rows.append(Row(f"{label} {part}", name, t[(name, part)], floor[part], k * flops,
                            t.get(("torch", part))))
    rows.append(Row(f"Conv2D {label} groups={groups} fwd+bwd",
                    f"layer, tinynet {tn.backend_name()}", t[("layer", "fwd+bwd")],
                    floor["fwd+bwd"], 3 * flops, t.get(("torch", "fwd+bwd"))))


def bench_depthwise():
    """Every depthwise variant, torch's F.conv2d(groups=C) and the public layer
    tn.Conv2D(C, C, 3, padding=1, groups=C) on DW_LAYERS; then the variants
    that take several input channels per group on GROUPS_LAYERS: forward, and
    forward + backward with dx, float32, raced."""
    torch = try_torch()
    rows = []
    for label, C, H in DW_LAYERS:
        _bench_grouped(rows, torch, label, C, C, H, C, list(DW_VARIANTS))
    general = [name for name, (fwd, _) in DW_VARIANTS.items()
               if fwd not in DW_STRIDE_1_ONLY + DW_3X3_ONLY + (cpu_conv.forward_depthwise,)]
    for label, C, F, H, groups in GROUPS_LAYERS:
        _bench_grouped(rows, torch, label, C, F, H, groups, general)
    return rows


# -- where the chunked schedule's time goes ------------------------------------

BREAKDOWN_LAYERS = (("speedrun 24->32 12x12, batch 256", 256, 24, 32, 12, 0),
                    ("CNN 32->64 14x14, batch 64", 64, 32, 64, 14, 1))
"""(label, N, C, F, H = W, padding) of the 3x3 stride-1 layers the breakdown splits."""


@njit_kernel(parallel=True)
def _forward_parts(x, Wm, b, kh, kw, ph, pw, OH, OW, off, OWo, nb, cols_ws, yT_ws, y, do_im2col,
                   do_gemm, do_copy):
    # cpu_conv._forward_fused (stride 1) with each stage behind a switch.
    # Parallel axis: chunks; chunk ch writes only y[ch*nb:(ch + 1)*nb] and
    # row numba.get_thread_id() of the scratch, as in production.
    N, C, H, W = x.shape
    F, K = Wm.shape
    P = OH * OW
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        cols = cols_ws[t, :K * m * P].reshape((K, m * P))
        yT = yT_ws[t, :F * m * P].reshape((F, m * P))
        if do_im2col:
            for k in range(m):
                for c in range(C):
                    cpu_conv.im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, 1, 1, ph,
                                             pw, H, W, OH, OW, cols, 0, k * P)
        if do_gemm:
            np.dot(Wm, cols, yT)
        if do_copy:
            for k in range(m):
                for f in range(F):
                    bf = b[f]
                    dst = y[n0 + k, f]
                    src = yT[f, k * P:(k + 1) * P]
                    for i in range(OH):
                        for j in range(OWo):
                            dst[i * OWo + j] = src[i * OW + off + j] + bf


@njit_kernel(parallel=True)
def _backward_parts(dy, x, WmT, kh, kw, ph, pw, OH, OW, off, OWo, nb, cols_ws, dyT_ws, dcols_ws,
                    dWT_parts, dbias, dx, do_copy, do_im2col, do_dw, do_dcols, do_col2im):
    # cpu_conv._backward_fused (stride 1, with dx) with each stage behind a
    # switch. Parallel axis: chunks, as in production (its comments).
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
            if do_copy:
                for f in range(F):
                    src = dy[n0 + k, f]
                    dst = dyT[f, k * P:(k + 1) * P]
                    s = 0.0
                    for i in range(P):
                        dst[i] = 0
                    for i in range(OH):
                        for j in range(OWo):
                            v = src[i * OWo + j]
                            dst[i * OW + off + j] = v
                            s += v
                    dbias[n0 + k, f] = s
            if do_im2col:
                for c in range(C):
                    cpu_conv.im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, 1, 1, ph,
                                             pw, H, W, OH, OW, cols, 0, k * P)
        if do_dw:
            np.dot(cols, dyT.T, dWT_parts[ch])
        dcols = dcols_ws[t, :K * m * P].reshape((K, m * P))
        if do_dcols:
            np.dot(WmT, dyT, dcols)
        if do_col2im:
            acc = np.empty(H * W, np.float64)
            for k in range(m):
                for c in range(C):
                    cpu_conv.col2im_channel(dcols, c, kh, kw, 1, 1, ph, pw, H, W, OH, OW, 0,
                                             k * P, dx[n0 + k, c].reshape(H * W), acc)


FORWARD_STAGES = (("im2col", (1, 0, 0)), ("GEMM y^T = Wm cols", (0, 1, 0)),
                  ("copy to NCHW + bias", (0, 0, 1)), ("all stages", (1, 1, 1)))
BACKWARD_STAGES = (("copy dy^T + db sums", (1, 0, 0, 0, 0)), ("im2col", (0, 1, 0, 0, 0)),
                   ("GEMM dW^T = cols dy^T", (0, 0, 1, 0, 0)),
                   ("GEMM dcols = Wm^T dy^T", (0, 0, 0, 1, 0)), ("col2im", (0, 0, 0, 0, 1)),
                   ("all stages", (1, 1, 1, 1, 1)))


def breakdown(layers=BREAKDOWN_LAYERS, repeat=30):
    """Rows (label, pass, stage, ms, share of production's time) of the chunked
    schedule's stages on ``layers``, float32; each stage alone, on the same
    chunks and scratch as production (cpu_conv.FUSED_CHUNK_BYTES), and
    production's own forward_chunks / backward_chunks last."""
    from tinynet.threads import single_threaded_kernel_blas
    rows = []
    rng = np.random.default_rng(0)
    for label, N, C, F, H, pad in layers:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        W = rng.standard_normal((F, C, 3, 3), dtype=np.float32)
        b = rng.standard_normal(F, dtype=np.float32)
        OH = OWo = H + 2 * pad - 2
        # The geometry production computes on (cpu_conv.widened: a stride-1
        # convolution narrower than its input is computed on the input's width).
        pw, off = cpu_conv.widened(H, H, 3, (1, 1), (pad, pad))
        OW = H + 2 * pw - 2
        K, P = C * 9, OH * OW
        dy = rng.standard_normal((N, F, OH, OWo), dtype=np.float32)
        nb = cpu_conv.chunk_samples(N, K, P, 4, cpu_conv.FUSED_CHUNK_BYTES)
        nbb = cpu_conv.chunk_samples(N, K, P, 4, cpu_conv.FUSED_BACKWARD_CHUNK_BYTES)
        T, chunks = numba.config.NUMBA_NUM_THREADS, (N + nbb - 1) // nbb
        cols_ws = np.zeros((T, K * max(nb, nbb) * P), np.float32)
        yT_ws = np.zeros((T, F * max(nb, nbb) * P), np.float32)
        dcols_ws = np.zeros((T, K * nbb * P), np.float32)
        parts = np.zeros((chunks, K, F), np.float32)
        dbias = np.zeros((N, F))
        y = np.empty((N, F, OH * OWo), np.float32)
        dx = np.empty_like(x)
        Wm, WmT = W.reshape(F, K), np.ascontiguousarray(W.reshape(F, K).T)

        def fwd(flags):
            _forward_parts(x, Wm, b, 3, 3, pad, pw, OH, OW, off, OWo, nb, cols_ws, yT_ws, y,
                           *flags)

        def bwd(flags):
            _backward_parts(dy.reshape(N, F, OH * OWo), x, WmT, 3, 3, pad, pw, OH, OW, off, OWo,
                            nbb, cols_ws, yT_ws, dcols_ws, parts, dbias, dx, *flags)

        with single_threaded_kernel_blas():
            fwd((1, 1, 1))
            bwd((1, 1, 1, 1, 1))
            y_prod, _ = cpu_conv.forward_chunks(x, W, b, (1, 1), (pad, pad))
            dx_prod, _, db_prod = cpu_conv.backward_chunks(dy, x, W, None, (1, 1), (pad, pad),
                                                           True, True)
            if not (np.array_equal(y.reshape(y_prod.shape), y_prod)
                    and np.array_equal(dx, dx_prod)
                    and np.array_equal(dbias.sum(axis=0).astype(np.float32), db_prod)):
                raise AssertionError(f"{label}: the breakdown's kernels differ from production's")
            prod = {"forward": median_time(
                        lambda: cpu_conv.forward_chunks(x, W, b, (1, 1), (pad, pad)),
                        repeat=repeat),
                    "backward": median_time(
                        lambda: cpu_conv.backward_chunks(dy, x, W, None, (1, 1), (pad, pad),
                                                         True, True), repeat=repeat)}
            for what, run, stages in (("forward", fwd, FORWARD_STAGES),
                                      ("backward", bwd, BACKWARD_STAGES)):
                for stage, flags in stages:
                    t = median_time(lambda: run(flags), repeat=repeat)
                    rows.append((label, what, stage, t * 1e3, t / prod[what]))
                rows.append((label, what, "production (forward_chunks / backward_chunks)",
                             prod[what] * 1e3, 1.0))
    return rows


def print_breakdown(rows, file=None):
    """The breakdown's table."""
    print(f"python -m kernels.conv --breakdown  ({numba.config.NUMBA_NUM_THREADS} threads, "
          f"float32, chunks of {cpu_conv.FUSED_CHUNK_BYTES >> 10} KB of columns forward, "
          f"{cpu_conv.FUSED_BACKWARD_CHUNK_BYTES >> 10} KB backward)", file=file)
    print(f"{'layer':<34}{'pass':<10}{'stage':<48}{'ms':>8}{'share':>7}", file=file)
    for label, what, stage, ms, share in rows:
        print(f"{label:<34}{what:<10}{stage:<48}{ms:8.3f}{share:7.2f}", file=file)


CHUNK_CHOICES = ((256, 256), (128, 256), (256, 512), (128, 512), (64, 512), (128, 1024))
"""(forward KB, backward KB) chunk sizes that ``chunks`` races."""


def _layer_arrays(rng, N, C, F, H, pad):
    """(x, W, b, dy) of a 3x3 layer of BREAKDOWN_LAYERS' form, float32, b zero."""
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    W = rng.standard_normal((F, C, 3, 3), dtype=np.float32)
    b = np.zeros(F, np.float32)
    dy = rng.standard_normal((N, F, H + 2 * pad - 2, H + 2 * pad - 2), dtype=np.float32)
    return x, W, b, dy


def chunks(layers=BREAKDOWN_LAYERS, choices=CHUNK_CHOICES, rounds=5, repeat=15):
    """{label: {(forward KB, backward KB): seconds}}: production's chunked
    forward + backward on ``layers`` with each pair of chunk sizes, raced
    (kernels.common.race), to choose FUSED_CHUNK_BYTES and
    FUSED_BACKWARD_CHUNK_BYTES on a machine."""
    rng = np.random.default_rng(0)
    out = {}
    for label, N, C, F, H, pad in layers:
        x, W, b, dy = _layer_arrays(rng, N, C, F, H, pad)

        def run(fk, bk):
            def step():
                cpu_conv.forward_chunks(x, W, b, (1, 1), (pad, pad), chunk_bytes=fk << 10)
                cpu_conv.backward_chunks(dy, x, W, None, (1, 1), (pad, pad), True, True,
                                         chunk_bytes=bk << 10)
            return step
        times = race({pair: run(*pair) for pair in choices}, rounds=rounds, repeat=repeat)
        out[label] = times
    return out


def print_chunks(result, file=None):
    """The chunk race's table: ms forward + backward per (forward, backward) KB."""
    print(f"python -m kernels.conv --chunks  ({numba.config.NUMBA_NUM_THREADS} threads, float32;"
          f" production: {cpu_conv.FUSED_CHUNK_BYTES >> 10} / "
          f"{cpu_conv.FUSED_BACKWARD_CHUNK_BYTES >> 10} KB)", file=file)
    for label, times in result.items():
        cells = "  ".join(f"{fk}/{bk} KB {1e3 * t:.2f}" for (fk, bk), t in times.items())
        print(f"{label:<34}{cells}", file=file)


WINOGRAD_CHOICES = (128, 256, 512, 1024, 2048)
"""Chunk sizes (KB of V and M per chunk) that ``winograd_chunks`` races."""


def winograd_chunks(layers=BREAKDOWN_LAYERS, choices=WINOGRAD_CHOICES, rounds=5, repeat=15):
    """{label: {name: seconds}}: production's Winograd forward on ``layers``
    with each chunk size (KB), and the chunked schedule's im2col forward
    beside them, raced (kernels.common.race), to choose WINOGRAD_CHUNK_BYTES."""
    rng = np.random.default_rng(0)
    out = {}
    for label, N, C, F, H, pad in layers:
        x, W, b, _ = _layer_arrays(rng, N, C, F, H, pad)
        fns = {f"{kb} KB": (lambda kb=kb: cpu_conv.forward_winograd(x, W, b, (pad, pad),
                                                                    chunk_bytes=kb << 10))
               for kb in choices}
        fns["im2col"] = lambda: cpu_conv.forward_chunks(x, W, b, (1, 1), (pad, pad))
        out[label] = race(fns, rounds=rounds, repeat=repeat)
    return out


WINOGRAD_SWEEP = ((28, 6, 6), (28, 8, 8), (28, 8, 32), (28, 16, 16), (28, 24, 24),
                  (14, 8, 8), (14, 16, 16), (14, 32, 8), (14, 16, 32), (14, 24, 24),
                  (14, 32, 64))
"""(H, C, F) of the 3x3 'same' layers at batch 64 that ``winograd_sweep`` races."""


def winograd_sweep(shapes=WINOGRAD_SWEEP, N=64, rounds=3, repeat=10):
    """{(H, C, F): (Winograd seconds, im2col seconds)}: production's two forwards
    raced on each shape, to choose WINOGRAD_MIN_CHANNELS."""
    rng = np.random.default_rng(0)
    out = {}
    for H, C, F in shapes:
        x, W, b, _ = _layer_arrays(rng, N, C, F, H, 1)
        t = race({"winograd": lambda: cpu_conv.forward_winograd(x, W, b, (1, 1)),
                  "im2col": lambda: cpu_conv.forward_chunks(x, W, b, (1, 1), (1, 1))},
                 rounds=rounds, repeat=repeat)
        out[(H, C, F)] = (t["winograd"], t["im2col"])
    return out


def print_winograd_sweep(result, file=None):
    """The sweep's table: forward ms of each, and Winograd / im2col."""
    print(f"python -m kernels.conv --winograd-sweep  ({numba.config.NUMBA_NUM_THREADS} threads, "
          f"float32, forward, batch 64, padding 1; production: Winograd when C and F >= "
          f"{cpu_conv.WINOGRAD_MIN_CHANNELS})", file=file)
    print(f"{'H':>3} {'C':>3} {'F':>3} {'winograd ms':>12} {'im2col ms':>10} {'ratio':>6}", file=file)
    for (H, C, F), (tw, ti) in result.items():
        print(f"{H:>3} {C:>3} {F:>3} {1e3 * tw:>12.3f} {1e3 * ti:>10.3f} {tw / ti:>6.2f}", file=file)


def print_winograd_chunks(result, file=None):
    """The Winograd chunk race's table: forward ms per chunk size, and im2col's."""
    print(f"python -m kernels.conv --winograd-chunks  ({numba.config.NUMBA_NUM_THREADS} threads, "
          f"float32, forward; production: {cpu_conv.WINOGRAD_CHUNK_BYTES >> 10} KB)", file=file)
    for label, times in result.items():
        cells = "  ".join(f"{name} {1e3 * t:.2f}" for name, t in times.items())
        print(f"{label:<34}{cells}", file=file)


def main(argv=None):
    """The lab's command line (kernels.common.lab_main); ``--depthwise``
    restricts --check and --bench to the depthwise table, ``--breakdown``
    prints where the chunked schedule's time goes, ``--chunks`` races its
    chunk sizes, ``--winograd-chunks`` the Winograd forward's, and
    ``--winograd-sweep`` races it against im2col over channel counts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--breakdown" in argv:
        return print_breakdown(breakdown())
    if "--chunks" in argv:
        return print_chunks(chunks())
    if "--winograd-chunks" in argv:
        return print_winograd_chunks(winograd_chunks())
    if "--winograd-sweep" in argv:
        return print_winograd_sweep(winograd_sweep())
    if "--depthwise" in argv:
        argv.remove("--depthwise")
        return lab_main("conv", check_depthwise, bench_depthwise, argv)
    return lab_main("conv", check, bench, argv)


if __name__ == "__main__":
    main()
