"""Kernel lab: Conv2D forward + backward (im2col + BLAS GEMM, and a direct kernel).

The op (tinynet.backends.ref.conv, the reference): x (N, C, H, W), W (F, C,
KH, KW), b (F,), stride (sh, sw), zero padding (ph, pw), y (N, F, OH, OW).
With K = C*KH*KW taps, P = OH*OW output pixels, cols[n] (K, P) the im2col
columns of sample n and Wm = W as (F, K):

    forward:   y[n] = Wm cols[n] + b
    backward:  dW = sum_n dy[n] cols[n]^T,  db = sum_{n,i,j} dy,
               dcols[n] = Wm^T dy[n],  dx = col2im(dcols)

Variants, all with the signatures of the ref ops
(``conv2d_forward(x, W, b, stride, padding) -> (y, cache)``,
``conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx)``):

1. naive port: Numba im2col / col2im with prange over the batch, an index
   test per element; columns (N, K, P); ``np.matmul`` runs one GEMM per
   sample (y and dcols) and dW is the sum of N per-sample GEMMs; bias and db
   in NumPy. This is the design's starting point.
2. one GEMM per product over the whole batch: columns (K, N*P). y^T = Wm
   cols is (F, N*P), so one kernel copies it to NCHW and adds the bias; one
   kernel copies dy to dy^T (F, N*P) and sums db on the way; dW = dy^T cols^T
   and dcols = Wm^T dy^T are single GEMMs. im2col / col2im as in 1, over
   (sample, channel).
3. 2 with vectorized im2col / col2im (the production kernels). A stride-1
   tap with OW == W is the flat image shifted by (p - ph)*W + (q - pw): one
   contiguous copy per tap, then zeros for the columns that wrap around a row
   edge. Other shapes copy row by row with unsigned indices: a signed index
   makes Numba test for negative-index wraparound, and LLVM then turns every
   copy into a gather (4x slower).
4. 3 in chunks of nb samples (columns of about 4 MB, so they stay in cache
   between im2col and the GEMM, and dcols between the GEMM and col2im); the
   backward rebuilds each chunk's columns from x instead of caching the whole
   (K, N*P) array. dW = dy^T cols^T.
5. 4 with dW^T = cols dy^T: the same product in the orientation that
   OpenBLAS runs faster. = tinynet for K > SMALL_K.
6. per sample with a ones row: columns (N, K + 1, P) whose last row is 1.
   [Wm | b] [cols[n]; 1] puts the bias in the GEMM and y lands in NCHW (no
   transposes); [dW | db] = sum_n dy[n] [cols[n]; 1]^T gives db as the last
   column of the same GEMMs. One small GEMM per sample is cheap when K is
   small and slow when K is large. = tinynet for K <= SMALL_K.
7. direct, no im2col (stride 1): each sample's image is copied into a zero
   padded plane of width Wp = W + 2*pw; output row i is computed on that
   width, so every tap is one contiguous multiply-add over OH*Wp elements
   (the extra columns are dropped); dW is a dot product of the same shifted
   planes with dy; dx scatters dy back the same way. float64 accumulators.

8. fused, BLAS in prange (= tinynet for K > SMALL_K): one prange over
   chunks of samples (columns of about FUSED_CHUNK_BYTES, in the core's L2
   cache); each chunk, in one thread, builds its columns, calls a
   single-threaded BLAS GEMM (numba's ``np.dot``, so numba's and BLAS's
   threads never compete for cores), and adds the bias (forward) or
   folds dy^T with db's sums, computes its dW^T part, dcols and col2im
   (backward). Rows for 256 KB and 2 MB chunks beside it.
9. per-sample in the pool (= tinynet for K <= SMALL_K): 6 as a prange over
   samples, each sample's im2col (with the ones row) and its GEMMs
   single-threaded BLAS calls (np.dot) in one thread, dW summed per
   thread in float64.

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
the switch between 5 and 6 (SMALL_K), and times the public layer tn.Conv2D
against torch.nn.Conv2d (forward + backward(dy); torch's input has
requires_grad=False where tinynet's layer has requires_input_grad=False).

    python -m kernels.conv --check      every variant against the reference
    python -m kernels.conv --bench      timings, GFLOP/s, torch beside them
"""
import numpy as np
import numba

