"""Kernel lab: the normalization family (BatchNorm, LayerNorm, InstanceNorm, GroupNorm).

The ops, their set layouts and their equations are the contract's
(tinynet/ops/norm/__init__.py); tinynet.backends.ref is the reference. A
training step runs the training forward (the statistics, then y) and
norm_backward. Each variant provides (train_forward, norm_forward,
norm_backward) with the signatures of the ops:

1. naive port: one prange iteration per set, which loops over its members
   with 3-D indexing x[n, c, l]; a second prange over channels for dgamma
   and dbeta. BatchNorm then has only C = 32 tasks, each one strided, and
   LayerNorm N = 64.
2. tiles: prange over many equal tiles (samples [n0, n1) x channels
   [c0, c1) x all l, never across a group: the production tiling,
   tinynet.ops.norm.cpu.Tiles), per-tile partial results (mean and M2; the
   sums of dy and dy * xhat per channel and per set), then a combine of
   the partials. Inner loops run over l with 3-D indexing x[n, c, l]; for
   LayerNorm's (N, M, 1) view that inner loop has length 1.
3. tiles + contiguous 1-D slices (x[n, c*L:(c+1)*L]), and for L == 1 the
   inner loop runs over a row of channels (x[n, c0:c1]), so it vectorizes
   for LayerNorm too. Every pass computes in float64; the statistics are
   two-pass.
4. 3 plus: one-pass shifted sums for the statistics (d = x - K with K a
   member of the set, M2 = sum(d^2) - sum(d)^2 / n: one float32 -> float64
   conversion per element instead of two); the forward and dx passes in
   the dtype of x, with the mean split into mean_hi (rounded to that dtype)
   and a correction folded into the per-set constants, so float32 data
   needs no conversion there; for L == 1, tiles of several samples. Its
   statistics and forward are the production ops (norm_stats,
   norm_forward); its backward is the sums kernel of 3 and the dx kernel of
   3 run on those per-set constants.
5. production (tinynet/ops/norm/cpu.py, promoted from here) under
   ``Schedule(column_blocks=False)``: 4, with row sets (LN, IN, GN) fused
   per set: the training forward (norm_forward_train) computes a set's
   statistics and then its y while the set is in cache, and the backward a
   set's sums and then its dx (for L == 1 two samples at a time, halving the
   read-modify-writes of the dgamma and dbeta partials). x is read once in
   the forward and (x, dy) once in the backward. BatchNorm keeps the
   two-kernel passes of 4: its sets span the whole batch.
6. production: 5, and BatchNorm on (N, C) (L == 1) fused per block of
   channels: one prange over blocks of CB channels x all N rows computes
   the statistics and then y, and in the backward the two sums and then
   dx; one launch per op instead of two kernels, the merge and their NumPy
   glue.

Accumulators are float64 in every variant.

Floor: a training step must read x for the statistics, read x and write y,
read (x, dy) for the sums and read (x, dy) and write dx: 8 passes over the
tensor (variant 5 makes 5 of them from memory for row sets; the other 3
hit the cache). The eval-mode forward (BatchNorm with running statistics,
a per-channel scale and shift) reads x and writes y: 2 passes.

Targets, (64, 32, 28, 28) float32, forward + backward through the public
layers, torch side by side (torch: y = m(x); y.backward(dy)):
tn.BatchNorm(32) / nn.BatchNorm2d(32), tn.LayerNorm((32, 28, 28)) /
nn.LayerNorm((32, 28, 28)), tn.InstanceNorm(32) / nn.InstanceNorm2d(32,
affine=True), tn.GroupNorm(8, 32) / nn.GroupNorm(8, 32).

    python -m kernels.norm --check      every variant against the reference
    python -m kernels.norm --bench      timings, x floor, torch beside them
"""
import functools

import numpy as np
import numba

from tinynet.backends import ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.norm import cpu as production
from tinynet.ops.norm import set_shape
from tinynet.ops.norm.cases import ALL_CASES
from tinynet.ops.norm.cpu import Tiles, tile_bounds
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch

SHAPE = (64, 32, 28, 28)
SHAPE_2D = (256, 512)
EPS = 1e-5
TILE = production.SCHEDULE.tile   # elements per tile of variants 2, 3 and 4
SUM_ROWS = 64                     # samples per backward-sums tile when L is short


