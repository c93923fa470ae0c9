"""Conv2D on the GPU: numba.cuda kernels around cuBLAS GEMMs.

The ops, their math and their argument checks are the contract's
(tinynet/ops/conv/__init__.py), which derives the im2col form. Here the
columns of the whole batch lie side by side: K = C*KH*KW taps, P = OH*OW,
cols (K, N*P), row (c*KH + p)*KW + q, column n*P + i*OW + j, and Wm = W as
(F, K), so that every product is ONE cuBLAS GEMM (device.matmul):

    Yt = Wm cols (F, N*P)        -> y[n, f, :] = Yt[f, n*P:(n+1)*P] + b[f]
    dW = dyT cols^T              with dyT[f, n*P + p] = dy[n, f, p]
    dcols = Wm^T dyT (K, N*P)    -> dx = col2im(dcols)

Kernels: im2col (one thread per column entry), col2im (one thread per dx
pixel, gathering from the taps that read it, so no atomics), the
(F, N*P) <-> NCHW copies with the bias fused, and db by the channel-sum
block reduction (tinynet/backends/cuda_reduce.py, channel_sums). The
columns are the cache.

With G > 1 groups the columns are the same (group g's taps are the rows
g*Kg .. (g+1)*Kg - 1, Kg = C/G*KH*KW), and each product is ONE batched
GEMM over the groups: Wm as (G, F/G, Kg) times the columns as (G, Kg, N*P).

One input channel per group, C == G (C = 1, the first layer on a grey image,
and the depthwise convolution), runs direct kernels instead, since K = KH*KW
is too short for a GEMM; filter f reads channel f // (F/C). The forward is
one thread per output; dW is one block per tap (f, p, q) reducing over
(n, i, j) in float64; dx one thread per input pixel, gathering from the F/C
filters of its channel. The cache is then None.
"""
from numba import cuda, float64

from ..contract import implements
from .. import conv
from . import conv2d_output_size
from ...backends import cuda_device as dev
from ...backends.cuda_device import REDUCE_SHARED
from ...backends.cuda_reduce import block_sum, channel_sums

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward"]

_GEOM = "int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, int64"


@cuda.jit(device=True, inline=True)
def _tap_of(k, KH, KW):
    """(c, p, q) of column row k = (c*KH + p)*KW + q."""
    c = k // (KH * KW)
    t = k - c * (KH * KW)
    p = t // KW
    return c, p, t - p * KW


@dev.kernel("void({f}[::1], " + _GEOM + ", {f}[::1])")
def _im2col(x, N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, cols):
    P = OH * OW
    NP = N * P
    # Parallel axis: the flat index of cols (K, N*P); each thread writes its own entry.
    for e in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        k = e // NP
        r = e - k * NP
        n = r // P
        o = r - n * P
        i = o // OW
        j = o - i * OW
        c, p, q = _tap_of(k, KH, KW)
        h = i * sh + p - ph
        w = j * sw + q - pw
        if 0 <= h < H and 0 <= w < W:
            cols[e] = x[((n * C + c) * H + h) * W + w]
        else:
            cols[e] = 0