from tinynet.backends import ref
from tinynet.backends.cpu import conv as cpu_conv
from tinynet.backends.cpu.jit import njit_kernel
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch

BATCH = 64
LAYERS = (("1->32 28x28", 1, 32, 28), ("32->64 14x14", 32, 64, 14))
SWEEP_C = (2, 3, 4, 6, 8)


def _geometry(x, W, stride, padding):
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = ref.conv2d_output_size(H, Wd, KH, KW, stride, padding)
    return N, C, F, KH, KW, OH, OW


@njit_kernel(parallel=True)
def _im2col_scalar(x, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, out):
    # Tap r of sample n, pixel m, goes to out[n*rs + r, n*cs + m] (see
    # tinynet.backends.cpu.conv._im2col_kernel). Parallel axis: samples;
    # iteration n writes only sample n's rows / columns.
    N, C, H, W = x.shape
    for n in numba.prange(N):
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    r = n * rs + (c * kh + p) * kw + q
                    for i in range(OH):
                        h = i * sh + p - ph
                        for j in range(OW):
                            w = j * sw + q - pw
                            if 0 <= h < H and 0 <= w < W:
                                out[r, n * cs + i * OW + j] = x[n, c, h, w]
                            else:
                                out[r, n * cs + i * OW + j] = 0


@njit_kernel(parallel=True)
def _col2im_scalar(dcols, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, dx):
    # Adjoint of _im2col_scalar, summing in dx's dtype as the reference does.
    # Parallel axis: samples; iteration n reads sample n's block, writes dx[n].
    N, C, H, W = dx.shape
    for n in numba.prange(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    dx[n, c, h, w] = 0
            for p in range(kh):
                for q in range(kw):
                    r = n * rs + (c * kh + p) * kw + q
                    for i in range(OH):
                        h = i * sh + p - ph
                        for j in range(OW):
                            w = j * sw + q - pw
                            if 0 <= h < H and 0 <= w < W:
                                dx[n, c, h, w] += dcols[r, n * cs + i * OW + j]


def fwd_v1(x, W, b, stride, padding):
    N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
    K, P = C * KH * KW, OH * OW
    cols = np.empty((N, K, P), dtype=x.dtype)
    _im2col_scalar(x, KH, KW, *stride, *padding, OH, OW, K, 0, cols.reshape(N * K, P))
    y = np.matmul(W.reshape(F, K), cols)
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, OH, OW), cols


