"""Kernel lab: Conv2D -> MaxPool2D(2) -> ReLU fused into one pass, against the
three layers one after another.

The MNIST speedrun recipe's two blocks (tinynet/speedrun.py) are a
convolution, a 2x2 max pool at stride 2 and a ReLU. Run as three layers, the
convolution writes its whole output (14 MB for conv 1 -> 24 5x5 on 28x28 at
batch 256), the pool reads it back from memory, and the ReLU makes one more
pass over the pooled map; in the backward the pool writes a dx of the conv
output's size, three quarters zeros, which the convolution reads back. The
fused variants pool each sample (or chunk) of the convolution's output while
it is still in the core's L2 cache, and rebuild the convolution's upstream
gradient there in the backward, so that only the pooled map, its taps and
the image cross memory.

The op: z = relu(maxpool2x2(conv2d(x, W, b))), stride 1, padding (ph, pw);
its forward returns (z, cache), its backward(dz, cache) returns (dx or None,
dW, db). The max pool is the contract's (tinynet/ops/pool/__init__.py): the
first maximum of a window, a NaN taking over; the ReLU passes dz where not
(p <= 0), so a NaN passes it. The pooled maps drop an odd last row or
column, as the pool does.

Variants:

1. three ops: the cpu backend's conv2d_forward, maxpool2d_forward and
   relu_forward, and their backwards in reverse (what the layers run today);
2. fused, per sample (the per-sample schedule, C*KH*KW <= SMALL_K, as the
   recipe's first block): per sample, in one thread, its columns with a ones
   row (kept as the cache, as production keeps them), the GEMM into a
   per-thread (F, P) scratch, then pool + bias-free ReLU into z and the taps;
   the backward rebuilds dy of the sample in the scratch (zeros, dz at each
   tap that passed the ReLU), then the dW | db part and, with dx, dcols and
   col2im;
3. fused, per chunk (the chunked schedule, C*KH*KW > SMALL_K, as the
   recipe's second block): per chunk of samples, im2col, the GEMM y^T into
   scratch, then bias + pool + ReLU into z; the backward rebuilds the
   chunk's dy^T from dz and the taps, with db's sums, then im2col, the two
   GEMMs and col2im. Nothing but the taps is cached.

Reference: the ref backend's three ops composed. ``--check`` compares every
variant with it on odd shapes (odd output sizes, with and without bias and
dx, NaN in x); ``--bench`` races the variants on the recipe's two blocks at
batch 256, with torch's three functions beside them, and then the recipe's
whole training step with its blocks run by the model's layers, by variant 1
and by the fused variants (``step_rows``).

    python -m kernels.fused --check
    python -m kernels.fused --bench
"""
import numpy as np
import numba

from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.conv import conv2d_output_size
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.threads import single_threaded_kernel_blas
from kernels.common import Row, assert_close, race, try_torch

BLOCKS = (("conv 1->24 5x5 28x28, pool, relu", 256, 1, 24, 28, 5, 0),
          ("conv 24->32 3x3 12x12, pool, relu", 256, 24, 32, 12, 3, 0))
"""(label, N, C, F, H = W, kernel, padding) of the speedrun recipe's two blocks."""


@njit_kernel(inline="always")
def _pool_relu(a, b, c, d):
    """The 2x2 window a b / c d: (relu(max), tap) with the contract's take-over
    test (the first maximum; a NaN takes over), as the cpu pool's tree
    computes it. The ReLU passes max where not (max <= 0), so a NaN passes;
    the backward reads the same mask from z."""
    take_b = (b > a) | (b != b)
    top = b if take_b else a
    take_d = (d > c) | (d != d)
    bottom = d if take_d else c
    take_bottom = (bottom > top) | (bottom != bottom)
    p = bottom if take_bottom else top
    tap = np.uint8(2 + take_d) if take_bottom else np.uint8(take_b)
    return (p if not (p <= 0) else 0.0), tap


