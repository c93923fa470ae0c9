"""Kernel lab: the normalization family (BatchNorm, LayerNorm, InstanceNorm, GroupNorm).

The ops (tinynet.backends.ref.norm, the reference): x viewed as (N, C, L);
``per_channel=True`` (BatchNorm) has one set per channel c over (n, l),
``per_channel=False`` (LN, IN, GN) one set per (n, g) over the C/G channels
of group g and all l. Per set:

    mean, var = the set's mean and biased variance,  rstd = 1 / sqrt(var + eps)
    y  = (x - mean) * rstd * gamma[c] + beta[c]
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * gamma[c]
    dgamma[c] = sum over (n, l) of dy * xhat,  dbeta[c] = sum over (n, l) of dy

A training step runs the training forward (the statistics, then y) and
norm_backward. Each variant provides (train_forward, norm_forward,
norm_backward) with the signatures of the ref ops:

1. naive port: one prange iteration per set, which loops over its members
   with 3-D indexing x[n, c, l]; a second prange over channels for dgamma
   and dbeta. BatchNorm then has only C = 32 tasks, each one strided, and
   LayerNorm N = 64.
2. tiles: prange over many equal tiles (samples [n0, n1) x channels
   [c0, c1) x all l, never across a group), per-tile partial results (mean
   and M2; the sums of dy and dy * xhat per channel and per set), then a
   serial combine (Chan's merge for the statistics). Inner loops run over
   l with 3-D indexing x[n, c, l]; for LayerNorm's (N, M, 1) view that
   inner loop has length 1.
3. tiles + contiguous 1-D slices (xs = x[n, c*L:(c+1)*L]), and for L == 1
   the inner loop runs over a row of channels (x[n, c0:c1]), so it
   vectorizes for LayerNorm too. Every pass computes in float64; the
   statistics are two-pass.
4. 3 plus: one-pass shifted sums for the statistics (d = x - K with K a
   member of the set, M2 = sum(d^2) - sum(d)^2 / n: one float32 -> float64
   conversion per element instead of two); the forward and dx passes in
   the dtype of x, with the mean split into mean_hi (rounded to that dtype)
   and a correction folded into the per-set constants, so float32 data
   needs no conversion there; for L == 1, tiles of several samples. Its
   statistics and forward kernels are the production ones (norm_stats,
   norm_forward); its backward kernels are below.
5. production (tinynet/ops/norm/cpu.py, promoted from here): 4, with
   row sets (LN, IN, GN) fused per set: the training forward
   (norm_forward_train) computes a set's statistics and then its y while
   the set is in cache, and the backward a set's sums and then its dx
   (for L == 1 two samples at a time, halving the read-modify-writes of
   the dgamma and dbeta partials). x is read once in the forward and
   (x, dy) once in the backward. BatchNorm keeps the two-kernel passes of
   4: its sets span the whole batch.
6. production: 5, and BatchNorm on (N, C) (L == 1) fused per block of
   channels: one prange over blocks of CB channels x all N rows computes
   the statistics and then y, and in the backward the two sums and then
   dx; one launch per op instead of two kernels, the merge and their NumPy
   glue. Variant 5 is the production ops with this path turned off.

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
import numpy as np
import numba

from tinynet.backends import ref
from tinynet.backends.cpu import norm as production
from tinynet.backends.cpu.jit import njit_kernel
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch

SHAPE = (64, 32, 28, 28)
SHAPE_2D = (256, 512)
EPS = 1e-5


def _sets(x, groups, per_channel):
    N, C, _ = x.shape
    return C if per_channel else N * groups


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


@njit_kernel(parallel=True)
def _v1_stats(x, groups, per_channel, mean, var):
    # Parallel axis: sets; set s writes only mean[s] and var[s].
    N, C, L = x.shape
    for s in numba.prange(mean.size):
        n0, n1, c0, c1 = _v1_members(s, N, C, groups, per_channel)
        acc = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    acc += x[n, c, l]
        m = acc / ((n1 - n0) * (c1 - c0) * L)
        acc = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    d = x[n, c, l] - m
                    acc += d * d
        mean[s] = m
        var[s] = acc / ((n1 - n0) * (c1 - c0) * L)


@njit_kernel(parallel=True)
def _v1_forward(x, mean, rstd, gamma, beta, groups, per_channel, y):
    # Parallel axis: sets; set s writes only y at its own members.
    N, C, L = x.shape
    for s in numba.prange(mean.size):
        n0, n1, c0, c1 = _v1_members(s, N, C, groups, per_channel)
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    y[n, c, l] = (x[n, c, l] - mean[s]) * rstd[s] * gamma[c] + beta[c]


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
                for l in range(L):
                    dxhat = dy[n, c, l] * gamma[c]
                    sum_dxhat += dxhat
                    sum_dxhat_xhat += dxhat * (x[n, c, l] - mean[s]) * rstd[s]
        M = (n1 - n0) * (c1 - c0) * L
        if fixed_stats:
            sum_dxhat = 0.0
            sum_dxhat_xhat = 0.0
        for n in range(n0, n1):
            for c in range(c0, c1):
                for l in range(L):
                    xhat = (x[n, c, l] - mean[s]) * rstd[s]
                    dx[n, c, l] = rstd[s] * (dy[n, c, l] * gamma[c] - sum_dxhat / M
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
            for l in range(L):
                acc_g += dy[n, c, l] * (x[n, c, l] - mean[s]) * rstd[s]
                acc_b += dy[n, c, l]
        dgamma[c] = acc_g
        dbeta[c] = acc_b


def stats_v1(x, groups, per_channel, eps):
    S = _sets(x, groups, per_channel)
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


# -- tiling, shared by variants 2, 3 and 4 -------------------------------------

TILE = 8192      # elements per tile
SUM_ROWS = 64    # samples per backward-sums tile when L is short


def _split(total, target):
    """Split ``total`` into parts of at most about ``target``: (count, size)."""
    count = max(1, -(-total // max(1, target)))
    size = max(1, -(-total // count))
    return -(-total // size), size


class _Tiles:
    """NB samples x CB channels per tile; channel blocks never cross a group
    (per-channel sets count as one group of C)."""

    def __init__(self, N, C, L, groups, per_channel, rows_per_tile=1, size=TILE):
        self.Cg = C if per_channel else C // groups
        self.nnb, self.NB = _split(N, rows_per_tile)
        self.nbg, self.CB = _split(self.Cg, size // (self.NB * L))
        self.count = self.nnb * (C // self.Cg) * self.nbg


@njit_kernel()
def _tile(t, N, C, Cg, NB, CB, nbg):
    """Tile t: sample block nb, samples [n0, n1), channels [c0, c1), group g,
    channel block j within g."""
    ncb = (C // Cg) * nbg
    nb = t // ncb
    k = t - nb * ncb
    g = k // nbg
    j = k - g * nbg
    n0 = nb * NB
    c0 = g * Cg + j * CB
    return nb, n0, min(N, n0 + NB), c0, min(c0 + CB, (g + 1) * Cg), g, j


# -- variant 2: tiles, 3-D indexing in the inner loops --------------------------

@njit_kernel(parallel=True)
def _v2_stats(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    # Parallel axis: tiles; tile t writes only its own partial slots.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
        if per_channel:
            for c in range(c0, c1):
                acc = 0.0
                for n in range(n0, n1):
                    for l in range(L):
                        acc += x3[n, c, l]
                m = acc / ((n1 - n0) * L)
                acc = 0.0
                for n in range(n0, n1):
                    for l in range(L):
                        d = x3[n, c, l] - m
                        acc += d * d
                mean_p[nb, c] = m
                m2_p[nb, c] = acc
        else:
            acc = 0.0
            for c in range(c0, c1):
                for l in range(L):
                    acc += x3[n0, c, l]
            m = acc / ((c1 - c0) * L)
            acc = 0.0
            for c in range(c0, c1):
                for l in range(L):
                    d = x3[n0, c, l] - m
                    acc += d * d
            mean_p[j, n0 * G + g] = m
            m2_p[j, n0 * G + g] = acc


@njit_kernel(parallel=True)
def _v2_forward(x, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, beta, y):
    # Parallel axis: tiles of one sample; tile t writes only y[n, c0:c1, :].
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    y3 = y.reshape(N, C, L)
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = _tile(t, N, C, Cg, 1, CB, nbg)
        for c in range(c0, c1):
            s = c if per_channel else n * G + g
            a = rstd[s] * gamma[c]
            b = beta[c] - mean[s] * a
            for l in range(L):
                y3[n, c, l] = x3[n, c, l] * a + b


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
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
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
                for l in range(L):
                    sum_dy += dy3[n, c, l]
                    sum_dy_xhat += dy3[n, c, l] * (x3[n, c, l] - mean[s]) * rstd[s]
                dbeta_p[nb, c] += sum_dy
                dgamma_p[nb, c] += sum_dy_xhat
                sum_dxhat += gamma[c] * sum_dy
                sum_dxhat_xhat += gamma[c] * sum_dy_xhat
            if not per_channel:
                sum_dxhat_p[j, n * G + g] = sum_dxhat
                sum_dxhat_xhat_p[j, n * G + g] = sum_dxhat_xhat


@njit_kernel(parallel=True)
def _v2_dx(x, dy, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, k1, k2,
           fixed_stats, dx):
    # Parallel axis: tiles of one sample; tile t writes only dx[n, c0:c1, :].
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    x3 = x.reshape(N, C, L)
    dy3 = dy.reshape(N, C, L)
    dx3 = dx.reshape(N, C, L)
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = _tile(t, N, C, Cg, 1, CB, nbg)
        for c in range(c0, c1):
            s = c if per_channel else n * G + g
            a = rstd[s] * gamma[c]
            for l in range(L):
                if fixed_stats:
                    dx3[n, c, l] = a * dy3[n, c, l]
                else:
                    dx3[n, c, l] = a * dy3[n, c, l] - k1[s] - k2[s] * (x3[n, c, l] - mean[s])


# -- variant 3: tiles + contiguous 1-D row slices, float64 math -----------------

@njit_kernel(parallel=True)
def _v3_stats(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    """Mean and M2 of each (tile, set) pair, two-pass in float64.

    x is (N, C*L). Partials are (P, S): per channel, mean_p[nb, c] for sample
    block nb; grouped (NB = 1), mean_p[j, n*G + g] for channel block j of g.
    """
    # Parallel axis: tiles. Tile t writes only its own partials: row nb,
    # columns c0..c1 (per channel), or the single slot (j, set) (grouped).
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
        if per_channel:
            m = mean_p[nb, c0:c1]
            q = m2_p[nb, c0:c1]
            for i in range(c1 - c0):
                m[i] = 0.0
                q[i] = 0.0
            for n in range(n0, n1):
                if L == 1:
                    xs = x[n, c0:c1]
                    for i in range(c1 - c0):
                        m[i] += xs[i]
                else:
                    for c in range(c0, c1):
                        xs = x[n, c * L:(c + 1) * L]
                        acc = 0.0
                        for l in range(L):
                            acc += xs[l]
                        m[c - c0] += acc
            for i in range(c1 - c0):
                m[i] /= (n1 - n0) * L
            for n in range(n0, n1):
                if L == 1:
                    xs = x[n, c0:c1]
                    for i in range(c1 - c0):
                        d = xs[i] - m[i]
                        q[i] += d * d
                else:
                    for c in range(c0, c1):
                        xs = x[n, c * L:(c + 1) * L]
                        mc = m[c - c0]
                        acc = 0.0
                        for l in range(L):
                            d = xs[l] - mc
                            acc += d * d
                        q[c - c0] += acc
        else:
            xs = x[n0, c0 * L:c1 * L]
            acc = 0.0
            for i in range(xs.size):
                acc += xs[i]
            mt = acc / xs.size
            acc = 0.0
            for i in range(xs.size):
                d = xs[i] - mt
                acc += d * d
            mean_p[j, n0 * G + g] = mt
            m2_p[j, n0 * G + g] = acc


@njit_kernel(parallel=True)
def _v3_forward(x, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, beta, y):
    """y = x * a + b with a = rstd * gamma[c], b = beta[c] - mean * a; x, y (N, C*L)."""
    # Parallel axis: tiles of one sample (NB = 1); tile t writes only
    # y[n, c0*L:c1*L].
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = _tile(t, N, C, Cg, 1, CB, nbg)
        s = n * G + g
        if L == 1:
            xs = x[n, c0:c1]
            ys = y[n, c0:c1]
            gs = gamma[c0:c1]
            bs = beta[c0:c1]
            if per_channel:
                ms = mean[c0:c1]
                rs = rstd[c0:c1]
                for i in range(c1 - c0):
                    a = rs[i] * gs[i]
                    ys[i] = xs[i] * a + (bs[i] - ms[i] * a)
            else:
                m = mean[s]
                r = rstd[s]
                for i in range(c1 - c0):
                    a = r * gs[i]
                    ys[i] = xs[i] * a + (bs[i] - m * a)
        else:
            for c in range(c0, c1):
                if per_channel:
                    s = c
                a = rstd[s] * gamma[c]
                b = beta[c] - mean[s] * a
                xs = x[n, c * L:(c + 1) * L]
                ys = y[n, c * L:(c + 1) * L]
                for l in range(L):
                    ys[l] = xs[l] * a + b


@njit_kernel(parallel=True)
def _v3_sums(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma,
                   dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p):
    """Per tile: sum(dy) and sum(dy * xhat) of each channel over its samples
    (dbeta_p, dgamma_p, (nnb, C)), and, grouped, sum(dxhat) and sum(dxhat * xhat)
    of each (sample, set) over its channels (sum_dxhat_p, ..., (nbg, S))."""
    # Parallel axis: tiles. Tile t writes only row nb, columns c0..c1 of the
    # per-channel partials, and slots (j, n*G + g) for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
        p1 = dbeta_p[nb, c0:c1]
        p2 = dgamma_p[nb, c0:c1]
        for i in range(c1 - c0):
            p1[i] = 0.0
            p2[i] = 0.0
        for n in range(n0, n1):
            s = n * G + g
            sum_dxhat = 0.0
            sum_dxhat_xhat = 0.0
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                gs = gamma[c0:c1]
                if per_channel:
                    ms = mean[c0:c1]
                    rs = rstd[c0:c1]
                    for i in range(c1 - c0):
                        d = np.float64(dys[i])
                        p1[i] += d
                        p2[i] += d * (xs[i] - ms[i]) * rs[i]
                else:
                    m = mean[s]
                    r = rstd[s]
                    for i in range(c1 - c0):
                        d = np.float64(dys[i])
                        d_xhat = d * (xs[i] - m) * r
                        p1[i] += d
                        p2[i] += d_xhat
                        sum_dxhat += gs[i] * d
                        sum_dxhat_xhat += gs[i] * d_xhat
            else:
                for c in range(c0, c1):
                    if per_channel:
                        s = c
                    xs = x[n, c * L:(c + 1) * L]
                    dys = dy[n, c * L:(c + 1) * L]
                    m = mean[s]
                    sum_dy = 0.0
                    sum_dy_xc = 0.0
                    for l in range(L):
                        d = np.float64(dys[l])
                        sum_dy += d
                        sum_dy_xc += d * (xs[l] - m)
                    sum_dy_xhat = sum_dy_xc * rstd[s]
                    p1[c - c0] += sum_dy
                    p2[c - c0] += sum_dy_xhat
                    sum_dxhat += gamma[c] * sum_dy
                    sum_dxhat_xhat += gamma[c] * sum_dy_xhat
            if not per_channel:
                sum_dxhat_p[j, s] = sum_dxhat
                sum_dxhat_xhat_p[j, s] = sum_dxhat_xhat


@njit_kernel(parallel=True)
def _v3_dx(x, dy, L, per_channel, Cg, CB, nbg, ntiles, mean, rstd, gamma, k1, k2,
              fixed_stats, dx):
    """dx = rstd * gamma[c] * dy - k1 - k2 * (x - mean), with per-set
    k1 = rstd * mean(dxhat) and k2 = rstd^2 * mean(dxhat * xhat);
    dx = rstd * gamma[c] * dy with ``fixed_stats``."""
    # Parallel axis: tiles of one sample (NB = 1); tile t writes only
    # dx[n, c0*L:c1*L].
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        _, n, _, c0, c1, g, _ = _tile(t, N, C, Cg, 1, CB, nbg)
        s = n * G + g
        if fixed_stats:
            for c in range(c0, c1):
                if per_channel:
                    s = c
                a = rstd[s] * gamma[c]
                dys = dy[n, c * L:(c + 1) * L]
                dxs = dx[n, c * L:(c + 1) * L]
                for l in range(L):
                    dxs[l] = a * dys[l]
        elif L == 1:
            xs = x[n, c0:c1]
            dys = dy[n, c0:c1]
            dxs = dx[n, c0:c1]
            gs = gamma[c0:c1]
            if per_channel:
                ms = mean[c0:c1]
                rs = rstd[c0:c1]
                k1s = k1[c0:c1]
                k2s = k2[c0:c1]
                for i in range(c1 - c0):
                    dxs[i] = rs[i] * gs[i] * dys[i] - k1s[i] - k2s[i] * (xs[i] - ms[i])
            else:
                m = mean[s]
                r = rstd[s]
                b1 = k1[s]
                b2 = k2[s]
                for i in range(c1 - c0):
                    dxs[i] = r * gs[i] * dys[i] - b1 - b2 * (xs[i] - m)
        else:
            for c in range(c0, c1):
                if per_channel:
                    s = c
                a = rstd[s] * gamma[c]
                m = mean[s]
                b1 = k1[s]
                b2 = k2[s]
                xs = x[n, c * L:(c + 1) * L]
                dys = dy[n, c * L:(c + 1) * L]
                dxs = dx[n, c * L:(c + 1) * L]
                for l in range(L):
                    dxs[l] = a * dys[l] - b1 - b2 * (xs[l] - m)



# -- variant 4: shifted statistics, forward and dx in the dtype of x ------------

@njit_kernel(parallel=True)
def _v4_sums(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma,
             dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p):
    """Per tile, in float64: sum(dy) and sum(dy * xhat) of each channel over its
    samples (dbeta_p, dgamma_p, (nnb, C)) and, grouped, sum(dxhat) and
    sum(dxhat * xhat) of each (sample, set) over its channels
    (sum_dxhat_p, sum_dxhat_xhat_p, (nbg, S))."""
    # Parallel axis: tiles. Tile t writes only row nb, columns c0..c1 of the
    # per-channel partials, and slots (j, n*G + g) for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
        p1 = dbeta_p[nb, c0:c1]
        p2 = dgamma_p[nb, c0:c1]
        for i in range(c1 - c0):
            p1[i] = 0.0
            p2[i] = 0.0
        for n in range(n0, n1):
            s = n * G + g
            sum_dxhat = 0.0
            sum_dxhat_xhat = 0.0
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                gs = gamma[c0:c1]
                if per_channel:
                    ms = mean[c0:c1]
                    rs = rstd[c0:c1]
                    for i in range(c1 - c0):
                        d = np.float64(dys[i])
                        p1[i] += d
                        p2[i] += d * (xs[i] - ms[i]) * rs[i]
                else:
                    m = mean[s]
                    r = rstd[s]
                    for i in range(c1 - c0):
                        d = np.float64(dys[i])
                        d_xhat = d * (xs[i] - m) * r
                        p1[i] += d
                        p2[i] += d_xhat
                        sum_dxhat += gs[i] * d
                        sum_dxhat_xhat += gs[i] * d_xhat
            else:
                for c in range(c0, c1):
                    if per_channel:
                        s = c
                    xs = x[n, c * L:(c + 1) * L]
                    dys = dy[n, c * L:(c + 1) * L]
                    m = mean[s]
                    sum_dy = 0.0
                    sum_dy_xc = 0.0
                    for l in range(L):
                        d = np.float64(dys[l])
                        sum_dy += d
                        sum_dy_xc += d * (xs[l] - m)
                    sum_dy_xhat = sum_dy_xc * rstd[s]
                    p1[c - c0] += sum_dy
                    p2[c - c0] += sum_dy_xhat
                    sum_dxhat += gamma[c] * sum_dy
                    sum_dxhat_xhat += gamma[c] * sum_dy_xhat
            if not per_channel:
                sum_dxhat_p[j, s] = sum_dxhat
                sum_dxhat_xhat_p[j, s] = sum_dxhat_xhat


@njit_kernel(parallel=True)
def _v4_dx(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_hi, rstd, gamma, k2, k0,
           fixed_stats, dx):
    """dx = rstd * gamma[c] * dy - k2 * (x - mean_hi) + k0, in the dtype of x.

    Per set: k2 = rstd^2 * mean(dxhat * xhat) and k0 = k2 * (mean - mean_hi)
    - rstd * mean(dxhat), so that dx = rstd * (dxhat - mean(dxhat) - xhat *
    mean(dxhat * xhat)). With ``fixed_stats``, dx = rstd * gamma[c] * dy.
    """
    # Parallel axis: tiles; tile t writes only dx[n, c0*L:c1*L] for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, g, _ = _tile(t, N, C, Cg, NB, CB, nbg)
        for n in range(n0, n1):
            s = n * G + g
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                dxs = dx[n, c0:c1]
                gs = gamma[c0:c1]
                if per_channel:
                    ms = mean_hi[c0:c1]
                    rs = rstd[c0:c1]
                    k2s = k2[c0:c1]
                    k0s = k0[c0:c1]
                    if fixed_stats:
                        for i in range(c1 - c0):
                            dxs[i] = rs[i] * gs[i] * dys[i]
                    else:
                        for i in range(c1 - c0):
                            dxs[i] = rs[i] * gs[i] * dys[i] - k2s[i] * (xs[i] - ms[i]) + k0s[i]
                else:
                    m = mean_hi[s]
                    r = rstd[s]
                    b2 = k2[s]
                    b0 = k0[s]
                    for i in range(c1 - c0):
                        dxs[i] = r * gs[i] * dys[i] - b2 * (xs[i] - m) + b0
            else:
                for c in range(c0, c1):
                    if per_channel:
                        s = c
                    a = rstd[s] * gamma[c]
                    m = mean_hi[s]
                    b2 = k2[s]
                    b0 = k0[s]
                    xs = x[n, c * L:(c + 1) * L]
                    dys = dy[n, c * L:(c + 1) * L]
                    dxs = dx[n, c * L:(c + 1) * L]
                    if fixed_stats:
                        for l in range(L):
                            dxs[l] = a * dys[l]
                    else:
                        for l in range(L):
                            dxs[l] = a * dys[l] - b2 * (xs[l] - m) + b0


def backward_v4(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False):
    N, C, L = x.shape
    S = _sets(x, groups, per_channel)
    g = _affine(gamma, C, x.dtype, 1.0)
    x2, dy2 = x.reshape(N, C * L), dy.reshape(N, C * L)
    tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-SUM_ROWS // L), size=4 * TILE)
    dbeta_p, dgamma_p = np.empty((tiles.nnb, C)), np.empty((tiles.nnb, C))
    sum_dxhat_p, sum_dxhat_xhat_p = np.empty((tiles.nbg, S)), np.empty((tiles.nbg, S))
    _v4_sums(x2, dy2, L, per_channel, tiles.Cg, tiles.NB, tiles.CB, tiles.nbg, tiles.count,
             mean, rstd, g, dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p)
    dbeta, dgamma = dbeta_p.sum(axis=0), dgamma_p.sum(axis=0)
    if per_channel:
        sum_dxhat, sum_dxhat_xhat = g * dbeta, g * dgamma
    else:
        sum_dxhat, sum_dxhat_xhat = sum_dxhat_p.sum(axis=0), sum_dxhat_xhat_p.sum(axis=0)
    M = x.size // S
    mean_hi = mean.astype(x.dtype)
    k2 = rstd * rstd * sum_dxhat_xhat / M
    k0 = k2 * (mean - mean_hi) - rstd * sum_dxhat / M
    if fixed_stats:
        k2, k0 = np.zeros(S), np.zeros(S)
    dx = np.empty_like(x)
    tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-8 // L))
    _v4_dx(x2, dy2, L, per_channel, tiles.Cg, tiles.NB, tiles.CB, tiles.nbg, tiles.count,
           mean_hi, rstd.astype(x.dtype), g, k2.astype(x.dtype), k0.astype(x.dtype),
           fixed_stats, dx.reshape(N, C * L))
    if gamma is None:
        return dx, None, None
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# -- the Python side of variants 2 and 3 (they differ only in their kernels) ----

def _tiled_ops(stats_kernel, forward_kernel, sums_kernel, dx_kernel):
    """norm_stats, norm_forward, norm_backward around one set of tile kernels."""

    def stats(x, groups, per_channel, eps):
        N, C, L = x.shape
        S = _sets(x, groups, per_channel)
        if per_channel:
            tiles = _Tiles(N, C, L, groups, True, rows_per_tile=-(-TILE // L))
            count = [min(tiles.NB, N - p * tiles.NB) * L for p in range(tiles.nnb)]
        else:
            tiles = _Tiles(N, C, L, groups, False)
            count = [min(tiles.CB, tiles.Cg - p * tiles.CB) * L for p in range(tiles.nbg)]
        mean_p = np.empty((len(count), S))
        m2_p = np.empty((len(count), S))
        stats_kernel(x.reshape(N, C * L), L, per_channel, tiles.Cg, tiles.NB, tiles.CB,
                     tiles.nbg, tiles.count, mean_p, m2_p)
        mean, var = np.empty(S), np.empty(S)
        production._merge_stats(mean_p, m2_p, np.array(count, np.float64), mean, var)
        return mean, var, 1.0 / np.sqrt(var + eps)

    def forward(x, mean, rstd, gamma, beta, groups, per_channel):
        N, C, L = x.shape
        y = np.empty_like(x)
        tiles = _Tiles(N, C, L, groups, per_channel)
        forward_kernel(x.reshape(N, C * L), L, per_channel, tiles.Cg, tiles.CB, tiles.nbg,
                       tiles.count, mean, rstd, _affine(gamma, C, x.dtype, 1.0),
                       _affine(beta, C, x.dtype, 0.0), y.reshape(N, C * L))
        return y

    def backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False):
        N, C, L = x.shape
        S = _sets(x, groups, per_channel)
        g = _affine(gamma, C, x.dtype, 1.0)
        x2, dy2 = x.reshape(N, C * L), dy.reshape(N, C * L)
        tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-SUM_ROWS // L))
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
        M = x.size // S
        k1 = rstd * sum_dxhat / M
        k2 = rstd * rstd * sum_dxhat_xhat / M
        dx = np.empty_like(x)
        tiles = _Tiles(N, C, L, groups, per_channel)
        dx_kernel(x2, dy2, L, per_channel, tiles.Cg, tiles.CB, tiles.nbg, tiles.count, mean,
                  rstd, g, k1, k2, fixed_stats, dx.reshape(N, C * L))
        if gamma is None:
            return dx, None, None
        return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)

    return stats, forward, backward


def _variant(stats, forward, backward):
    """(train_forward, forward, backward): the training forward is stats, then forward."""
    def train_forward(x, gamma, beta, groups, per_channel, eps):
        mean, var, rstd = stats(x, groups, per_channel, eps)
        return forward(x, mean, rstd, gamma, beta, groups, per_channel), mean, var, rstd
    return train_forward, forward, backward


def _without_column_blocks(op):
    """The production op with the fused (N, C) BatchNorm path turned off (variant 5)."""
    def run(*args, **kwargs):
        saved = production._column_block
        production._column_block = lambda N, C: 0
        try:
            return op(*args, **kwargs)
        finally:
            production._column_block = saved
    return run


VARIANTS = {
    "1 naive, per set": _variant(stats_v1, forward_v1, backward_v1),
    "2 tiles, 3-D index": _variant(*_tiled_ops(_v2_stats, _v2_forward, _v2_sums, _v2_dx)),
    "3 tiles, row slices": _variant(*_tiled_ops(_v3_stats, _v3_forward, _v3_sums, _v3_dx)),
    "4 shifted, dtype passes": _variant(production.norm_stats, production.norm_forward,
                                        backward_v4),
    "5 fused row sets": tuple(_without_column_blocks(f) for f in (
        production.norm_forward_train, production.norm_forward, production.norm_backward)),
    "6 + (N, C) channel blocks": (production.norm_forward_train, production.norm_forward,
                                  production.norm_backward),
}

# (shape of the (N, C, L) view, groups, per_channel): odd sizes, one set
# spread over several tiles (27 x 400 and 3 x 3000 per set), L == 1 rows,
# and (N, C) BatchNorms with several channel blocks (the last one partial).
CHECK_LAYOUTS = [((3, 6, 25), 1, True), ((5, 7, 1), 1, True), ((27, 5, 400), 1, True),
                 ((3, 6, 25), 3, False), ((3, 6, 25), 6, False), ((3, 6, 25), 1, False),
                 ((4, 150, 1), 1, False), ((3, 9001, 1), 1, False), ((2, 6, 3000), 2, False),
                 ((300, 45, 1), 1, True), ((520, 37, 1), 1, True)]


def _check_close(name, got, want, dtype):
    if want is None:
        assert got is None, name
        return
    tol = 2e-6 if dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=name)
    assert got.dtype == want.dtype or got.dtype == dtype, name


def check():
    rng = np.random.default_rng(0)
    for shape, groups, per_channel in CHECK_LAYOUTS:
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
                        what = f"{name} {shape} G={groups} {np.dtype(dtype).name} x~{offset}"
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


def bench():
    import tinynet as tn
    torch = try_torch()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    step_bytes = 8 * tensor_bytes(x)
    rows = []
    for label, layer_factory, torch_factory, view, groups, per_channel in _norms(torch):
        t_torch = None
        if torch is not None:
            t_torch = median_time(_torch_step(torch, torch_factory(), x, dy), repeat=25)
        xv, dyv = x.reshape(view), dy.reshape(view)
        C = view[1]
        gamma = np.ones(C, np.float32)
        beta = np.zeros(C, np.float32)
        for name, (train_forward, _, backward) in VARIANTS.items():
            def step():
                _, mean, _, rstd = train_forward(xv, gamma, beta, groups, per_channel, EPS)
                backward(xv, dyv, mean, rstd, gamma, groups, per_channel)
            rows.append(Row(f"{label} ops fwd+bwd", name, median_time(step), step_bytes,
                            torch_seconds=t_torch))
        layer = layer_factory()
        with tn.use_backend("cpu"):
            def layer_step():
                layer.forward(x)
                layer.backward(dy)
            rows.append(Row(f"{label} layer fwd+bwd", "tinynet cpu",
                            median_time(layer_step, repeat=25), step_bytes,
                            torch_seconds=t_torch))

    _bench_2d(rows, torch, tn, rng)

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


def _bench_2d(rows, torch, tn, rng):
    """BatchNorm (BatchNorm1d's case) and LayerNorm on an (N, C) = SHAPE_2D input."""
    N, C = SHAPE_2D
    x = rng.standard_normal(SHAPE_2D).astype(np.float32)
    dy = rng.standard_normal(SHAPE_2D).astype(np.float32)
    step_bytes = 8 * tensor_bytes(x)
    nn = torch.nn if torch is not None else None
    cases = [("BatchNorm (N, C)", lambda: tn.BatchNorm(C), nn and (lambda: nn.BatchNorm1d(C)),
              (N, C, 1), 1, True),
             ("LayerNorm (N, C)", lambda: tn.LayerNorm(C), nn and (lambda: nn.LayerNorm(C)),
              (N, C, 1), 1, False)]
    gamma = np.ones(C, np.float32)
    beta = np.zeros(C, np.float32)
    for label, layer_factory, torch_factory, view, groups, per_channel in cases:
        t_torch = None
        if torch is not None:
            t_torch = median_time(_torch_step(torch, torch_factory(), x, dy), repeat=51)
        xv, dyv = x.reshape(view), dy.reshape(view)
        for name in ("5 fused row sets", "6 + (N, C) channel blocks"):
            train_forward, _, backward = VARIANTS[name]

            def step():
                _, mean, _, rstd = train_forward(xv, gamma, beta, groups, per_channel, EPS)
                backward(xv, dyv, mean, rstd, gamma, groups, per_channel)
            rows.append(Row(f"{label} ops fwd+bwd", name, median_time(step, repeat=51),
                            step_bytes, torch_seconds=t_torch))
        layer = layer_factory()
        with tn.use_backend("cpu"):
            def layer_step():
                layer.forward(x)
                layer.backward(dy)
            rows.append(Row(f"{label} layer fwd+bwd", "tinynet cpu",
                            median_time(layer_step, repeat=51), step_bytes,
                            torch_seconds=t_torch))


if __name__ == "__main__":
    lab_main("norm", check, bench)