def bwd_v1(dy, x, W, cols, stride, padding, has_bias, need_dx):
    N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
    K, P = C * KH * KW, OH * OW
    dy3 = dy.reshape(N, F, P)
    dW = np.matmul(dy3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
    db = dy3.sum(axis=(0, 2)) if has_bias else None
    dx = None
    if need_dx:
        dcols = np.matmul(W.reshape(F, K).T, dy3)
        dx = np.empty(x.shape, dtype=x.dtype)
        _col2im_scalar(dcols.reshape(N * K, P), KH, KW, *stride, *padding, OH, OW, K, 0, dx)
    return dx, dW, db


def _whole_batch(im2col_kernel, col2im_kernel):
    """Variants 2 and 3: columns (K, N*P), one GEMM per product."""

    def fwd(x, W, b, stride, padding):
        N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
        K, P = C * KH * KW, OH * OW
        cols = np.empty((K, N * P), dtype=x.dtype)
        im2col_kernel(x, KH, KW, *stride, *padding, OH, OW, 0, P, cols)
        yT = W.reshape(F, K) @ cols
        y = np.empty((N, F, P), dtype=x.dtype)
        bias = np.zeros(F, dtype=x.dtype) if b is None else b
        cpu_conv._unfold_bias(yT, bias, 0, y)
        return y.reshape(N, F, OH, OW), cols

    def bwd(dy, x, W, cols, stride, padding, has_bias, need_dx):
        N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
        K, P = C * KH * KW, OH * OW
        dyT = np.empty((F, N * P), dtype=dy.dtype)
        dbias = np.empty((N, F), dtype=np.float64)
        cpu_conv._fold_dbias(dy.reshape(N, F, P), 0, dyT, dbias)
        dW = (dyT @ cols.T).reshape(W.shape)
        db = dbias.sum(axis=0).astype(dy.dtype) if has_bias else None
        dx = None
        if need_dx:
            dcols = W.reshape(F, K).T @ dyT
            dx = np.empty(x.shape, dtype=x.dtype)
            col2im_kernel(dcols, KH, KW, *stride, *padding, OH, OW, 0, P, dx)
        return dx, dW, db

    return fwd, bwd


def _im2col_vector(x, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, out):
    cpu_conv._im2col_kernel(x, 0, x.shape[0], kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, out)


def _col2im_vector(dcols, kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, dx):
    cpu_conv._col2im_kernel(dcols, 0, dx.shape[0], kh, kw, sh, sw, ph, pw, OH, OW, rs, cs, dx)


fwd_v2, bwd_v2 = _whole_batch(_im2col_scalar, _col2im_scalar)
fwd_v3, bwd_v3 = _whole_batch(_im2col_vector, _col2im_vector)


def fwd_chunked(x, W, b, stride, padding):
    """Variants 4 and 5 (the production forward of the chunked schedule)."""
    OH, OW = _geometry(x, W, stride, padding)[-2:]
    return cpu_conv._forward_chunked(x, W, b, stride, padding, OH, OW)


def bwd_v4(dy, x, W, cache, stride, padding, has_bias, need_dx):
    N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
    K, P = C * KH * KW, OH * OW
    dy3 = dy.reshape(N, F, P)
    WmT = np.ascontiguousarray(W.reshape(F, K).T)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    nb = cpu_conv._chunk_size(N, K, P, x.itemsize)
    dW = np.zeros((F, K), dtype=np.float64)
    dW_chunk = np.empty((F, K), dtype=x.dtype)
    dbias = np.empty((N, F), dtype=np.float64)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        cols = np.empty((K, m * P), dtype=x.dtype)
        dyT = np.empty((F, m * P), dtype=x.dtype)
        cpu_conv._fold_dbias(dy3, n0, dyT, dbias)
        cpu_conv._im2col_kernel(x, n0, m, KH, KW, *stride, *padding, OH, OW, 0, P, cols)
        np.matmul(dyT, cols.T, out=dW_chunk)
        dW += dW_chunk
        if need_dx:
            dcols = WmT @ dyT
            cpu_conv._col2im_kernel(dcols, n0, m, KH, KW, *stride, *padding, OH, OW, 0, P, dx)
    db = dbias.sum(axis=0).astype(x.dtype) if has_bias else None
    return dx, dW.astype(x.dtype).reshape(W.shape), db


def bwd_v5(dy, x, W, cache, stride, padding, has_bias, need_dx):
    return cpu_conv._backward_chunked(dy, x, W, stride, padding, has_bias, need_dx)


def fwd_v6(x, W, b, stride, padding):
    OH, OW = _geometry(x, W, stride, padding)[-2:]
    return cpu_conv._forward_per_sample(x, W, b, stride, padding, OH, OW)


bwd_v6 = cpu_conv._backward_per_sample


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


def fwd_v7(x, W, b, stride, padding):
    N, C, F, KH, KW, OH, OW = _geometry(x, W, stride, padding)
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    bias = np.zeros(F, dtype=x.dtype) if b is None else b
    _direct_forward(x, W, bias, *padding, OH, OW, y)
    return y, None


def bwd_v7(dy, x, W, cache, stride, padding, has_bias, need_dx):
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


def fwd_v9(x, W, b, stride, padding):
    OH, OW = _geometry(x, W, stride, padding)[-2:]
    return cpu_conv._forward_samples_pool(x, W, b, stride, padding, OH, OW)


def _fused(chunk_bytes):
    """Variant 8 with columns of about chunk_bytes per chunk."""

    def fwd(x, W, b, stride, padding):
        OH, OW = _geometry(x, W, stride, padding)[-2:]
        return cpu_conv._forward_fused_chunks(x, W, b, stride, padding, OH, OW, chunk_bytes)

    def bwd(dy, x, W, cache, stride, padding, has_bias, need_dx):
        return cpu_conv._backward_fused_chunks(dy, x, W, stride, padding, has_bias, need_dx,
                                               chunk_bytes)
    return fwd, bwd


VARIANTS = {
    "1 naive port": (fwd_v1, bwd_v1),
    "2 whole-batch GEMMs": (fwd_v2, bwd_v2),
    "3 + vector im2col": (fwd_v3, bwd_v3),
    "4 chunked": (fwd_chunked, bwd_v4),
    "5 chunked, dW^T": (fwd_chunked, bwd_v5),
    "6 per-sample, ones row": (fwd_v6, bwd_v6),
    "7 direct": (fwd_v7, bwd_v7),
    "8 fused, BLAS in prange": _fused(cpu_conv.FUSED_CHUNK_BYTES),
    "8 fused, 1 MB chunks": _fused(1 << 20),
    "8 fused, 2 MB chunks": _fused(2 << 20),
    "9 per-sample in the pool": (fwd_v9, cpu_conv._backward_samples_pool),
}
STRIDE_1_ONLY = ("7 direct",)

# (N, C, H, W, F, (KH, KW), stride, padding): odd sizes, both schedules
# (C*KH*KW <= SMALL_K and above), stride-1 "same width" and the other shapes.
CHECK_CASES = [
    (3, 1, 7, 9, 5, (3, 3), (1, 1), (1, 1)),
    (2, 3, 6, 5, 4, (3, 3), (1, 1), (0, 0)),
    (3, 3, 7, 7, 2, (3, 3), (2, 2), (1, 1)),
    (2, 3, 5, 7, 4, (2, 3), (2, 1), (1, 0)),
    (2, 7, 5, 6, 3, (3, 3), (1, 1), (1, 1)),
    (3, 6, 7, 5, 3, (3, 1), (1, 2), (0, 1)),
    (2, 9, 6, 7, 5, (5, 5), (1, 1), (2, 2)),
    (5, 8, 4, 4, 3, (3, 3), (2, 1), (2, 1)),
]


def check():
    rng = np.random.default_rng(0)
    for N, C, H, Wd, F, kernel, stride, padding in CHECK_CASES:
        x64 = rng.standard_normal((N, C, H, Wd))
        W64 = rng.standard_normal((F, C) + kernel)
        b64 = rng.standard_normal(F)
        y_ref, _ = ref.conv2d_naive_forward(x64, W64, b64, stride, padding)
        dy64 = rng.standard_normal(y_ref.shape)
        grads_ref = ref.conv2d_naive_backward(dy64, x64, W64, None, stride, padding, True, True)
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-4)):
            x, W, b, dy = (a.astype(dtype) for a in (x64, W64, b64, dy64))
            for name, (fwd, bwd) in VARIANTS.items():
                if name in STRIDE_1_ONLY and stride != (1, 1):
                    continue
                y, cache = fwd(x, W, b, stride, padding)
                got = (y,) + tuple(bwd(dy, x, W, cache, stride, padding, True, True))
                for what, g, want in zip(("y", "dx", "dW", "db"), got, (y_ref,) + grads_ref):
                    scale = max(1.0, float(np.abs(want).max()))
                    if g.dtype != dtype or not np.allclose(g, want, rtol=tol, atol=tol * scale):
                        raise AssertionError(f"variant {name}: {what} wrong for {dtype.__name__} "
                                             f"x {x.shape}, W {W.shape}, stride {stride}, "
                                             f"padding {padding}")