@dev.kernel("void({f}[::1], " + _GEOM + ", {f}[::1])")
def _col2im(dcols, N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx):
    P = OH * OW
    NP = N * P
    # Parallel axis: the flat dx pixel (n, c, h, w); each thread sums the column
    # entries that read its pixel and writes only its own dx.
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = e % W
        h = (e // W) % H
        c = (e // (H * W)) % C
        n = e // (C * H * W)
        acc = float64(0.0)
        for p in range(KH):
            a = h + ph - p
            if a < 0 or a % sh != 0 or a // sh >= OH:
                continue
            i = a // sh
            for q in range(KW):
                b = w + pw - q
                if b < 0 or b % sw != 0 or b // sw >= OW:
                    continue
                k = (c * KH + p) * KW + q
                acc += dcols[k * NP + n * P + i * OW + b // sw]
        dx[e] = acc


@dev.kernel("void({f}[::1], {f}[::1], boolean, int64, int64, int64, {f}[::1])")
def _nchw_from_columns(Yt, b, has_bias, N, F, P, y):
    # Parallel axis: the flat index of y (N, F, P); each thread writes its own entry.
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n = e // (F * P)
        r = e - n * (F * P)
        f = r // P
        v = Yt[f * (N * P) + n * P + (r - f * P)]
        y[e] = v + b[f] if has_bias else v


@dev.kernel("void({f}[::1], int64, int64, int64, {f}[::1])")
def _columns_from_nchw(dy, N, F, P, dyT):
    # Parallel axis: the flat index of dyT (F, N*P); each thread writes its own entry.
    for e in range(cuda.grid(1), dyT.size, cuda.gridsize(1)):
        f = e // (N * P)
        r = e - f * (N * P)
        n = r // P
        dyT[e] = dy[(n * F + f) * P + (r - n * P)]


@dev.kernel("void({f}[::1], {f}[::1], {f}[::1], boolean, int64, " + _GEOM + ", {f}[::1])")
def _conv1_forward(x, Wt, b, has_bias, F, N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, y):
    # One input channel per group: filter f reads channel f // (F // C). A tap
    # in the padding multiplies a zero, as in the im2col form, so that an inf
    # or NaN weight gives what it gives there.
    # Parallel axis: the flat output (n, f, i, j); each thread writes its own y.
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        j = e % OW
        i = (e // OW) % OH
        f = (e // (OH * OW)) % F
        n = e // (F * OH * OW)
        plane = (n * C + f // (F // C)) * H
        acc = float64(0.0)
        for p in range(KH):
            h = i * sh + p - ph
            for q in range(KW):
                w = j * sw + q - pw
                v = float64(x[(plane + h) * W + w]) if 0 <= h < H and 0 <= w < W else 0.0
                acc += float64(Wt[(f * KH + p) * KW + q]) * v
        if has_bias:
            acc += b[f]
        y[e] = acc


@dev.kernel("void({f}[::1], {f}[::1], int64, " + _GEOM + ", {f}[::1])")
def _conv1_dW(x, dy, F, N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dW):
    sh_sum = cuda.shared.array(REDUCE_SHARED, float64)
    P = OH * OW
    # One input channel per group: filter f reads channel f // (F // C).
    # Parallel axis: the taps (f, p, q), one block each (grid-stride);
    # the block's threads split (n, i, j) and only thread 0 writes dW[f, p, q].
    for t in range(cuda.blockIdx.x, F * KH * KW, cuda.gridDim.x):
        f = t // (KH * KW)
        p = (t // KW) % KH
        q = t % KW
        c = f // (F // C)
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, N * P, cuda.blockDim.x):
            n = m // P
            o = m - n * P
            i = o // OW
            h = i * sh + p - ph
            w = (o - i * OW) * sw + q - pw
            if 0 <= h < H and 0 <= w < W:
                acc += float64(dy[(n * F + f) * P + o]) * x[((n * C + c) * H + h) * W + w]
        acc = block_sum(acc, sh_sum)
        if cuda.threadIdx.x == 0:
            dW[t] = acc


@dev.kernel("void({f}[::1], {f}[::1], int64, " + _GEOM + ", {f}[::1])")
def _conv1_dx(dy, Wt, F, N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, dx):
    P = OH * OW
    M = F // C
    # One input channel per group: channel c feeds filters c*M .. (c + 1)*M - 1,
    # whose dy planes start at dy0 and whose taps at w0, M*P and M*KH*KW apart.
    # Parallel axis: the flat dx pixel (n, c, h, w); each thread gathers from
    # the outputs whose windows hold it and writes only its own dx.
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = e % W
        h = (e // W) % H
        nc = e // (H * W)
        c = nc % C
        dy0 = (nc // C * F + c * M) * P
        w0 = c * M * KH * KW
        acc = float64(0.0)
        for p in range(KH):
            a = h + ph - p
            if a < 0 or a % sh != 0 or a // sh >= OH:
                continue
            for q in range(KW):
                b = w + pw - q
                if b < 0 or b % sw != 0 or b // sw >= OW:
                    continue
                o = dy0 + (a // sh) * OW + b // sw
                t = w0 + p * KW + q
                for m in range(M):
                    acc += float64(dy[o + m * P]) * Wt[t + m * KH * KW]
        dx[e] = acc


def _geometry(x_shape, KH, KW, stride, padding):
    N, C, H, W = x_shape
    OH, OW = conv2d_output_size(H, W, KH, KW, stride, padding)
    return (N, C, H, W, KH, KW, stride[0], stride[1], padding[0], padding[1], OH, OW)


def _columns(x, KH, KW, stride, padding):
    """The im2col columns of x, (C*KH*KW, N*OH*OW)."""
    g = _geometry(x.shape, KH, KW, stride, padding)
    N, C, OH, OW = g[0], g[1], g[-2], g[-1]
    cols = dev.empty((C * KH * KW, N * OH * OW), x.dtype)
    _im2col[dev.grid_1d(cols.size)](x.reshape(-1), *g, cols.reshape(-1))
    return cols


def _image(dcols, x_shape, KH, KW, stride, padding):
    """col2im of (C*KH*KW, N*OH*OW) columns: a fresh (N, C, H, W) array."""
    g = _geometry(x_shape, KH, KW, stride, padding)
    dx = dev.empty(tuple(x_shape), dcols.dtype)
    _col2im[dev.grid_1d(dx.size)](dcols.reshape(-1), *g, dx.reshape(-1))
    return dx


@implements(conv.im2col)
def im2col(x, kh, kw, stride, padding):
    dev.require_device("im2col", x=x)
    N = x.shape[0]
    cols = _columns(x, kh, kw, stride, padding)
    K, NP = cols.shape
    # The ref's (N, K, P) layout of the batch-wide (K, N*P) columns.
    return cols.reshape(K, N, NP // N).transpose(1, 0, 2).copy()


@implements(conv.col2im)
def col2im(cols, x_shape, kh, kw, stride, padding):
    dev.require_device("col2im", cols=cols)
    N, K, P = cols.shape
    return _image(cols.transpose(1, 0, 2).reshape(K, N * P).copy(), x_shape, kh, kw, stride,
                  padding)


def _bias_arg(b, x):
    return (b, True) if b is not None else (x.reshape(-1)[:1], False)


def _per_group(a, groups):
    """a (R, S) as (G, R/G, S), each group's block of rows, for one batched GEMM
    over the groups; a itself when G = 1 (one plain GEMM)."""
    R, S = a.shape
    return a if groups == 1 else a.reshape(groups, R // groups, S)


def _transpose(a):
    """Each matrix of a (..., R, S) transposed: (..., S, R), a view."""
    return a.swapaxes(-1, -2)


@implements(conv.conv2d_forward)
def conv2d_forward(x, W, b, stride, padding, groups=1):
    dev.require_device("conv2d_forward", x=x, W=W, b=b)
    F, Cg, KH, KW = W.shape
    g = _geometry(x.shape, KH, KW, stride, padding)
    N, OH, OW = g[0], g[-2], g[-1]
    y = dev.empty((N, F, OH, OW), x.dtype)
    bias, has_bias = _bias_arg(b, x)
    if Cg == 1:
        _conv1_forward[dev.grid_1d(y.size)](x.reshape(-1), W.reshape(-1), bias, has_bias, F, *g,
                                            y.reshape(-1))
        return y, None
    cols = _columns(x, KH, KW, stride, padding)
    # Per group (F/G, Kg) @ (Kg, N*P) -> (F/G, N*P): together Yt (F, N*P).
    Yt = dev.matmul(_per_group(W.reshape(F, Cg * KH * KW), groups), _per_group(cols, groups))
    _nchw_from_columns[dev.grid_1d(y.size)](Yt.reshape(-1), bias, has_bias, N, F, OH * OW,
                                            y.reshape(-1))
    return y, cols


@implements(conv.conv2d_backward)
def conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    dev.require_device("conv2d_backward", dy=dy, x=x, W=W)
    F, Cg, KH, KW = W.shape
    g = _geometry(x.shape, KH, KW, stride, padding)
    N, P = g[0], g[-2] * g[-1]
    db = channel_sums(dy, N, F, P) if has_bias else None
    if Cg == 1:
        dW = dev.empty(W.shape, dy.dtype)
        _conv1_dW[dev.grid_sets(dW.size)](x.reshape(-1), dy.reshape(-1), F, *g, dW.reshape(-1))
        dx = None
        if need_dx:
            dx = dev.empty(x.shape, dy.dtype)
            _conv1_dx[dev.grid_1d(dx.size)](dy.reshape(-1), W.reshape(-1), F, *g, dx.reshape(-1))
        return dx, dW, db
    cols = _columns(x, KH, KW, stride, padding) if cache is None else cache
    dyT = dev.empty((F, N * P), dy.dtype)
    _columns_from_nchw[dev.grid_1d(dyT.size)](dy.reshape(-1), N, F, P, dyT.reshape(-1))
    dyT_g = _per_group(dyT, groups)
    # Per group: dWm_g = dyT_g cols_g^T (F/G, Kg) and dcols_g = Wm_g^T dyT_g (Kg, N*P).
    dW = dev.matmul(dyT_g, _transpose(_per_group(cols, groups))).reshape(W.shape)
    dx = None
    if need_dx:
        Wm_g = _per_group(W.reshape(F, Cg * KH * KW), groups)
        dcols = dev.matmul(_transpose(Wm_g), dyT_g).reshape(cols.shape)
        dx = _image(dcols, x.shape, KH, KW, stride, padding)
    return dx, dW, db