def _affine(gamma, C, dtype, fill):
    return np.full(C, fill, dtype) if gamma is None else np.ascontiguousarray(gamma, dtype)


# -- variant 1: naive port, one prange iteration per set ----------------------

@njit_kernel()
def _v1_members(s, N, C, groups, per_channel):
    """Samples [n0, n1) and channels [c0, c1) of set s (all l)."""
    if per_channel:
        return 0, N, s, s + 1
    Cg = C // groups
    n = s // groups
    g = s - n * groups
    return n, n + 1, g * Cg, (g + 1) * Cg


@njit_kernel()
def _moments_3d(x3, n0, n1, c0, c1):
    """Mean and M2 = sum((x - mean)^2) of x3[n0:n1, c0:c1, :] in float64, by two
    passes with 3-D indexing."""
    L = x3.shape[2]
    acc = 0.0
    for n in range(n0, n1):
        for c in range(c0, c1):
            for i in range(L):
                acc += x3[n, c, i]
    m = acc / ((n1 - n0) * (c1 - c0) * L)
    acc = 0.0
    for n in range(n0, n1):
        for c in range(c0, c1):
            for i in range(L):
                d = x3[n, c, i] - m
                acc += d * d
    return m, acc


@njit_kernel(parallel=True)
def _v1_stats(x, groups, per_channel, mean, var):
    # Parallel axis: sets; set s writes only mean[s] and var[s].
    N, C, L = x.shape
    for s in numba.prange(mean.size):
        n0, n1, c0, c1 = _v1_members(s, N, C, groups, per_channel)
        mean[s], m2 = _moments_3d(x, n0, n1, c0, c1)
        var[s] = m2 / ((n1 - n0) * (c1 - c0) * L)


@njit_kernel(parallel=True)
def _v1_forward(x, mean, rstd, gamma, beta, groups, per_channel, y):
    # Parallel axis: sets; set s writes only y at its own members.
    N, C, L = x.shape
    for s in numba.prange(mean.size):
        n0, n1, c0, c1 = _v1_members(s, N, C, groups, per_channel)
        for n in range(n0, n1):
            for c in range(c0, c1):
                for i in range(L):
                    y[n, c, i] = (x[n, c, i] - mean[s]) * rstd[s] * gamma[c] + beta[c]


@njit_kernel(parallel=True)
def _v1_dx(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats, dx):
    # Parallel axis: sets; set s writes only dx at its own members.
    N, C, L = x.shape
    for s in numba.prange(mean.size):
        n0, n1, c0, c1 = _v1_members(s, N, C, groups, per_channel)
        sum_dxhat = 0.0
        sum_dxhat_xhat = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for i in range(L):
                    dxhat = dy[n, c, i] * gamma[c]
                    sum_dxhat += dxhat
                    sum_dxhat_xhat += dxhat * (x[n, c, i] - mean[s]) * rstd[s]
        M = (n1 - n0) * (c1 - c0) * L
        if fixed_stats:
            sum_dxhat = 0.0
            sum_dxhat_xhat = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for i in range(L):
                    xhat = (x[n, c, i] - mean[s]) * rstd[s]
                    dx[n, c, i] = rstd[s] * (dy[n, c, i] * gamma[c] - sum_dxhat / M
                                             - xhat * sum_dxhat_xhat / M)


@njit_kernel(parallel=True)
def _v1_param_grads(x, dy, mean, rstd, groups, per_channel, dgamma, dbeta):
    # Parallel axis: channels; channel c writes only dgamma[c] and dbeta[c].
    N, C, L = x.shape
    for c in numba.prange(C):
        g = np.int64(c) // (C // groups)
        acc_g = 0.0
        acc_b = 0.0
        for n in range(N):
            s = np.int64(c) if per_channel else n * groups + g
            for i in range(L):
                acc_g += dy[n, c, i] * (x[n, c, i] - mean[s]) * rstd[s]
                acc_b += dy[n, c, i]
        dgamma[c] = acc_g
        dbeta[c] = acc_b


def stats_v1(x, groups, per_channel, eps):
    S = set_shape(x.shape, groups, per_channel)[0]
    mean, var = np.empty(S), np.empty(S)
    _v1_stats(x, groups, per_channel, mean, var)
    return mean, var, 1.0 / np.sqrt(var + eps)