def _torch_seconds(torch, x, W, dy, need_dx):
    """torch.nn.Conv2d forward + backward(dy), 3x3 padding 1."""
    conv = torch.nn.Conv2d(W.shape[1], W.shape[0], 3, padding=1)
    xt = torch.from_numpy(x).requires_grad_(need_dx)
    dyt = torch.from_numpy(dy)

    def step():
        conv.zero_grad(set_to_none=True)
        xt.grad = None
        conv(xt).backward(dyt)
    return median_time(step, repeat=21)


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
    all_but_direct = [name for name in VARIANTS if name not in STRIDE_1_ONLY]
    _bench_variants(rows, torch, LAYERS[0][0], 1, 32, 28, list(VARIANTS), (False, True), rate)
    _bench_variants(rows, torch, LAYERS[1][0], 32, 64, 14, all_but_direct, (True,), rate)
    for C in SWEEP_C:
        _bench_variants(rows, torch, f"{C}->32 28x28 K={9 * C}", C, 32, 28,
                        ("5 chunked, dW^T", "6 per-sample, ones row", "8 fused, BLAS in prange",
                         "9 per-sample in the pool"),
                        (True,), rate)
    _bench_layers(rows, torch, rate)
    return rows


if __name__ == "__main__":
    lab_main("conv", check, bench)
