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

    python -m kernels.conv --check      every variant against the reference
    python -m kernels.conv --bench      timings, GFLOP/s, torch beside them
"""
import numpy as np
import numba

from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.conv import conv2d_output_size
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.ops.conv.cases import CASES, ConvCase
from kernels.common import Row, lab_main, median_time, tensor_bytes, torch_layer_seconds, try_torch

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
K."""


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
    tinynet.ops.conv.cases and LAB_CASES, in float64 and float32."""
    rng = np.random.default_rng(0)
    for case in CASES + LAB_CASES:
        _check_case(rng, case)


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
    return rows


def main(argv=None):
    return lab_main("conv", check, bench, argv)


if __name__ == "__main__":
    main()