def forward_v1(x, mean, rstd, gamma, beta, groups, per_channel):
    C = x.shape[1]
    y = np.empty_like(x)
    _v1_forward(x, mean, rstd, _affine(gamma, C, np.float64, 1.0),
                _affine(beta, C, np.float64, 0.0), groups, per_channel, y)
    return y


def backward_v1(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False):
    C = x.shape[1]
    dx = np.empty_like(x)
    _v1_dx(x, dy, mean, rstd, _affine(gamma, C, np.float64, 1.0), groups, per_channel,
           fixed_stats, dx)
    if gamma is None:
        return dx, None, None
    dgamma, dbeta = np.empty(C), np.empty(C)
    _v1_param_grads(x, dy, mean, rstd, groups, per_channel, dgamma, dbeta)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# -- variant 2: tiles, 3-D indexing in the inner loops --------------------------

@njit_kernel(parallel=True)
def _v2_stats(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    # Parallel axis: tiles; tile t writes only its own partial slots.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = tile_bounds(t, N, C, Cg, NB, CB, nbg)
        if per_channel:
            for c in range(c0, c1):
                mean_p[nb, c], m2_p[nb, c] = _moments_3d(x3, n0, n1, c, c + 1)
        else:
            mean_p[j, n0 * G + g], m2_p[j, n0 * G + g] = _moments_3d(x3, n0, n0 + 1, c0, c1)


@njit_kernel(parallel=True)
def _v2_forward(x, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, beta, y):
    # Parallel axis: tiles of one sample; tile t writes only y[n, c0:c1, :].
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    y3 = y.reshape(N, C, L)
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = tile_bounds(t, N, C, Cg, 1, CB, nbg)
        for c in range(c0, c1):
            s = c if per_channel else n * G + g
            a = rstd[s] * gamma[c]
            for i in range(L):
                y3[n, c, i] = (x3[n, c, i] - mean[s]) * a + beta[c]


@njit_kernel(parallel=True)
def _v2_sums(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma,
             dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p):
    # Parallel axis: tiles; tile t writes only row nb, columns c0..c1 of the
    # per-channel partials and slots (j, n*G + g) of its samples.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    dy3 = dy.reshape(N, C, L)
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = tile_bounds(t, N, C, Cg, NB, CB, nbg)
        for c in range(c0, c1):
            dbeta_p[nb, c] = 0.0
            dgamma_p[nb, c] = 0.0
        for n in range(n0, n1):
            sum_dxhat = 0.0
            sum_dxhat_xhat = 0.0
            for c in range(c0, c1):
                s = c if per_channel else n * G + g
                sum_dy = 0.0
                sum_dy_xhat = 0.0
                for i in range(L):
                    sum_dy += dy3[n, c, i]
                    sum_dy_xhat += dy3[n, c, i] * (x3[n, c, i] - mean[s]) * rstd[s]
                dbeta_p[nb, c] += sum_dy
                dgamma_p[nb, c] += sum_dy_xhat
                sum_dxhat += gamma[c] * sum_dy
                sum_dxhat_xhat += gamma[c] * sum_dy_xhat
            if not per_channel:
                sum_dxhat_p[j, n * G + g] = sum_dxhat
                sum_dxhat_xhat_p[j, n * G + g] = sum_dxhat_xhat


@njit_kernel(parallel=True)
def _v2_dx(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma, k1, k2,
           fixed_stats, dx):
    # Parallel axis: tiles; tile t writes only dx[n, c0:c1, :] of its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    dy3 = dy.reshape(N, C, L)
    dx3 = dx.reshape(N, C, L)
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, g, _ = tile_bounds(t, N, C, Cg, NB, CB, nbg)
        for n in range(n0, n1):
            for c in range(c0, c1):
                s = c if per_channel else n * G + g
                a = rstd[s] * gamma[c]
                for i in range(L):
                    if fixed_stats:
                        dx3[n, c, i] = a * dy3[n, c, i]
                    else:
                        dx3[n, c, i] = (a * dy3[n, c, i] - k1[s]
                                        - k2[s] * (x3[n, c, i] - mean[s]))


# -- variant 3: tiles + contiguous 1-D row slices, float64 math -----------------

@njit_kernel(inline="always")
def _span_sum(xs):
    """sum(xs) in float64."""
    acc = 0.0
    for i in range(xs.size):
        acc += xs[i]
    return acc


@njit_kernel(inline="always")
def _span_m2(xs, m):
    """sum((xs - m)^2) in float64."""
    acc = 0.0
    for i in range(xs.size):
        d = xs[i] - m
        acc += d * d
    return acc


@njit_kernel(inline="always")
def _add_row(acc, xs):
    """acc[i] += xs[i] (acc float64)."""
    for i in range(xs.size):
        acc[i] += xs[i]


@njit_kernel(inline="always")
def _add_row_m2(acc, xs, m):
    """acc[i] += (xs[i] - m[i])^2 (acc and m float64)."""
    for i in range(xs.size):
        d = xs[i] - m[i]
        acc[i] += d * d


@njit_kernel(parallel=True)
def _v3_stats(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    """Mean and M2 of each (tile, set) pair, two passes in float64.

    x is (N, C*L); the partials (P, S) are laid out as Tiles.for_stats's:
    per channel, [nb, c] for sample block nb; grouped (NB = 1), [j, n*G + g]
    for channel block j of group g.
    """
    # Parallel axis: tiles. Tile t writes only its own partials: row nb,
    # columns c0..c1 (per channel), or the single slot (j, set) (grouped).
    N, CL = x.shape
    G = CL // L // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = tile_bounds(t, N, G * Cg, Cg, NB, CB, nbg)
        count = (n1 - n0) * L
        if not per_channel:
            span = x[n0, c0 * L:c1 * L]
            mean_t = _span_sum(span) / span.size
            mean_p[j, n0 * G + g] = mean_t
            m2_p[j, n0 * G + g] = _span_m2(span, mean_t)
        elif L == 1:
            # A row of channels at a time: the channels' sums, then their M2.
            mean_row = mean_p[nb, c0:c1]
            m2_row = m2_p[nb, c0:c1]
            mean_row[:] = 0.0
            m2_row[:] = 0.0
            for n in range(n0, n1):
                _add_row(mean_row, x[n, c0:c1])
            mean_row /= count
            for n in range(n0, n1):
                _add_row_m2(m2_row, x[n, c0:c1], mean_row)
        else:
            for c in range(c0, c1):
                total = 0.0
                for n in range(n0, n1):
                    total += _span_sum(x[n, c * L:(c + 1) * L])
                mean_c = total / count
                m2_c = 0.0
                for n in range(n0, n1):
                    m2_c += _span_m2(x[n, c * L:(c + 1) * L], mean_c)
                mean_p[nb, c] = mean_c
                m2_p[nb, c] = m2_c


@njit_kernel(inline="always")
def _span_affine(xs, ys, m, a, b):
    """ys = (xs - m) * a + b over a span."""
    for i in range(xs.size):
        ys[i] = (xs[i] - m) * a + b


@njit_kernel(parallel=True)
def _v3_forward(x, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, beta, y):
    """y = (x - mean) * a + beta[c] with a = rstd * gamma[c], in float64; x, y are
    (N, C*L)."""
    # Parallel axis: tiles of one sample (NB = 1); tile t writes only
    # y[n, c0*L:c1*L].
    N, CL = x.shape
    G = CL // L // Cg
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = tile_bounds(t, N, G * Cg, Cg, 1, CB, nbg)
        if L == 1:
            xs = x[n, c0:c1]
            ys = y[n, c0:c1]
            for i in range(c1 - c0):
                s = c0 + i if per_channel else n * G + g
                ys[i] = (xs[i] - mean[s]) * (rstd[s] * gamma[c0 + i]) + beta[c0 + i]
        else:
            for c in range(c0, c1):
                s = c if per_channel else n * G + g
                _span_affine(x[n, c * L:(c + 1) * L], y[n, c * L:(c + 1) * L], mean[s],
                             rstd[s] * gamma[c], beta[c])


@njit_kernel(inline="always")
def _span_dy_sums(xs, dys, m):
    """sum(dy) and sum(dy * (x - m)) over a span, in float64."""
    s_dy = 0.0
    s_dy_xc = 0.0
    for i in range(xs.size):
        d = np.float64(dys[i])
        s_dy += d
        s_dy_xc += d * (xs[i] - m)
    return s_dy, s_dy_xc


@njit_kernel(inline="always")
def _channel_row_sums(xs, dys, ms, rs, p1, p2):
    """One row of channels (L == 1), each channel its own set of statistics
    ms[i], rs[i]: p1[i] += dy and p2[i] += dy * xhat."""
    for i in range(xs.size):
        d = np.float64(dys[i])
        p1[i] += d
        p2[i] += d * (xs[i] - ms[i]) * rs[i]


@njit_kernel(inline="always")
def _set_row_sums(xs, dys, m, r, gs, p1, p2):
    """One row of channels (L == 1) in one set of statistics m, r: p1[i] += dy and
    p2[i] += dy * xhat; returns the row's sum(dxhat) and sum(dxhat * xhat)."""
    a = 0.0
    b = 0.0
    for i in range(xs.size):
        d = np.float64(dys[i])
        d_xc = d * (xs[i] - m)
        p1[i] += d
        p2[i] += d_xc * r
        a += gs[i] * d
        b += gs[i] * d_xc
    return a, b * r


@njit_kernel(parallel=True)
def _v3_sums(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma,
             dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p):
    """Per tile, in float64: sum(dy) and sum(dy * xhat) of each channel over its
    samples (dbeta_p, dgamma_p, (nnb, C)) and, grouped, sum(dxhat) and
    sum(dxhat * xhat) of each (sample, set) over its channels
    (sum_dxhat_p, sum_dxhat_xhat_p, (nbg, S))."""
    # Parallel axis: tiles. Tile t writes only row nb, columns c0..c1 of the
    # per-channel partials, and slots (j, n*G + g) for its samples n.
    N, CL = x.shape
    G = CL // L // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = tile_bounds(t, N, G * Cg, Cg, NB, CB, nbg)
        p1 = dbeta_p[nb, c0:c1]
        p2 = dgamma_p[nb, c0:c1]
        p1[:] = 0.0
        p2[:] = 0.0
        for n in range(n0, n1):
            s = n * G + g
            a = 0.0
            b = 0.0
            if L == 1 and per_channel:
                _channel_row_sums(x[n, c0:c1], dy[n, c0:c1], mean[c0:c1], rstd[c0:c1], p1, p2)
            elif L == 1:
                a, b = _set_row_sums(x[n, c0:c1], dy[n, c0:c1], mean[s], rstd[s], gamma[c0:c1],
                                     p1, p2)
            else:
                for c in range(c0, c1):
                    sc = c if per_channel else s
                    s_dy, s_dy_xc = _span_dy_sums(x[n, c * L:(c + 1) * L],
                                                  dy[n, c * L:(c + 1) * L], mean[sc])
                    p1[c - c0] += s_dy
                    p2[c - c0] += s_dy_xc * rstd[sc]
                    a += gamma[c] * s_dy
                    b += gamma[c] * s_dy_xc * rstd[sc]
            if not per_channel:
                sum_dxhat_p[j, s] = a
                sum_dxhat_xhat_p[j, s] = b


@njit_kernel(inline="always")
def _span_dx(xs, dys, dxs, a, k1, k2, m, fixed_stats):
    """dxs = a * dys - k1 - k2 * (xs - m) over a span; a * dys with ``fixed_stats``."""
    for i in range(dxs.size):
        dxs[i] = a * dys[i] if fixed_stats else a * dys[i] - k1 - k2 * (xs[i] - m)


@njit_kernel(parallel=True)
def _v3_dx(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma, k1, k2,
           fixed_stats, dx):
    """dx = rstd * gamma[c] * dy - k1 - k2 * (x - mean) with the per-set constants
    k1, k2 and mean; dx = rstd * gamma[c] * dy with ``fixed_stats``. The
    arithmetic is in the dtype of the constants (float64 in variant 3, the
    dtype of x in variant 4)."""
    # Parallel axis: tiles; tile t writes only dx[n, c0*L:c1*L] for its samples n.
    N, CL = x.shape
    G = CL // L // Cg
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, g, _ = tile_bounds(t, N, G * Cg, Cg, NB, CB, nbg)
        for n in range(n0, n1):
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                dxs = dx[n, c0:c1]
                for i in range(c1 - c0):
                    s = c0 + i if per_channel else n * G + g
                    a = rstd[s] * gamma[c0 + i]
                    dxs[i] = (a * dys[i] if fixed_stats
                              else a * dys[i] - k1[s] - k2[s] * (xs[i] - mean[s]))
            else:
                for c in range(c0, c1):
                    s = c if per_channel else n * G + g
                    _span_dx(x[n, c * L:(c + 1) * L], dy[n, c * L:(c + 1) * L],
                             dx[n, c * L:(c + 1) * L], rstd[s] * gamma[c], k1[s], k2[s],
                             mean[s], fixed_stats)


# -- the Python side of variants 2, 3 and 4 -------------------------------------

def _tiled_stats(stats_kernel):
    """norm_stats around a tile kernel of per-tile (mean, M2) partials."""

    def stats(x, groups, per_channel, eps):
        N, C, L = x.shape
        S = set_shape(x.shape, groups, per_channel)[0]
        tiles, counts = Tiles.for_stats(N, C, L, groups, per_channel, TILE)
        mean_p, m2_p = np.empty((counts.size, S)), np.empty((counts.size, S))
        stats_kernel(x.reshape(N, C * L), L, per_channel, tiles.Cg,
                     tiles.NB, tiles.CB, tiles.nbg, tiles.count, mean_p, m2_p)
        # The partials combined: the count-weighted mean of their means, and M2 as
        # the sum of theirs plus count * (partial mean - mean)^2.
        total = counts.sum()
        mean = counts @ mean_p / total
        var = (m2_p.sum(axis=0) + counts @ np.square(mean_p - mean)) / total
        return mean, var, 1.0 / np.sqrt(var + eps)
    return stats


def _tiled_forward(forward_kernel):
    """norm_forward around a tile kernel of one sample per tile."""

    def forward(x, mean, rstd, gamma, beta, groups, per_channel):
        N, C, L = x.shape
        y = np.empty_like(x)
        tiles = Tiles(N, C, L, groups, per_channel, size=TILE)
        forward_kernel(x.reshape(N, C * L), L, per_channel, tiles.Cg, tiles.CB, tiles.nbg,
                       tiles.count, mean, rstd, _affine(gamma, C, x.dtype, 1.0),
                       _affine(beta, C, x.dtype, 0.0), y.reshape(N, C * L))
        return y
    return forward


def _tiled_backward(sums_kernel, dx_kernel, sums_size=TILE, dx_rows=1, in_dtype=False):
    """norm_backward around a tile kernel of partial sums and a tile kernel of dx
    with per-set constants k1 = rstd * mean(dxhat) and k2 = rstd^2 *
    mean(dxhat * xhat): float64, around the mean; with ``in_dtype`` in the dtype
    of x, around mean_hi (the mean rounded to that dtype), the rest of
    k2 * (x - mean) folded into k1."""

    def backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False):
        N, C, L = x.shape
        S, M = set_shape(x.shape, groups, per_channel)
        g = _affine(gamma, C, x.dtype, 1.0)
        x2, dy2 = x.reshape(N, C * L), dy.reshape(N, C * L)
        tiles = Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-SUM_ROWS // L),
                      size=sums_size)
        dbeta_p, dgamma_p = np.empty((tiles.nnb, C)), np.empty((tiles.nnb, C))
        sum_dxhat_p, sum_dxhat_xhat_p = np.empty((tiles.nbg, S)), np.empty((tiles.nbg, S))
        sums_kernel(x2, dy2, L, per_channel, tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                    tiles.count, mean, rstd, g, dbeta_p, dgamma_p, sum_dxhat_p,
                    sum_dxhat_xhat_p)
        dbeta, dgamma = dbeta_p.sum(axis=0), dgamma_p.sum(axis=0)
        if per_channel:
            sum_dxhat, sum_dxhat_xhat = g * dbeta, g * dgamma
        else:
            sum_dxhat, sum_dxhat_xhat = sum_dxhat_p.sum(axis=0), sum_dxhat_xhat_p.sum(axis=0)
        k1 = rstd * sum_dxhat / M
        k2 = rstd * rstd * sum_dxhat_xhat / M
        center = mean
        if in_dtype:
            center = mean.astype(x.dtype)
            k1 = k1 - k2 * (mean - center)
            rstd, k1, k2 = rstd.astype(x.dtype), k1.astype(x.dtype), k2.astype(x.dtype)
        dx = np.empty_like(x)
        tiles = Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-dx_rows // L), size=TILE)
        dx_kernel(x2, dy2, L, per_channel, tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                  tiles.count, center, rstd, g, k1, k2, fixed_stats, dx.reshape(N, C * L))
        if gamma is None:
            return dx, None, None
        return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)
    return backward


