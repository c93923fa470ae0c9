"""The normalization ops on the CPU: one family of Numba kernels for BatchNorm,
LayerNorm, InstanceNorm and GroupNorm.

The ops, the set layout of the (N, C, L) view and the equations are those of
the contract, tinynet/ops/norm/__init__.py. How the kernels compute them:

- Statistics: one pass of shifted sums in float64 per part of a set, d = x - K
  with K the part's first member, M2 = sum(d^2) - sum(d)^2 / n (its relative
  rounding error is at most about n * 2^-53, since (mean - K)^2 <= n * var),
  then Chan's merge of the parts.
- y and dx are computed in the dtype of x, so float32 data is never
  converted in those passes. The mean is split into mean_hi (the mean
  rounded to that dtype) and the rest, which is folded into a per-set
  constant; x - mean_hi is then exact or nearly so even at a large offset.
  Sums for dgamma, dbeta and the two set means of dx accumulate in float64.
- Per-channel sets (BatchNorm) span every sample, so each op is a ``prange``
  over tiles (samples [n0, n1) x channels [c0, c1) x all of L) that write
  partial results, combined afterwards: the statistics pass, then y; the
  sums pass, then dx. BatchNorm's eval mode passes its running statistics
  to ``norm_forward``: one pass with a per-channel scale and shift.
  BatchNorm on (N, C) (L == 1) with at least as many blocks of channels as
  threads is fused instead: one ``prange`` over blocks of channels computes
  the statistics and then y, and the two sums and then dx, while the block
  is in cache.
- Row sets (LN, IN, GN): x[n, group g] is one contiguous row of the
  (N*G, C/G*L) view, so the training forward and the backward are fused per
  set: ``norm_forward_train`` is a ``prange`` over sets that computes the
  statistics and then y while the row is in cache, and ``norm_backward``
  a ``prange`` over (sample block, group) tasks that compute each row's sums
  and then its dx. dgamma and dbeta get one partial row per sample block.

Every kernel states its parallel axis; each prange iteration writes only
its own outputs and its own partials, so results do not depend on the
number of threads. Inner loops run over contiguous 1-D slices, which LLVM
vectorizes; where L == 1 (LayerNorm, BatchNorm on (N, C)) the inner loop
runs over channels, not over a row of length 1.

The schedule (``Schedule``; the ops run ``SCHEDULE``) and the tiling
(``Tiles``, ``tile_bounds``) are a public production entry: ``stats``,
``forward``, ``forward_train`` and ``backward`` are the four ops under any
schedule, without the contract's argument checks (they are not in
``__all__``, so the cpu backend's namespace holds the ops alone). Through
them the lab (kernels/norm.py) times production under other schedules and
builds its tiled variants on the same tiling, and the tests run every set
over many tiles. Promoted from the lab, kernels/norm.py.
"""
from typing import NamedTuple

import numpy as np
import numba

from .. import norm
from ..contract import implements
from ...backends.cpu_jit import njit_kernel

__all__ = ["norm_stats", "norm_forward", "norm_forward_train", "norm_backward"]


class Schedule(NamedTuple):
    """How the kernels split the work; production runs ``SCHEDULE``.

    Attributes
    ----------
    tile : int
        Elements per tile of the per-channel (BatchNorm) kernels: 8192 is
        32 KB of float32.
    rows : int
        Samples per tile when rows are short (L < rows): a loaded slice of
        gamma is reused ``rows`` times, and the per-channel partials of
        dgamma and dbeta are at most 1/rows of the size of x.
    column_blocks : bool
        Fuse BatchNorm on (N, C) per block of channels (when there are at
        least as many blocks as threads); False runs the tile kernels.
    """
    tile: int = 8192
    rows: int = 16
    column_blocks: bool = True


SCHEDULE = Schedule()
"""The schedule of the ops."""