@njit_kernel(parallel=True)
def _samples_forward(x, Wb, kh, kw, ph, pw, OH, OW, has_bias, cols, y_ws, z, taps):
    # Per sample n, in one thread: its columns cols[n] (a ones row last when
    # has_bias), y = [Wm | b] cols[n] into the thread's scratch (F, OH*OW), then
    # each 2x2 window of y pooled and ReLU'd into z[n] with its tap.
    # Parallel axis: samples; iteration n writes only cols[n], z[n], taps[n] and
    # row numba.get_thread_id() of y_ws.
    N, C, H, W = x.shape
    F = Wb.shape[0]
    K = C * kh * kw
    ZH, ZW = z.shape[2], z.shape[3]
    for n in numba.prange(N):
        cn = cols[n]
        for c in range(C):
            cpu_conv.im2col_channel(x[n, c].reshape(H * W), c, kh, kw, 1, 1, ph, pw, H, W, OH,
                                    OW, cn, 0, 0)
        if has_bias:
            ones = cn[K]
            for m in range(OH * OW):
                ones[m] = 1
        y = y_ws[numba.get_thread_id()]
        np.dot(Wb, cn, y)
        for f in range(F):
            yf = y[f]
            for i in range(ZH):
                r0 = 2 * i * OW
                r1 = r0 + OW
                for j in range(ZW):
                    v, t = _pool_relu(yf[r0 + 2 * j], yf[r0 + 2 * j + 1], yf[r1 + 2 * j],
                                      yf[r1 + 2 * j + 1])
                    z[n, f, i, j] = v
                    taps[n, f, i, j] = t


@njit_kernel(parallel=True)
def _samples_backward(dz, z, taps, WmT, cols, kh, kw, ph, pw, OH, OW, need_dx, parts, dy_ws,
                      dcols_ws, dx):
    # Per sample n, in one thread: dy of the conv output rebuilt in the
    # thread's scratch (zeros, and dz at each tap whose pooled value passed the
    # ReLU), its [dW | db] part = dy cols[n]^T into parts[n] (summed later in
    # sample order), and with need_dx dcols = Wm^T dy and col2im into dx[n].
    # Parallel axis: samples; iteration n writes only parts[n], dx[n] and row
    # numba.get_thread_id() of the scratch.
    N = dz.shape[0]
    F, ZH, ZW = dz.shape[1], dz.shape[2], dz.shape[3]
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    P = OH * OW
    for n in numba.prange(N):
        t = numba.get_thread_id()
        dy = dy_ws[t]
        for f in range(F):
            dyf = dy[f]
            for m in range(P):
                dyf[m] = 0
            for i in range(ZH):
                for j in range(ZW):
                    if not (z[n, f, i, j] <= 0):
                        k = np.int64(taps[n, f, i, j])
                        dyf[(2 * i + (k >> 1)) * OW + 2 * j + (k & 1)] = dz[n, f, i, j]
        np.dot(dy, cols[n].T, parts[n])
        if need_dx:
            dcols = dcols_ws[t]
            np.dot(WmT, dy, dcols)
            acc = np.empty(H * W, np.float64)
            for c in range(C):
                cpu_conv.col2im_channel(dcols, c, kh, kw, 1, 1, ph, pw, H, W, OH, OW, 0, 0,
                                        dx[n, c].reshape(H * W), acc)


@njit_kernel(parallel=True)
def _chunks_forward(x, Wm, b, kh, kw, ph, pw, OH, OW, nb, cols_ws, yT_ws, z, taps):
    # Per chunk of nb samples, in one thread: the chunk's columns (K, m*P),
    # y^T = Wm cols, then for each sample and filter the 2x2 windows of
    # y^T's block + b pooled and ReLU'd into z with their taps.
    # Parallel axis: chunks; chunk ch writes only z and taps of its samples
    # and row numba.get_thread_id() of the scratch.
    N, C, H, W = x.shape
    F, K = Wm.shape
    P = OH * OW
    ZH, ZW = z.shape[2], z.shape[3]
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        cols = cols_ws[t, :K * m * P].reshape((K, m * P))
        yT = yT_ws[t, :F * m * P].reshape((F, m * P))
        for k in range(m):
            for c in range(C):
                cpu_conv.im2col_channel(x[n0 + k, c].reshape(H * W), c, kh, kw, 1, 1, ph, pw,
                                        H, W, OH, OW, cols, 0, k * P)
        np.dot(Wm, cols, yT)
        for k in range(m):
            for f in range(F):
                bf = b[f]
                yf = yT[f, k * P:(k + 1) * P]
                for i in range(ZH):
                    r0 = 2 * i * OW
                    r1 = r0 + OW
                    for j in range(ZW):
                        v, tp = _pool_relu(yf[r0 + 2 * j] + bf, yf[r0 + 2 * j + 1] + bf,
                                           yf[r1 + 2 * j] + bf, yf[r1 + 2 * j + 1] + bf)
                        z[n0 + k, f, i, j] = v
                        taps[n0 + k, f, i, j] = tp