def _variant(stats, forward, backward):
    """(train_forward, forward, backward): the training forward is stats, then forward."""
    def train_forward(x, gamma, beta, groups, per_channel, eps):
        mean, var, rstd = stats(x, groups, per_channel, eps)
        return forward(x, mean, rstd, gamma, beta, groups, per_channel), mean, var, rstd
    return train_forward, forward, backward


# Variant 5: production without the fused (N, C) BatchNorm path.
_FUSED_ROWS = production.Schedule(column_blocks=False)

VARIANTS = {
    "1 naive, per set": _variant(stats_v1, forward_v1, backward_v1),
    "2 tiles, 3-D index": _variant(_tiled_stats(_v2_stats), _tiled_forward(_v2_forward),
                                   _tiled_backward(_v2_sums, _v2_dx)),
    "3 tiles, row slices": _variant(_tiled_stats(_v3_stats), _tiled_forward(_v3_forward),
                                    _tiled_backward(_v3_sums, _v3_dx)),
    "4 shifted, dtype passes": _variant(production.norm_stats, production.norm_forward,
                                        _tiled_backward(_v3_sums, _v3_dx, sums_size=4 * TILE,
                                                        dx_rows=8, in_dtype=True)),
    "5 fused row sets": tuple(functools.partial(op, schedule=_FUSED_ROWS) for op in (
        production.forward_train, production.forward, production.backward)),
    "6 tinynet": (production.norm_forward_train, production.norm_forward,
                  production.norm_backward),
}


