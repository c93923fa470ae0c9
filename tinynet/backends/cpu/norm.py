"""Normalization on the CPU: BatchNorm, LayerNorm, InstanceNorm and GroupNorm
as one family of Numba kernels.

The ops and their layout are those of the reference (tinynet/backends/ref/norm.py,
which derives the math): x is viewed as (N, C, L), ``per_channel=True``
(BatchNorm) makes one set per channel c over (n, l), ``per_channel=False``
(LN, IN, GN) one set per (n, g) over the C/G channels of group g and all l.
Per set, with M members:

    mean = sum(x) / M,  var = sum((x - mean)^2) / M,  rstd = 1 / sqrt(var + eps)
    y    = x * a[c] + b[c],  a = rstd * gamma[c],  b = beta[c] - mean * a
    dx   = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * gamma[c]
    dgamma[c] = sum over (n, l) of dy * xhat,  dbeta[c] = sum over (n, l) of dy

Work is split into tiles: the channels [c0, c1) of the samples [n0, n1), all
l. A tile never straddles two groups, so for grouped sets each sample's part
of a tile, x[n, c0:c1, :], is one contiguous span of a single set. Every op
is a ``prange`` over tiles, many more tiles than threads and of equal size;
each tile writes only its own outputs and its own slot of a small partials
array, and a serial step combines the partials:

- ``norm_stats``: per tile and set, the mean and M2 = sum((x - mean)^2) of the
  tile's members (two passes over the tile, which stays in cache, in float64);
  then Chan's merge of the tiles of each set. No E[x^2] - E[x]^2 anywhere.
- ``norm_forward``: the statistics fold into a per-(n, c) scale a and shift b
  (BatchNorm's eval mode passes its running statistics, so it is the same
  kernel); one pass reads x and writes y.
- ``norm_backward``: one pass over (x, dy) gives, per tile, sum(dy) and
  sum(dy * xhat) per channel (for dbeta, dgamma) and per set (for the two
  means of dx); a second pass writes dx. ``need_dx=False`` skips the second.

Loops run over contiguous 1-D row slices (``x[n, i0:i1]``): indexed that way
LLVM vectorizes them; 2-D indexing in the inner loop did not vectorize and
ran about 10 times slower (kernels/norm.py, variant 2). Where L == 1
(LayerNorm, BatchNorm on (N, C)) a row of channels is the inner loop.

Promoted from kernels/norm.py variant 3.
"""
import numpy as np
import numba

from .jit import njit_kernel
from ..ref.norm import _check_layout, _check_vector

__all__ = ["norm_stats", "norm_forward", "norm_backward"]

# Elements per tile: 32 KB of float32, so a second pass over a tile hits L1/L2.
TILE = 8192
# Samples per tile when rows are short (L == 1): the forward and dx passes
# reuse each loaded slice of gamma for ROWS samples, and the backward sums
# keep per-channel partials of only 1/SUM_ROWS of the size of x.
ROWS = 8
SUM_ROWS = 64