def _split(total, target):
    """Split ``total`` into equal parts of about ``target``: (count, size)."""
    count = max(1, -(-total // max(1, target)))
    size = max(1, -(-total // count))
    return -(-total // size), size


class Tiles:
    """The tiling of an (N, C, L) view: NB samples times CB channels per tile,
    about ``size`` elements; a tile never crosses a group (per-channel sets
    count as one group of C channels).

    Tile t covers sample block t // (G * nbg) and channel block t % (G * nbg),
    nbg blocks per group (``tile_bounds``); ``count`` tiles in all, ``nnb``
    sample blocks of NB samples, the last one possibly shorter, and ``nbg``
    channel blocks of CB channels per group of Cg.
    """

    def __init__(self, N, C, L, groups, per_channel, rows_per_tile=1, size=SCHEDULE.tile):
        self.Cg = C if per_channel else C // groups
        self.nnb, self.NB = _split(N, rows_per_tile)
        self.nbg, self.CB = _split(self.Cg, size // (self.NB * L))
        self.count = self.nnb * (C // self.Cg) * self.nbg

    @classmethod
    def for_stats(cls, N, C, L, groups, per_channel, size=SCHEDULE.tile):
        """The tiling of the statistics pass, and the members behind each of its
        partials, a float64 array (P,): per channel, tiles of about ``size``
        members of one channel and one partial per sample block; grouped, one
        sample per tile, whose part of a set is one contiguous span, and one
        partial per channel block."""
        if per_channel:
            tiles = cls(N, C, L, groups, True, rows_per_tile=-(-size // L), size=size)
            counts = [min(tiles.NB, N - p * tiles.NB) * L for p in range(tiles.nnb)]
        else:
            tiles = cls(N, C, L, groups, False, size=size)
            counts = [min(tiles.CB, tiles.Cg - p * tiles.CB) * L for p in range(tiles.nbg)]
        return tiles, np.array(counts, np.float64)


@njit_kernel()
def tile_bounds(t, N, C, Cg, NB, CB, nbg):
    """Tile t of ``Tiles``: its sample block nb, samples [n0, n1), channels
    [c0, c1), group g and channel block j within g."""
    ncb = (C // Cg) * nbg
    nb = t // ncb
    k = t - nb * ncb
    g = k // nbg
    j = k - g * nbg
    n0 = nb * NB
    c0 = g * Cg + j * CB
    return nb, n0, min(N, n0 + NB), c0, min(c0 + CB, (g + 1) * Cg), g, j


@njit_kernel()
def _shifted_m2(sum_d, sum_d2, count):
    """M2 from the shifted sums of d = x - K over ``count`` members (never below 0)."""
    m2 = sum_d2 - sum_d * sum_d / count
    if m2 < 0.0:
        m2 = 0.0
    return m2


@njit_kernel(parallel=True)
def _stats_tiles(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    """Mean and M2 = sum((x - mean)^2) of each (tile, set) pair, in float64.

    x is (N, C*L). Partials are (P, S): per channel, [nb, c] for sample block
    nb; grouped (NB = 1), [j, n*G + g] for channel block j of group g.
    """
    # Parallel axis: tiles. Tile t writes only its own partials: row nb,
    # columns c0..c1 (per channel), or the single slot (j, set) (grouped).
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = tile_bounds(t, N, C, Cg, NB, CB, nbg)
        if per_channel:
            # Shifted sums per channel, K = x[n0, c, 0], kept in the partial rows.
            s1 = mean_p[nb, c0:c1]
            s2 = m2_p[nb, c0:c1]
            for i in range(c1 - c0):
                s1[i] = 0.0
                s2[i] = 0.0
            for n in range(n0, n1):
                if L == 1:
                    xs = x[n, c0:c1]
                    ks = x[n0, c0:c1]
                    for i in range(c1 - c0):
                        d = np.float64(xs[i]) - ks[i]
                        s1[i] += d
                        s2[i] += d * d
                else:
                    for c in range(c0, c1):
                        xs = x[n, c * L:(c + 1) * L]
                        k = np.float64(x[n0, c * L])
                        sum_d = 0.0
                        sum_d2 = 0.0
                        for i in range(L):
                            d = xs[i] - k
                            sum_d += d
                            sum_d2 += d * d
                        s1[c - c0] += sum_d
                        s2[c - c0] += sum_d2
            count = (n1 - n0) * L
            for i in range(c1 - c0):
                m2 = _shifted_m2(s1[i], s2[i], count)
                s1[i] = x[n0, (c0 + i) * L] + s1[i] / count
                s2[i] = m2
        else:
            xs = x[n0, c0 * L:c1 * L]
            k = np.float64(xs[0])
            sum_d = 0.0
            sum_d2 = 0.0
            for i in range(xs.size):
                d = xs[i] - k
                sum_d += d
                sum_d2 += d * d
            mean_p[j, n0 * G + g] = k + sum_d / xs.size
            m2_p[j, n0 * G + g] = _shifted_m2(sum_d, sum_d2, xs.size)


@njit_kernel()
def _merge_stats(mean_p, m2_p, count, mean, var):
    """Chan's merge of the (P, S) partials into each set's mean and biased variance.

    count[p] is the number of members behind partial p (the same for every set).
    """
    P, S = mean_p.shape
    for s in range(S):
        n_a = count[0]
        mean_a = mean_p[0, s]
        m2_a = m2_p[0, s]
        for p in range(1, P):
            n_b = count[p]
            n_ab = n_a + n_b
            delta = mean_p[p, s] - mean_a
            mean_a += delta * (n_b / n_ab)
            m2_a += m2_p[p, s] + delta * delta * (n_a * n_b / n_ab)
            n_a = n_ab
        mean[s] = mean_a
        var[s] = m2_a / n_a


@njit_kernel(parallel=True)
def _forward_tiles(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_hi, shift, rstd, gamma, beta,
                   y):
    """y = ((x - mean_hi) * rstd + shift) * gamma[c] + beta[c], in the dtype of x.

    x, y are (N, C*L); mean_hi, shift and rstd are per set, in the dtype of x;
    shift = (mean_hi - mean) * rstd restores what rounding took from the mean.
    Per (n, c) row: y = (x - mean_hi) * a + b with the scale a = rstd * gamma[c]
    and shift b = shift * gamma[c] + beta[c].
    """
    # Parallel axis: tiles; tile t writes only y[n, c0*L:c1*L] for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, g, _ = tile_bounds(t, N, C, Cg, NB, CB, nbg)
        for n in range(n0, n1):
            s = n * G + g
            if L == 1:
                xs = x[n, c0:c1]
                ys = y[n, c0:c1]
                gs = gamma[c0:c1]
                bs = beta[c0:c1]
                if per_channel:
                    ms = mean_hi[c0:c1]
                    hs = shift[c0:c1]
                    rs = rstd[c0:c1]
                    for i in range(c1 - c0):
                        ys[i] = ((xs[i] - ms[i]) * rs[i] + hs[i]) * gs[i] + bs[i]
                else:
                    m = mean_hi[s]
                    h = shift[s]
                    r = rstd[s]
                    for i in range(c1 - c0):
                        ys[i] = ((xs[i] - m) * r + h) * gs[i] + bs[i]
            else:
                for c in range(c0, c1):
                    if per_channel:
                        s = c
                    m = mean_hi[s]
                    a = rstd[s] * gamma[c]
                    b = shift[s] * gamma[c] + beta[c]
                    xs = x[n, c * L:(c + 1) * L]
                    ys = y[n, c * L:(c + 1) * L]
                    for i in range(L):
                        ys[i] = (xs[i] - m) * a + b


@njit_kernel(parallel=True)
def _set_forward(x, L, eps, gamma, beta, mean, var, rstd, y):
    """Statistics and y of row sets: x, y are (S, Cg*L), one set per row.

    Per set: shifted sums (one pass, float64), then y = ((x - mean_hi) *
    rstd + shift) * gamma[c] + beta[c] in the dtype of x, reading the row
    again while it is in cache.
    """
    # Parallel axis: sets; set s writes only y[s], mean[s], var[s], rstd[s].
    S, M = x.shape
    Cg = M // L
    G = gamma.size // Cg
    for s in numba.prange(S):
        xs = x[s]
        ys = y[s]
        k = np.float64(xs[0])
        sum_d = 0.0
        sum_d2 = 0.0
        for i in range(M):
            d = xs[i] - k
            sum_d += d
            sum_d2 += d * d
        m = k + sum_d / M
        v = _shifted_m2(sum_d, sum_d2, M) / M
        r = 1.0 / np.sqrt(v + eps)
        mean[s] = m
        var[s] = v
        rstd[s] = r
        m_hi = x.dtype.type(m)
        h = x.dtype.type((m_hi - m) * r)
        r_t = x.dtype.type(r)
        c0 = (s % G) * Cg
        if L == 1:
            gs = gamma[c0:c0 + Cg]
            bs = beta[c0:c0 + Cg]
            for i in range(M):
                ys[i] = ((xs[i] - m_hi) * r_t + h) * gs[i] + bs[i]
        else:
            for c in range(Cg):
                a = r_t * gamma[c0 + c]
                b = h * gamma[c0 + c] + beta[c0 + c]
                xr = xs[c * L:(c + 1) * L]
                yr = ys[c * L:(c + 1) * L]
                for i in range(L):
                    yr[i] = (xr[i] - m_hi) * a + b


@njit_kernel(parallel=True)
def _channel_sums(x, dy, L, NB, CB, nbg, ntiles, mean, rstd, dbeta_p, dgamma_p):
    """Per-channel sets: per tile, sum(dy) and sum(dy * xhat) of each channel over
    the tile's samples, in float64, into row nb of dbeta_p and dgamma_p (nnb, C)."""
    # Parallel axis: tiles; tile t writes only row nb, columns c0..c1 of the partials.
    N = x.shape[0]
    C = x.shape[1] // L
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, _, _ = tile_bounds(t, N, C, C, NB, CB, nbg)
        p1 = dbeta_p[nb, c0:c1]
        p2 = dgamma_p[nb, c0:c1]
        for i in range(c1 - c0):
            p1[i] = 0.0
            p2[i] = 0.0
        for n in range(n0, n1):
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                ms = mean[c0:c1]
                rs = rstd[c0:c1]
                for i in range(c1 - c0):
                    d = np.float64(dys[i])
                    p1[i] += d
                    p2[i] += d * (xs[i] - ms[i]) * rs[i]
            else:
                for c in range(c0, c1):
                    xs = x[n, c * L:(c + 1) * L]
                    dys = dy[n, c * L:(c + 1) * L]
                    m = mean[c]
                    sum_dy = 0.0
                    sum_dy_xc = 0.0
                    for i in range(L):
                        d = np.float64(dys[i])
                        sum_dy += d
                        sum_dy_xc += d * (xs[i] - m)
                    p1[c - c0] += sum_dy
                    p2[c - c0] += sum_dy_xc * rstd[c]


@njit_kernel(parallel=True)
def _channel_dx(x, dy, L, NB, CB, nbg, ntiles, mean_hi, rstd, gamma, k2, k0, fixed_stats, dx):
    """Per-channel sets: dx = rstd * gamma[c] * dy - k2 * (x - mean_hi) + k0, in
    the dtype of x, with per-channel k2 = rstd^2 * mean(dxhat * xhat) and
    k0 = k2 * (mean - mean_hi) - rstd * mean(dxhat); dx = rstd * gamma[c] * dy
    with ``fixed_stats``."""
    # Parallel axis: tiles; tile t writes only dx[n, c0*L:c1*L] for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, _, _ = tile_bounds(t, N, C, C, NB, CB, nbg)
        for n in range(n0, n1):
            if L == 1:
                xs = x[n, c0:c1]
                dys = dy[n, c0:c1]
                dxs = dx[n, c0:c1]
                gs = gamma[c0:c1]
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
                for c in range(c0, c1):
                    a = rstd[c] * gamma[c]
                    m = mean_hi[c]
                    b2 = k2[c]
                    b0 = k0[c]
                    xs = x[n, c * L:(c + 1) * L]
                    dys = dy[n, c * L:(c + 1) * L]
                    dxs = dx[n, c * L:(c + 1) * L]
                    if fixed_stats:
                        for i in range(L):
                            dxs[i] = a * dys[i]
                    else:
                        for i in range(L):
                            dxs[i] = a * dys[i] - b2 * (xs[i] - m) + b0


@njit_kernel()
def _set_sums(xs, dys, L, gs, m, r, p1, p2):
    """One row set (xs, dys: its Cg*L members): adds sum(dy) and sum(dy * xhat) of
    each of its channels to p1, p2 (float64, (Cg,)) and returns the set's
    sum(dxhat) and sum(dxhat * xhat)."""
    sum_dxhat = 0.0
    sum_dxhat_xhat = 0.0
    if L == 1:
        for i in range(xs.size):
            d = np.float64(dys[i])
            d_xhat = d * (xs[i] - m) * r
            p1[i] += d
            p2[i] += d_xhat
            sum_dxhat += gs[i] * d
            sum_dxhat_xhat += gs[i] * d_xhat
    else:
        for c in range(gs.size):
            xr = xs[c * L:(c + 1) * L]
            dyr = dys[c * L:(c + 1) * L]
            sum_dy = 0.0
            sum_dy_xc = 0.0
            for i in range(L):
                d = np.float64(dyr[i])
                sum_dy += d
                sum_dy_xc += d * (xr[i] - m)
            p1[c] += sum_dy
            p2[c] += sum_dy_xc * r
            sum_dxhat += gs[c] * sum_dy
            sum_dxhat_xhat += gs[c] * sum_dy_xc * r
    return sum_dxhat, sum_dxhat_xhat


@njit_kernel()
def _set_sums_pair(xa, dya, xb, dyb, gs, m_a, r_a, m_b, r_b, p1, p2):
    """``_set_sums`` of two row sets with L == 1 and the same channels at once, so
    that each partial is loaded and stored once per pair."""
    sum_dxhat_a = 0.0
    sum_dxhat_xhat_a = 0.0
    sum_dxhat_b = 0.0
    sum_dxhat_xhat_b = 0.0
    for i in range(xa.size):
        d_a = np.float64(dya[i])
        d_b = np.float64(dyb[i])
        d_xhat_a = d_a * (xa[i] - m_a) * r_a
        d_xhat_b = d_b * (xb[i] - m_b) * r_b
        p1[i] += d_a + d_b
        p2[i] += d_xhat_a + d_xhat_b
        sum_dxhat_a += gs[i] * d_a
        sum_dxhat_xhat_a += gs[i] * d_xhat_a
        sum_dxhat_b += gs[i] * d_b
        sum_dxhat_xhat_b += gs[i] * d_xhat_b
    return sum_dxhat_a, sum_dxhat_xhat_a, sum_dxhat_b, sum_dxhat_xhat_b


@njit_kernel()
def _set_dx(xs, dys, dxs, L, gs, m, r, sum_dxhat, sum_dxhat_xhat, fixed_stats):
    """dx of one row set, in the dtype of x:

        dx = rstd * gamma[c] * dy - k2 * (x - mean_hi) + k0,
        k2 = rstd^2 * mean(dxhat * xhat),  k0 = k2 * (mean - mean_hi) - rstd * mean(dxhat)

    or dx = rstd * gamma[c] * dy with ``fixed_stats``.
    """
    M = xs.size
    m_hi = xs.dtype.type(m)
    k2 = r * r * sum_dxhat_xhat / M
    k0 = k2 * (m - m_hi) - r * sum_dxhat / M
    if fixed_stats:
        k2 = 0.0
        k0 = 0.0
    r_t = xs.dtype.type(r)
    k2_t = xs.dtype.type(k2)
    k0_t = xs.dtype.type(k0)
    if L == 1:
        if fixed_stats:
            for i in range(M):
                dxs[i] = r_t * gs[i] * dys[i]
        else:
            for i in range(M):
                dxs[i] = r_t * gs[i] * dys[i] - k2_t * (xs[i] - m_hi) + k0_t
    else:
        for c in range(gs.size):
            a = r_t * gs[c]
            xr = xs[c * L:(c + 1) * L]
            dyr = dys[c * L:(c + 1) * L]
            dxr = dxs[c * L:(c + 1) * L]
            if fixed_stats:
                for i in range(L):
                    dxr[i] = a * dyr[i]
            else:
                for i in range(L):
                    dxr[i] = a * dyr[i] - k2_t * (xr[i] - m_hi) + k0_t


@njit_kernel(parallel=True)
def _set_backward(x, dy, L, NB, mean, rstd, gamma, fixed_stats, need_dx, dbeta_p, dgamma_p,
                  dx):
    """Row sets: x, dy, dx are (N*G, Cg*L), one set per row. Task (nb, g) takes
    the sets of group g for the samples of block nb; per set, ``_set_sums``
    (float64, into row nb of dbeta_p and dgamma_p (nnb, C)) and then, with
    the set still in cache, ``_set_dx`` (skipped without ``need_dx``). With
    L == 1 the sets go in pairs (``_set_sums_pair``).
    """
    # Parallel axis: (sample block, group) tasks; task (nb, g) writes only
    # dx rows n*G + g of its samples n and columns c0..c0+Cg of row nb of the
    # partials.
    S, M = x.shape
    C = gamma.size
    Cg = M // L
    G = C // Cg
    N = S // G
    nnb = dbeta_p.shape[0]
    for t in numba.prange(nnb * G):
        nb = t // G
        g = t - nb * G
        c0 = g * Cg
        p1 = dbeta_p[nb, c0:c0 + Cg]
        p2 = dgamma_p[nb, c0:c0 + Cg]
        gs = gamma[c0:c0 + Cg]
        for c in range(Cg):
            p1[c] = 0.0
            p2[c] = 0.0
        n = nb * NB
        n1 = min(N, n + NB)
        while n < n1:
            s = n * G + g
            if L == 1 and n + 1 < n1:
                sa = s
                sb = s + G
                sums = _set_sums_pair(x[sa], dy[sa], x[sb], dy[sb], gs, mean[sa], rstd[sa],
                                      mean[sb], rstd[sb], p1, p2)
                if need_dx:
                    _set_dx(x[sa], dy[sa], dx[sa], L, gs, mean[sa], rstd[sa], sums[0], sums[1],
                            fixed_stats)
                    _set_dx(x[sb], dy[sb], dx[sb], L, gs, mean[sb], rstd[sb], sums[2], sums[3],
                            fixed_stats)
                n += 2
            else:
                sum_dxhat, sum_dxhat_xhat = _set_sums(x[s], dy[s], L, gs, mean[s], rstd[s],
                                                      p1, p2)
                if need_dx:
                    _set_dx(x[s], dy[s], dx[s], L, gs, mean[s], rstd[s], sum_dxhat,
                            sum_dxhat_xhat, fixed_stats)
                n += 1


@njit_kernel(parallel=True)
def _columns_forward(x, CB, eps, gamma, beta, mean, var, rstd, y):
    """BatchNorm on (N, C), fused: per block of CB channels, the shifted sums
    over all N rows (float64, K = x[0, c]), the statistics, then y as in
    _forward_tiles, while the block is in cache."""
    # Parallel axis: channel blocks; block j writes only columns c0..c1 of y
    # and entries c0..c1 of mean, var and rstd.
    N, C = x.shape
    dtype = x.dtype.type
    for j in numba.prange((C + CB - 1) // CB):
        c0 = j * CB
        c1 = min(C, c0 + CB)
        w = c1 - c0
        s1 = np.zeros(w)
        s2 = np.zeros(w)
        ks = x[0, c0:c1]
        for n in range(N):
            xs = x[n, c0:c1]
            for i in range(w):
                d = np.float64(xs[i]) - ks[i]
                s1[i] += d
                s2[i] += d * d
        ms = np.empty(w, x.dtype)
        a = np.empty(w, x.dtype)
        b = np.empty(w, x.dtype)
        for i in range(w):
            c = c0 + i
            m = ks[i] + s1[i] / N
            v = _shifted_m2(s1[i], s2[i], N) / N
            r = 1.0 / np.sqrt(v + eps)
            mean[c] = m
            var[c] = v
            rstd[c] = r
            ms[i] = dtype(m)
            rr = dtype(r)
            a[i] = rr * gamma[c]
            b[i] = dtype((np.float64(ms[i]) - m) * r) * gamma[c] + beta[c]
        for n in range(N):
            xs = x[n, c0:c1]
            ys = y[n, c0:c1]
            for i in range(w):
                ys[i] = (xs[i] - ms[i]) * a[i] + b[i]


@njit_kernel(parallel=True)
def _columns_backward(x, dy, CB, mean, rstd, gamma, fixed_stats, need_dx, dbeta, dgamma, dx):
    """BatchNorm on (N, C), fused: per block of CB channels, sum(dy) and
    sum(dy * xhat) over all N rows in float64 (dbeta, dgamma), then dx as in
    _channel_dx, while the block is in cache."""
    # Parallel axis: channel blocks; block j writes only columns c0..c1 of dx
    # and entries c0..c1 of dbeta and dgamma.
    N, C = x.shape
    dtype = x.dtype.type
    for j in numba.prange((C + CB - 1) // CB):
        c0 = j * CB
        c1 = min(C, c0 + CB)
        w = c1 - c0
        p1 = dbeta[c0:c1]
        p2 = dgamma[c0:c1]
        ms = mean[c0:c1]
        rs = rstd[c0:c1]
        for i in range(w):
            p1[i] = 0.0
            p2[i] = 0.0
        for n in range(N):
            xs = x[n, c0:c1]
            dys = dy[n, c0:c1]
            for i in range(w):
                d = np.float64(dys[i])
                p1[i] += d
                p2[i] += d * (xs[i] - ms[i]) * rs[i]
        if not need_dx:
            continue
        mh = np.empty(w, x.dtype)
        a = np.empty(w, x.dtype)
        k2 = np.zeros(w, x.dtype)
        k0 = np.zeros(w, x.dtype)
        for i in range(w):
            g = np.float64(gamma[c0 + i])
            mh[i] = dtype(ms[i])
            a[i] = dtype(rs[i]) * gamma[c0 + i]
            if not fixed_stats:
                # A channel is a set: its sums of dxhat are gamma * dbeta, gamma * dgamma.
                q2 = rs[i] * rs[i] * g * p2[i] / N
                k2[i] = dtype(q2)
                k0[i] = dtype(q2 * (ms[i] - np.float64(mh[i])) - rs[i] * g * p1[i] / N)
        for n in range(N):
            xs = x[n, c0:c1]
            dys = dy[n, c0:c1]
            dxs = dx[n, c0:c1]
            if fixed_stats:
                # dx does not depend on x (not even on a NaN in it).
                for i in range(w):
                    dxs[i] = a[i] * dys[i]
            else:
                for i in range(w):
                    dxs[i] = a[i] * dys[i] - k2[i] * (xs[i] - mh[i]) + k0[i]


def _column_block(N, C, schedule):
    """Channels per block of the fused (N, C) BatchNorm kernels (about
    ``schedule.tile`` elements, a multiple of 16), or 0 when there are fewer
    blocks than threads or the schedule does not fuse them."""
    if not schedule.column_blocks:
        return 0
    CB = max(16, (schedule.tile // max(1, N)) // 16 * 16)
    return CB if -(-C // CB) >= numba.get_num_threads() else 0


def _affine(gamma, beta, C, dtype):
    """gamma and beta as C-contiguous (C,) arrays of ``dtype``; None -> ones, zeros."""
    gamma = np.ones(C, dtype) if gamma is None else np.ascontiguousarray(gamma, dtype)
    beta = np.zeros(C, dtype) if beta is None else np.ascontiguousarray(beta, dtype)
    return gamma, beta


def _rows(a, dtype, R):
    """An array as a C-contiguous (R, -1) array of ``dtype``."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(R, -1)


def _stats(x2, L, groups, per_channel, eps, schedule):
    """mean, var, rstd of x2 (N, C*L) by the tile kernel and Chan's merge."""
    N = x2.shape[0]
    C = x2.shape[1] // L
    S = norm.set_shape((N, C, L), groups, per_channel)[0]
    tiles, counts = Tiles.for_stats(N, C, L, groups, per_channel, schedule.tile)
    mean_p = np.empty((counts.size, S))
    m2_p = np.empty((counts.size, S))
    _stats_tiles(x2, L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg, tiles.count,
                 mean_p, m2_p)
    mean = np.empty(S)
    var = np.empty(S)
    _merge_stats(mean_p, m2_p, counts, mean, var)
    return mean, var, 1.0 / np.sqrt(var + eps)


def _forward(x2, L, mean, rstd, gamma, beta, groups, per_channel, schedule):
    """y (N, C*L) from x2 (N, C*L) and the float64 statistics, by the tile kernel."""
    N = x2.shape[0]
    C = x2.shape[1] // L
    dtype = x2.dtype
    mean_hi = mean.astype(dtype)
    shift = ((mean_hi - mean) * rstd).astype(dtype)
    y = np.empty_like(x2)
    tiles = Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-schedule.rows // L),
                  size=schedule.tile)
    _forward_tiles(x2, L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                   tiles.count, mean_hi, shift, rstd.astype(dtype), gamma, beta, y)
    return y


def stats(x, groups, per_channel, eps, schedule=SCHEDULE):
    """``norm_stats`` under ``schedule`` (no argument checks)."""
    N, C, L = x.shape
    S = norm.set_shape(x.shape, groups, per_channel)[0]
    if x.size == 0:
        return np.full(S, np.nan), np.full(S, np.nan), np.full(S, np.nan)
    return _stats(_rows(x, x.dtype, N), L, groups, per_channel, eps, schedule)


def forward(x, mean, rstd, gamma, beta, groups, per_channel, schedule=SCHEDULE):
    """``norm_forward`` under ``schedule`` (no argument checks)."""
    N, C, L = x.shape
    dtype = x.dtype
    if x.size == 0:
        return np.empty((N, C, L), dtype)
    gamma, beta = _affine(gamma, beta, C, dtype)
    y = _forward(_rows(x, dtype, N), L, np.ascontiguousarray(mean, np.float64),
                 np.ascontiguousarray(rstd, np.float64), gamma, beta, groups, per_channel,
                 schedule)
    return y.reshape(N, C, L)


def forward_train(x, gamma, beta, groups, per_channel, eps, schedule=SCHEDULE):
    """``norm_forward_train`` under ``schedule`` (no argument checks)."""
    N, C, L = x.shape
    S = norm.set_shape(x.shape, groups, per_channel)[0]
    dtype = x.dtype
    if x.size == 0:
        nan = np.full(S, np.nan)
        return np.empty((N, C, L), dtype), nan, nan.copy(), nan.copy()
    gamma, beta = _affine(gamma, beta, C, dtype)
    CB = _column_block(N, C, schedule) if per_channel and L == 1 else 0
    if CB:
        x2 = _rows(x, dtype, N)
        mean, var, rstd = np.empty(C), np.empty(C), np.empty(C)
        y = np.empty_like(x2)
        _columns_forward(x2, CB, float(eps), gamma, beta, mean, var, rstd, y)
    elif per_channel:
        x2 = _rows(x, dtype, N)
        mean, var, rstd = _stats(x2, L, groups, True, eps, schedule)
        y = _forward(x2, L, mean, rstd, gamma, beta, groups, True, schedule)
    else:
        x2 = _rows(x, dtype, S)
        mean, var, rstd = np.empty(S), np.empty(S), np.empty(S)
        y = np.empty_like(x2)
        _set_forward(x2, L, float(eps), gamma, beta, mean, var, rstd, y)
    return y.reshape(N, C, L), mean, var, rstd


def backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False, need_dx=True,
             schedule=SCHEDULE):
    """``norm_backward`` under ``schedule`` (no argument checks)."""
    N, C, L = x.shape
    S = norm.set_shape(x.shape, groups, per_channel)[0]
    dtype = x.dtype
    has_affine = gamma is not None
    if x.size == 0 or not (has_affine or need_dx):
        dx = np.empty((N, C, L), dtype) if need_dx else None
        if not has_affine:
            return dx, None, None
        return dx, np.zeros(C, dtype), np.zeros(C, dtype)
    gamma, _ = _affine(gamma, None, C, dtype)
    mean = np.ascontiguousarray(mean, np.float64)
    rstd = np.ascontiguousarray(rstd, np.float64)
    dx = np.empty((N, C, L), dtype) if need_dx else None
    # Samples per task and per partial row of dgamma, dbeta: more when rows
    # are short, at most a quarter of the batch.
    nnb, NB = _split(N, min(-(-schedule.rows // L), -(-N // 4)))
    CB = _column_block(N, C, schedule) if per_channel and L == 1 else 0
    if CB:
        dbeta, dgamma = np.empty(C), np.empty(C)
        dx2 = dx.reshape(N, C) if need_dx else np.empty((0, C), dtype)
        _columns_backward(_rows(x, dtype, N), _rows(dy, dtype, N), CB, mean, rstd, gamma,
                          bool(fixed_stats), bool(need_dx), dbeta, dgamma, dx2)
    elif per_channel:
        x2 = _rows(x, dtype, N)
        dy2 = _rows(dy, dtype, N)
        tiles = Tiles(N, C, L, groups, True, rows_per_tile=NB, size=schedule.tile)
        dbeta_p = np.empty((tiles.nnb, C))
        dgamma_p = np.empty((tiles.nnb, C))
        _channel_sums(x2, dy2, L, tiles.NB, tiles.CB, tiles.nbg, tiles.count, mean, rstd,
                      dbeta_p, dgamma_p)
        dbeta = dbeta_p.sum(axis=0)
        dgamma = dgamma_p.sum(axis=0)
        if need_dx:
            mean_hi = mean.astype(dtype)
            if fixed_stats:
                k2 = k0 = np.zeros(C)
            else:
                # A channel is a set: its sums of dxhat are gamma * dbeta, gamma * dgamma.
                k2 = rstd * rstd * gamma * dgamma / (N * L)
                k0 = k2 * (mean - mean_hi) - rstd * gamma * dbeta / (N * L)
            _channel_dx(x2, dy2, L, tiles.NB, tiles.CB, tiles.nbg, tiles.count, mean_hi,
                        rstd.astype(dtype), gamma, k2.astype(dtype), k0.astype(dtype),
                        bool(fixed_stats), dx.reshape(N, C * L))
    else:
        dbeta_p = np.empty((nnb, C))
        dgamma_p = np.empty((nnb, C))
        dx_rows = dx.reshape(S, -1) if need_dx else np.empty((S, 0), dtype)
        _set_backward(_rows(x, dtype, S), _rows(dy, dtype, S), L, NB, mean, rstd, gamma,
                      bool(fixed_stats), bool(need_dx), dbeta_p, dgamma_p, dx_rows)
        dbeta = dbeta_p.sum(axis=0)
        dgamma = dgamma_p.sum(axis=0)
    if not has_affine:
        return dx, None, None
    return dx, dgamma.astype(dtype), dbeta.astype(dtype)


@implements(norm.norm_stats)
def norm_stats(x, groups, per_channel, eps):
    return stats(x, groups, per_channel, eps)


@implements(norm.norm_forward)
def norm_forward(x, mean, rstd, gamma, beta, groups, per_channel):
    """Computed in the dtype of x as y = (x - mean_hi) * a + b per (n, c) row,
    with mean_hi the mean rounded to that dtype, the scale a = rstd * gamma[c]
    and the shift b = beta[c] + (mean_hi - mean) * a."""
    return forward(x, mean, rstd, gamma, beta, groups, per_channel)


@implements(norm.norm_forward_train)
def norm_forward_train(x, gamma, beta, groups, per_channel, eps):
    """For row sets (LN, IN, GN) one pass per set computes the statistics and y
    while the set is in cache."""
    return forward_train(x, gamma, beta, groups, per_channel, eps)


@implements(norm.norm_backward)
def norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                  need_dx=True):
    return backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats, need_dx)