def _check_close(name, got, want, dtype):
    if want is None:
        assert got is None, name
        return
    tol = 2e-6 if dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=name)
    assert got.dtype == want.dtype or got.dtype == dtype, name


def check():
    """Every variant against the ref ops over tinynet.ops.norm.cases (their large
    cases included), float32 and float64, at offset 0.5 and at offset 100 with std
    0.1, with the input's statistics and with fixed ones."""
    rng = np.random.default_rng(0)
    for case in ALL_CASES:
        shape, groups, per_channel = case.shape, case.groups, case.per_channel
        C = shape[1]
        for dtype in (np.float32, np.float64):
            for offset, scale in ((0.5, 2.0), (100.0, 0.1)):
                x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
                dy = rng.standard_normal(shape).astype(dtype)
                gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
                beta = rng.standard_normal(C).astype(dtype)
                x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
                g64, b64 = gamma.astype(np.float64), beta.astype(np.float64)
                y_ref, mean, var, rstd = ref.norm_forward_train(x64, g64, b64, groups,
                                                                per_channel, EPS)
                for fixed in (False, True):
                    grads_ref = ref.norm_backward(x64, dy64, mean, rstd, g64, groups,
                                                  per_channel, fixed)
                    for name, (train_forward, forward, backward) in VARIANTS.items():
                        what = f"{name} {case.name} {np.dtype(dtype).name} x~{offset}"
                        y, *stats = train_forward(x, gamma, beta, groups, per_channel, EPS)
                        for part, g_, w_ in zip(("mean", "var", "rstd"), stats,
                                                (mean, var, rstd)):
                            np.testing.assert_allclose(g_, w_, rtol=1e-10,
                                                       err_msg=f"{what} {part}")
                        _check_close(f"{what} y train", y, y_ref, dtype)
                        _check_close(f"{what} y",
                                     forward(x, mean, rstd, gamma, beta, groups, per_channel),
                                     y_ref, dtype)
                        grads = backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed)
                        for part, g_, w_ in zip(("dx", "dgamma", "dbeta"), grads, grads_ref):
                            _check_close(f"{what} fixed={fixed} {part}", g_, w_, dtype)