@njit_kernel(parallel=True)
def _chunks_backward(dz, z, taps, x, WmT, kh, kw, ph, pw, OH, OW, nb, need_dx, cols_ws,
                     dyT_ws, dcols_ws, dWT_parts, dbias, dx):
    # Per chunk of nb samples, in one thread: dy^T (F, m*P) rebuilt from dz
    # and the taps (zeros elsewhere) with the per-(n, f) sums for db; the
    # chunk's columns from x; its dW^T part = cols dy^T (summed later in chunk
    # order); with need_dx, dcols = Wm^T dy^T and col2im into dx.
    # Parallel axis: chunks; chunk ch writes only dbias and dx of its samples,
    # dWT_parts[ch] and row numba.get_thread_id() of the scratch.
    N, C, H, W = x.shape
    F, ZH, ZW = dz.shape[1], dz.shape[2], dz.shape[3]
    K = WmT.shape[0]
    P = OH * OW
    for ch in numba.prange((N + nb - 1) // nb):
        t = numba.get_thread_id()
        n0 = ch * nb
        m = min(nb, N - n0)
        cols = cols_ws[t, :K * m * P].reshape((K, m * P))
        dyT = dyT_ws[t, :F * m * P].reshape((F, m * P))
        for k in range(m):
            n = n0 + k
            for f in range(F):
                dyf = dyT[f, k * P:(k + 1) * P]
                for e in range(P):
                    dyf[e] = 0
                s = 0.0
                for i in range(ZH):
                    for j in range(ZW):
                        if not (z[n, f, i, j] <= 0):
                            tp = np.int64(taps[n, f, i, j])
                            g = dz[n, f, i, j]
                            dyf[(2 * i + (tp >> 1)) * OW + 2 * j + (tp & 1)] = g
                            s += g
                dbias[n, f] = s
            for c in range(C):
                cpu_conv.im2col_channel(x[n, c].reshape(H * W), c, kh, kw, 1, 1, ph, pw, H, W,
                                        OH, OW, cols, 0, k * P)
        np.dot(cols, dyT.T, dWT_parts[ch])
        if need_dx:
            dcols = dcols_ws[t, :K * m * P].reshape((K, m * P))
            np.dot(WmT, dyT, dcols)
            acc = np.empty(H * W, np.float64)
            for k in range(m):
                for c in range(C):
                    cpu_conv.col2im_channel(dcols, c, kh, kw, 1, 1, ph, pw, H, W, OH, OW, 0,
                                            k * P, dx[n0 + k, c].reshape(H * W), acc)


# -- the variants: forward(x, W, b, padding) -> (z, cache);
#    backward(dz, z, cache, x, W, padding, has_bias, need_dx) -> (dx, dW, db)

def three_forward(x, W, b, padding, be=cpu):
    """1: the three ops of backend ``be`` one after another."""
    y, conv_cache = be.conv2d_forward(x, W, b, (1, 1), padding)
    p, pool_cache = be.maxpool2d_forward(y, (2, 2), (2, 2))
    return be.relu_forward(p), (y.shape, conv_cache, p, pool_cache)


def three_backward(dz, z, cache, x, W, padding, has_bias, need_dx, be=cpu):
    """1's backward: relu, pool and conv backward of backend ``be``."""
    y_shape, conv_cache, p, pool_cache = cache
    dp = be.relu_backward(p, dz)
    dy = be.maxpool2d_backward(dp, y_shape, pool_cache, (2, 2), (2, 2))
    return be.conv2d_backward(dy, x, W, conv_cache, (1, 1), padding, has_bias, need_dx)


def _geometry(x, W, padding):
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, (1, 1), padding)
    return N, C, H, Wd, F, KH, KW, OH, OW