def _split(total, target):
    """Split ``total`` into ceil(total / target) parts of equal size: (count, size)."""
    count = max(1, -(-total // max(1, target)))
    size = max(1, -(-total // count))
    return -(-total // size), size


class _Tiles:
    """The tiling of an (N, C, L) view: NB samples times CB channels per tile.

    ``Cg`` is the group width (C for per-channel sets: one group), ``nbg`` the
    channel blocks per group, ``nnb`` the sample blocks; tile t covers sample
    block t // (G * nbg) and channel block t % (G * nbg). A tile holds about
    ``size`` elements.
    """

    def __init__(self, N, C, L, groups, per_channel, rows_per_tile=1, size=None):
        size = TILE if size is None else size
        self.Cg = C if per_channel else C // groups
        self.nnb, self.NB = _split(N, rows_per_tile)
        self.nbg, self.CB = _split(self.Cg, size // (self.NB * L))
        self.count = self.nnb * (C // self.Cg) * self.nbg


@njit_kernel()
def _tile(t, N, C, Cg, NB, CB, nbg):
    """Tile t: its sample block nb, samples [n0, n1), channels [c0, c1), group g
    and channel block j within g."""
    ncb = (C // Cg) * nbg
    nb = t // ncb
    k = t - nb * ncb
    g = k // nbg
    j = k - g * nbg
    n0 = nb * NB
    c0 = g * Cg + j * CB
    return nb, n0, min(N, n0 + NB), c0, min(c0 + CB, (g + 1) * Cg), g, j


@njit_kernel(parallel=True)
def _stats_tiles(x, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_p, m2_p):
    """Mean and M2 = sum((x - mean)^2) of each (tile, set) pair, in float64.

    x is (N, C*L). Partials are (P, S): per channel, [nb, c] for sample block
    nb; grouped (NB = 1), [j, n*G + g] for channel block j of group g. One
    pass of shifted sums, d = x - K with K the set's first member in the tile:
    M2 = sum(d^2) - sum(d)^2 / n, whose relative rounding error is at most
    about n * 2^-53 since (mean - K)^2 <= n * var.
    """
    # Parallel axis: tiles. Tile t writes only its own partials: row nb,
    # columns c0..c1 (per channel), or the single slot (j, set) (grouped).
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        nb, n0, n1, c0, c1, g, j = _tile(t, N, C, Cg, NB, CB, nbg)
        if per_channel:
            # Running sums of d and d^2 per channel, kept in the partial rows.
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
                        for l in range(L):
                            d = xs[l] - k
                            sum_d += d
                            sum_d2 += d * d
                        s1[c - c0] += sum_d
                        s2[c - c0] += sum_d2
            count = (n1 - n0) * L
            for i in range(c1 - c0):
                m2 = s2[i] - s1[i] * s1[i] / count
                if m2 < 0.0:
                    m2 = 0.0
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
            m2 = sum_d2 - sum_d * sum_d / xs.size
            if m2 < 0.0:
                m2 = 0.0
            mean_p[j, n0 * G + g] = k + sum_d / xs.size
            m2_p[j, n0 * G + g] = m2


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

    x, y are (N, C*L); mean_hi, shift, rstd are per set, in the dtype of x
    (shift = (mean_hi - mean) * rstd restores the digits of the mean that
    mean_hi lost). Per row this is y = (x - mean_hi) * a + b with the
    per-(n, c) scale a = rstd * gamma[c] and shift b = shift * gamma[c] + beta[c].
    """
    # Parallel axis: tiles; tile t writes only y[n, c0*L:c1*L] for its samples n.
    N = x.shape[0]
    C = x.shape[1] // L
    G = C // Cg
    for t in numba.prange(ntiles):
        _, n0, n1, c0, c1, g, _ = _tile(t, N, C, Cg, NB, CB, nbg)
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
                    for l in range(L):
                        ys[l] = (xs[l] - m) * a + b


@njit_kernel(parallel=True)
def _backward_sums(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean, rstd, gamma,
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
def _dx_tiles(x, dy, L, per_channel, Cg, NB, CB, nbg, ntiles, mean_hi, rstd, gamma, k2, k0,
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


def _flat(a, dtype):
    """An (N, C, L) array as a C-contiguous (N, C*L) array of ``dtype``."""
    N, C, L = a.shape
    return np.ascontiguousarray(a, dtype=dtype).reshape(N, C * L)


def _float_dtype(fname, x):
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fname}: x must be float32 or float64, got {x.dtype}")
    return x.dtype


def _affine(gamma, beta, C, dtype):
    """gamma and beta as C-contiguous (C,) arrays of ``dtype``; None -> ones, zeros."""
    gamma = np.ones(C, dtype) if gamma is None else np.ascontiguousarray(gamma, dtype)
    beta = np.zeros(C, dtype) if beta is None else np.ascontiguousarray(beta, dtype)
    return gamma, beta


def norm_stats(x, groups, per_channel, eps):
    """Mean, biased variance and rstd of every set, accumulated in float64.

    Parameters
    ----------
    x : np.ndarray
        Input viewed as (N, C, L), float32 or float64.
    groups : int
        G, the number of channel groups; G must divide C. Ignored when
        ``per_channel`` is True.
    per_channel : bool
        True: one set per channel (S = C). False: one set per (n, g) (S = N*G).
    eps : float
        Added to the variance inside the square root.

    Returns
    -------
    mean, var, rstd : np.ndarray
        float64, shape (S,). var is the biased variance (divided by the set
        size) and rstd = 1 / sqrt(var + eps).
    """
    S = _check_layout("norm_stats", x, groups, per_channel)
    N, C, L = x.shape
    dtype = _float_dtype("norm_stats", x)
    if x.size == 0:
        return np.full(S, np.nan), np.full(S, np.nan), np.full(S, np.nan)
    if per_channel:
        # Tiles of about TILE members of one channel; partials per sample block.
        tiles = _Tiles(N, C, L, groups, True, rows_per_tile=-(-TILE // L))
        count = [min(tiles.NB, N - p * tiles.NB) * L for p in range(tiles.nnb)]
    else:
        # One sample per tile: its part of a set is one contiguous span.
        tiles = _Tiles(N, C, L, groups, False)
        count = [min(tiles.CB, tiles.Cg - p * tiles.CB) * L for p in range(tiles.nbg)]
    mean_p = np.empty((len(count), S))
    m2_p = np.empty((len(count), S))
    _stats_tiles(_flat(x, dtype), L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                 tiles.count, mean_p, m2_p)
    mean = np.empty(S)
    var = np.empty(S)
    _merge_stats(mean_p, m2_p, np.array(count, np.float64), mean, var)
    return mean, var, 1.0 / np.sqrt(var + eps)


def norm_forward(x, mean, rstd, gamma, beta, groups, per_channel):
    """y = (x - mean) * rstd * gamma + beta, with mean and rstd per set.

    Computed in the dtype of x as y = (x - mean_hi) * a + b, with mean_hi the
    mean rounded to that dtype and a per-(n, c) scale a = rstd * gamma[c] and
    shift b = beta[c] + (mean_hi - mean) * a. BatchNorm's eval mode passes its
    running statistics: a per-channel scale and shift.

    Parameters
    ----------
    x : np.ndarray
        Input (N, C, L), float32 or float64.
    mean, rstd : np.ndarray
        Per-set statistics, shape (S,), e.g. from ``norm_stats``.
    gamma, beta : np.ndarray or None
        Per-channel scale and shift, shape (C,); None means no affine step.
    groups, per_channel
        The set layout, as in ``norm_stats``.

    Returns
    -------
    y : np.ndarray
        (N, C, L), the dtype of x.
    """
    S = _check_layout("norm_forward", x, groups, per_channel)
    N, C, L = x.shape
    _check_vector("norm_forward", "mean", mean, S)
    _check_vector("norm_forward", "rstd", rstd, S)
    _check_vector("norm_forward", "gamma", gamma, C)
    _check_vector("norm_forward", "beta", beta, C)
    dtype = _float_dtype("norm_forward", x)
    y = np.empty((N, C, L), dtype)
    if x.size == 0:
        return y
    gamma, beta = _affine(gamma, beta, C, dtype)
    mean = np.asarray(mean, np.float64)
    rstd = np.asarray(rstd, np.float64)
    mean_hi = mean.astype(dtype)
    shift = ((mean_hi - mean) * rstd).astype(dtype)
    tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-ROWS // L))
    _forward_tiles(_flat(x, dtype), L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                   tiles.count, mean_hi, shift, rstd.astype(dtype), gamma, beta,
                   y.reshape(N, C * L))
    return y


def norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                  need_dx=True):
    """Gradients of the normalization with respect to x, gamma and beta.

    Parameters
    ----------
    x, dy : np.ndarray
        Input and upstream gradient, both (N, C, L), float32 or float64.
    mean, rstd : np.ndarray
        The per-set statistics the forward pass used, shape (S,).
    gamma : np.ndarray or None
        Per-channel scale, shape (C,); None when the layer has no affine step.
    groups, per_channel
        The set layout, as in ``norm_stats``.
    fixed_stats : bool
        True when mean and rstd did not come from x (BatchNorm in eval mode):
        then dx = rstd * dxhat.
    need_dx : bool
        False skips dx (returned as None).

    Returns
    -------
    dx : np.ndarray or None
        (N, C, L), the dtype of x; None when ``need_dx`` is False.
    dgamma, dbeta : np.ndarray or None
        (C,), the dtype of x; both None when gamma is None.
    """
    S = _check_layout("norm_backward", x, groups, per_channel)
    N, C, L = x.shape
    if dy.shape != x.shape:
        raise ValueError(f"norm_backward: dy must have the shape of x {x.shape}, got {dy.shape}")
    _check_vector("norm_backward", "mean", mean, S)
    _check_vector("norm_backward", "rstd", rstd, S)
    _check_vector("norm_backward", "gamma", gamma, C)
    dtype = _float_dtype("norm_backward", x)
    has_affine = gamma is not None
    dx = np.empty((N, C, L), dtype) if need_dx else None
    if x.size == 0:
        if not has_affine:
            return dx, None, None
        return dx, np.zeros(C, dtype), np.zeros(C, dtype)
    gamma, _ = _affine(gamma, None, C, dtype)
    mean = np.asarray(mean, np.float64)
    rstd = np.asarray(rstd, np.float64)
    x2 = _flat(x, dtype)
    dy2 = _flat(dy, dtype)

    # Pass 1: per-channel and per-set sums of dy and dy * xhat.
    if has_affine or (need_dx and not fixed_stats):
        tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-SUM_ROWS // L),
                       size=4 * TILE)
        dbeta_p = np.empty((tiles.nnb, C))
        dgamma_p = np.empty((tiles.nnb, C))
        sum_dxhat_p = np.empty((tiles.nbg, S))
        sum_dxhat_xhat_p = np.empty((tiles.nbg, S))
        _backward_sums(x2, dy2, L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                       tiles.count, mean, rstd, gamma,
                       dbeta_p, dgamma_p, sum_dxhat_p, sum_dxhat_xhat_p)
        dbeta = dbeta_p.sum(axis=0)
        dgamma = dgamma_p.sum(axis=0)
        if per_channel:
            # A channel is a set: its sums of dxhat are gamma times dbeta, dgamma.
            sum_dxhat, sum_dxhat_xhat = gamma * dbeta, gamma * dgamma
        else:
            sum_dxhat, sum_dxhat_xhat = sum_dxhat_p.sum(axis=0), sum_dxhat_xhat_p.sum(axis=0)

    # Pass 2: dx = rstd * gamma * dy - k2 * (x - mean_hi) + k0.
    if need_dx:
        mean_hi = mean.astype(dtype)
        if fixed_stats:
            k2 = k0 = np.zeros(S, dtype)
        else:
            M = x.size // S
            k2 = rstd * rstd * sum_dxhat_xhat / M
            k0 = (k2 * (mean - mean_hi) - rstd * sum_dxhat / M).astype(dtype)
            k2 = k2.astype(dtype)
        tiles = _Tiles(N, C, L, groups, per_channel, rows_per_tile=-(-ROWS // L))
        _dx_tiles(x2, dy2, L, bool(per_channel), tiles.Cg, tiles.NB, tiles.CB, tiles.nbg,
                  tiles.count, mean_hi, rstd.astype(dtype), gamma, k2, k0, bool(fixed_stats),
                  dx.reshape(N, C * L))
    if not has_affine:
        return dx, None, None
    return dx, dgamma.astype(dtype), dbeta.astype(dtype)