# -- bench --------------------------------------------------------------------

def _norms(torch):
    """(label, tinynet layer factory, torch module factory, (N, C, L) view, groups,
    per_channel) of the four targets on SHAPE."""
    import tinynet as tn
    N, C, H, W = SHAPE
    nn = torch.nn if torch is not None else None
    return [
        ("BatchNorm", lambda: tn.BatchNorm(C), nn and (lambda: nn.BatchNorm2d(C)),
         (N, C, H * W), 1, True),
        ("LayerNorm", lambda: tn.LayerNorm((C, H, W)), nn and (lambda: nn.LayerNorm((C, H, W))),
         (N, C * H * W, 1), 1, False),
        ("InstanceNorm", lambda: tn.InstanceNorm(C),
         nn and (lambda: nn.InstanceNorm2d(C, affine=True)), (N, C, H * W), C, False),
        ("GroupNorm(8)", lambda: tn.GroupNorm(8, C), nn and (lambda: nn.GroupNorm(8, C)),
         (N, C, H * W), 8, False),
    ]


def _torch_step(torch, module, x, dy):
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def step():
        xt.grad = None
        module(xt).backward(dyt)
    return step


def _bench_targets(rows, targets, x, dy, variants, repeat_ops, repeat):
    """Rows of forward + backward for each target: every variant's ops on its
    (N, C, L) view (``repeat_ops`` timed calls) and the tinynet layer
    (``repeat``), beside torch's module (``repeat``)."""
    import tinynet as tn
    torch = try_torch()
    step_bytes = 8 * tensor_bytes(x)
    for label, layer_factory, torch_factory, view, groups, per_channel in targets:
        t_torch = None
        if torch is not None:
            t_torch = median_time(_torch_step(torch, torch_factory(), x, dy), repeat=repeat)
        xv, dyv = x.reshape(view), dy.reshape(view)
        gamma = np.ones(view[1], np.float32)
        beta = np.zeros(view[1], np.float32)
        for name in variants:
            train_forward, _, backward = VARIANTS[name]

            def step():
                _, mean, _, rstd = train_forward(xv, gamma, beta, groups, per_channel, EPS)
                backward(xv, dyv, mean, rstd, gamma, groups, per_channel)
            rows.append(Row(f"{label} ops fwd+bwd", name, median_time(step, repeat=repeat_ops),
                            step_bytes, torch_seconds=t_torch))
        layer = layer_factory()
        with tn.use_backend("cpu"):
            def layer_step():
                layer.forward(x)
                layer.backward(dy)
            rows.append(Row(f"{label} layer fwd+bwd", "tinynet cpu",
                            median_time(layer_step, repeat=repeat), step_bytes,
                            torch_seconds=t_torch))