def samples_forward(x, W, b, padding):
    """2: fused, per sample; the cache is (columns with a ones row, taps)."""
    x = np.ascontiguousarray(x)
    N, C, H, Wd, F, KH, KW, OH, OW = _geometry(x, W, padding)
    K, P = C * KH * KW, OH * OW
    has_bias = b is not None
    Wb = W.reshape(F, K)
    if has_bias:
        Wb = np.concatenate([Wb, b.reshape(F, 1)], axis=1)
    cols = np.empty((N, K + has_bias, P), x.dtype)
    y_ws = np.empty((numba.config.NUMBA_NUM_THREADS, F, P), x.dtype)
    z = np.empty((N, F, OH // 2, OW // 2), x.dtype)
    taps = np.empty(z.shape, np.uint8)
    with single_threaded_kernel_blas():
        _samples_forward(x, np.ascontiguousarray(Wb), KH, KW, *padding, OH, OW, has_bias, cols,
                         y_ws, z, taps)
    return z, (cols, taps)


def samples_backward(dz, z, cache, x, W, padding, has_bias, need_dx):
    """2's backward."""
    cols, taps = cache
    N, C, H, Wd, F, KH, KW, OH, OW = _geometry(x, W, padding)
    K, P = C * KH * KW, OH * OW
    T = numba.config.NUMBA_NUM_THREADS
    R = cols.shape[1]
    parts = np.empty((N, F, R), x.dtype)
    dy_ws = np.empty((T, F, P), x.dtype)
    dcols_ws = np.empty((T, K, P), x.dtype)
    dx = np.empty(x.shape if need_dx else (0, C, 1, 1), x.dtype)
    with single_threaded_kernel_blas():
        _samples_backward(np.ascontiguousarray(dz), z, taps,
                          np.ascontiguousarray(W.reshape(F, K).T), cols, KH, KW, *padding, OH,
                          OW, need_dx, parts, dy_ws, dcols_ws, dx)
    dWb = np.empty((F, R))
    _sum_rows(parts, dWb)
    dW = dWb[:, :K].astype(x.dtype).reshape(W.shape)
    db = dWb[:, K].astype(x.dtype) if has_bias else None
    return (dx if need_dx else None), dW, db


def _sum_rows(parts, out):
    """out = parts summed over axis 0 in float64 (numpy's pairwise sum; the
    backend sums its parts in order, in its own private kernel)."""
    out[...] = parts.astype(np.float64).sum(axis=0)


def chunks_forward(x, W, b, padding, chunk_bytes=None):
    """3: fused, per chunk; the cache is the taps."""
    x = np.ascontiguousarray(x)
    N, C, H, Wd, F, KH, KW, OH, OW = _geometry(x, W, padding)
    K, P = C * KH * KW, OH * OW
    nb = cpu_conv.chunk_samples(N, K, P, x.itemsize, chunk_bytes or cpu_conv.FUSED_CHUNK_BYTES)
    T = numba.config.NUMBA_NUM_THREADS
    cols_ws = np.empty((T, K * nb * P), x.dtype)
    yT_ws = np.empty((T, F * nb * P), x.dtype)
    z = np.empty((N, F, OH // 2, OW // 2), x.dtype)
    taps = np.empty(z.shape, np.uint8)
    bias = np.zeros(F, x.dtype) if b is None else np.ascontiguousarray(b)
    with single_threaded_kernel_blas():
        _chunks_forward(x, np.ascontiguousarray(W.reshape(F, K)), bias, KH, KW, *padding, OH,
                        OW, nb, cols_ws, yT_ws, z, taps)
    return z, taps


def chunks_backward(dz, z, taps, x, W, padding, has_bias, need_dx, chunk_bytes=None):
    """3's backward."""
    x = np.ascontiguousarray(x)
    N, C, H, Wd, F, KH, KW, OH, OW = _geometry(x, W, padding)
    K, P = C * KH * KW, OH * OW
    nb = cpu_conv.chunk_samples(N, K, P, x.itemsize,
                                chunk_bytes or cpu_conv.FUSED_BACKWARD_CHUNK_BYTES)
    T, chunks = numba.config.NUMBA_NUM_THREADS, (N + nb - 1) // nb
    cols_ws = np.empty((T, K * nb * P), x.dtype)
    dyT_ws = np.empty((T, F * nb * P), x.dtype)
    dcols_ws = np.empty((T, K * nb * P), x.dtype)
    parts = np.empty((chunks, K, F), x.dtype)
    dbias = np.empty((N, F))
    dx = np.empty(x.shape if need_dx else (0, C, 1, 1), x.dtype)
    with single_threaded_kernel_blas():
        _chunks_backward(np.ascontiguousarray(dz), z, taps, x,
                         np.ascontiguousarray(W.reshape(F, K).T), KH, KW, *padding, OH, OW, nb,
                         need_dx, cols_ws, dyT_ws, dcols_ws, parts, dbias, dx)
    dWT = np.empty((K, F))
    _sum_rows(parts, dWT)
    dW = np.ascontiguousarray(dWT.T).astype(x.dtype).reshape(W.shape)
    db = dbias.sum(axis=0).astype(x.dtype) if has_bias else None
    return (dx if need_dx else None), dW, db


VARIANTS = {"1 three ops": (three_forward, three_backward),
            "2 fused, per sample": (samples_forward, samples_backward),
            "3 fused, per chunk": (chunks_forward, chunks_backward)}
"""name -> (forward, backward), in the order they were written."""

CHECK_SHAPES = (
    # (N, C, F, H, W, kernel, padding): odd conv outputs (the pool drops a row
    # or a column), K on both sides of SMALL_K, padding 0 and 1.
    (3, 1, 5, 9, 8, 3, (0, 0)),
    (2, 2, 4, 8, 7, 5, (1, 1)),
    (3, 7, 6, 7, 9, 3, (0, 0)),
    (2, 9, 5, 6, 8, 3, (1, 1)),
)


def check():
    rng = np.random.default_rng(0)
    for N, C, F, H, Wd, k, pad in CHECK_SHAPES:
        for has_bias in (True, False):
            for need_dx in (True, False):
                for nan in (False, True):
                    x = rng.standard_normal((N, C, H, Wd)).astype(np.float32)
                    if nan:
                        x[1, C - 1, 2, 3] = np.nan
                    W = rng.standard_normal((F, C, k, k)).astype(np.float32)
                    b = rng.standard_normal(F).astype(np.float32) if has_bias else None
                    z_ref, cache_ref = three_forward(x.astype(np.float64), W.astype(np.float64),
                                                     None if b is None else b.astype(np.float64),
                                                     pad, be=ref)
                    dz = rng.standard_normal(z_ref.shape).astype(np.float32)
                    grads_ref = three_backward(dz.astype(np.float64), z_ref, cache_ref,
                                               x.astype(np.float64), W.astype(np.float64), pad,
                                               has_bias, need_dx, be=ref)
                    what = f"N{N} C{C} F{F} {H}x{Wd} k{k} p{pad} bias={has_bias} dx={need_dx}"
                    for name, (fwd, bwd) in VARIANTS.items():
                        z, cache = fwd(x, W, b, pad)
                        _same_nan(z, z_ref, f"{name} z, {what}")
                        assert_close(np.nan_to_num(z), np.nan_to_num(z_ref), f"{name} z, {what}")
                        grads = bwd(dz, z, cache, x, W, pad, has_bias, need_dx)
                        for label, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
                            if g_ref is None:
                                assert g is None, f"{name} {label}, {what}"
                                continue
                            _same_nan(g, g_ref, f"{name} {label}, {what}")
                            assert_close(np.nan_to_num(g), np.nan_to_num(g_ref),
                                         f"{name} {label}, {what}")


def _same_nan(got, want, what):
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        raise AssertionError(f"{what}: NaN where the reference has none, or the other way")


def bench():
    torch = try_torch()
    rows = []
    rng = np.random.default_rng(0)
    for label, N, C, F, H, k, p in BLOCKS:
        pad = (p, p)
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        W = (rng.standard_normal((F, C, k, k)) * 0.1).astype(np.float32)
        b = (rng.standard_normal(F) * 0.1).astype(np.float32)
        need_dx = C > 1  # the first block of a net needs no dx
        z, _ = three_forward(x, W, b, pad)
        dz = rng.standard_normal(z.shape).astype(np.float32)
        fns = {}
        for name, (fwd, bwd) in VARIANTS.items():
            def step(fwd=fwd, bwd=bwd):
                zz, cache = fwd(x, W, b, pad)
                bwd(dz, zz, cache, x, W, pad, True, need_dx)
            fns[name] = step
        if torch is not None:
            fns["torch"] = _torch_block(torch, x, W, b, p, dz, need_dx)
        times = race(fns, rounds=5, repeat=15)
        K, P = C * k * k, (H + 2 * p - k + 1) ** 2
        flops = 2 * N * F * K * P * (3 if need_dx else 2)
        for name in VARIANTS:
            rows.append(Row(label + (" fwd+bwd" if need_dx else " fwd+bwd no dx"), name,
                            times[name], flops=flops, torch_seconds=times.get("torch")))
    return rows + step_rows()


def step_rows(rounds=5, repeat=20):
    """The speedrun recipe's whole training step at batch 256 (tinynet.zoo's
    ``speedrun``: forward, loss, backward, Adam), its two blocks run three ways:
    the model's own layers, variant 1 and the fused variants 2 (first block)
    and 3 (second block); the dense layers, the loss and Adam are the model's
    in all three. Rows of median seconds, raced."""
    import tinynet as tn
    from tinynet.zoo import build
    tn.init.seed(0)
    model = build("speedrun", "none")
    layers = model.layers
    opt = tn.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
    loss_fn = tn.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    conv1, conv2 = layers[0], layers[3]

    def layer_step():
        loss_fn.forward(model.forward(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()

    def blocks_step(first, second):
        (f1, b1), (f2, b2) = VARIANTS[first], VARIANTS[second]
        W1, c1, W2, c2 = conv1.weight.data, conv1.bias.data, conv2.weight.data, conv2.bias.data
        z1, k1 = f1(x, W1, c1, (0, 0))
        z2, k2 = f2(z1, W2, c2, (0, 0))
        h = z2
        for layer in layers[6:]:  # Flatten, Dense, ReLU, Dense
            h = layer.forward(h)
        loss_fn.forward(h, y)
        model.zero_grad()
        g = loss_fn.backward()
        for layer in reversed(layers[6:]):
            g = layer.backward(g)
        dz1, dW2, db2 = b2(g, z2, k2, z1, W2, (0, 0), True, True)
        _, dW1, db1 = b1(dz1, z1, k1, x, W1, (0, 0), True, False)
        for param, grad in ((conv1.weight, dW1), (conv1.bias, db1), (conv2.weight, dW2),
                            (conv2.bias, db2)):
            param.grad[...] = grad
        opt.step()

    fns = {"the model's layers": layer_step,
           "1 three ops": lambda: blocks_step("1 three ops", "1 three ops"),
           "2 then 3 fused": lambda: blocks_step("2 fused, per sample", "3 fused, per chunk")}
    times = race(fns, rounds=rounds, repeat=repeat)
    return [Row("speedrun training step, batch 256", name, t) for name, t in times.items()]


def _torch_block(torch, x, W, b, p, dz, need_dx):
    """torch's conv -> max_pool2d -> relu forward + backward(dz), the grads cleared."""
    F_ = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(need_dx)
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    bt = torch.from_numpy(b.copy()).requires_grad_(True)
    dzt = torch.from_numpy(dz)

    def step():
        xt.grad = Wt.grad = bt.grad = None
        F_.relu(F_.max_pool2d(F_.conv2d(xt, Wt, bt, padding=p), 2)).backward(dzt)
    return step


def main(argv=None):
    from kernels.common import lab_main
    return lab_main("fused", check, bench, argv)


if __name__ == "__main__":
    main()