def bench():
    import tinynet as tn
    torch = try_torch()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    rows = []
    _bench_targets(rows, _norms(torch), x, dy, list(VARIANTS), repeat_ops=15, repeat=25)

    # BatchNorm (BatchNorm1d's case) and LayerNorm on an (N, C) = SHAPE_2D input.
    N, C = SHAPE_2D
    nn = torch.nn if torch is not None else None
    targets_2d = [
        ("BatchNorm (N, C)", lambda: tn.BatchNorm(C), nn and (lambda: nn.BatchNorm1d(C)),
         (N, C, 1), 1, True),
        ("LayerNorm (N, C)", lambda: tn.LayerNorm(C), nn and (lambda: nn.LayerNorm(C)),
         (N, C, 1), 1, False)]
    _bench_targets(rows, targets_2d, rng.standard_normal(SHAPE_2D).astype(np.float32),
                   rng.standard_normal(SHAPE_2D).astype(np.float32),
                   ["5 fused row sets", "6 tinynet"], repeat_ops=51, repeat=51)

    # BatchNorm in eval mode: running statistics, one pass x -> y.
    C = SHAPE[1]
    xv = x.reshape(SHAPE[0], C, -1)
    running_mean = rng.standard_normal(C)
    rstd = 1.0 / np.sqrt(rng.uniform(0.5, 2.0, C) + EPS)
    gamma = rng.uniform(0.5, 1.5, C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    t_torch = None
    if torch is not None:
        module = torch.nn.BatchNorm2d(C).eval()
        xt = torch.from_numpy(x)
        with torch.no_grad():
            t_torch = median_time(lambda: module(xt), repeat=25)
    for name, (_, forward, _) in VARIANTS.items():
        rows.append(Row("BatchNorm eval fwd", name,
                        median_time(lambda: forward(xv, running_mean, rstd, gamma, beta, 1, True)),
                        2 * tensor_bytes(x), torch_seconds=t_torch))
    layer = tn.BatchNorm(C).eval()
    with tn.use_backend("cpu"):
        rows.append(Row("BatchNorm eval layer fwd", "tinynet cpu",
                        median_time(lambda: layer.forward(x), repeat=25), 2 * tensor_bytes(x),
                        torch_seconds=t_torch))
    return rows


def main(argv=None):
    return lab_main("norm", check, bench, argv)


if __name__ == "__main__":
    main()
