"""The normalization ops on the GPU: one family of numba.cuda kernels for
BatchNorm, LayerNorm, InstanceNorm and GroupNorm, parameterized by the set
layout.

The ops, the set layout of the (N, C, L) view and the equations are those of
the contract, tinynet/ops/norm/__init__.py. Per-channel sets (BatchNorm)
are strided: member m of set c is x[m // L, c, m % L]; row sets (LN, IN,
GN) are contiguous: member m of set s is element s*M + m (``member``,
``set_of``). How the kernels compute:

- ``_set_moments`` (the statistics kernel): each set is split into P parts
  of consecutive members (``parts``), one block per (set, part), enough
  blocks to fill the GPU even when there are few sets (BatchNorm has only
  C). Each thread accumulates shifted sums in float64 over its members
  (d = x - K, K the part's first member), turns them into its own (count,
  mean, M2), and the block Chan-merges the threads' triples
  (tinynet/backends/cuda_reduce.py: warp shuffles on a GPU, shared memory
  under the simulator). ``_merge_moments`` (``merge_parts``) Chan-merges
  the P parts of each set and writes mean, var and rstd. When a set fits
  one block (P == 1: the row layouts of LN, IN and GN at training sizes)
  the statistics kernel writes the statistics itself and then y of its
  set, while the set's rows are still in cache: one launch for the
  training forward.
- ``_norm_apply``: y, one thread per element (parts, and eval mode).
- ``_set_sums`` (the backward reduction): for every set of a reduction
  layout, sum(dy * w) and sum(dy * w * xhat), with xhat from the statistics
  layout and w = gamma[c] (or 1), in parts as above; ``_merge_sums`` adds the
  parts. With P == 1 and the statistics' own sets it then writes dx of its
  set too (fused, as the forward). BatchNorm's sets are channels, so one
  call with w = 1 gives dbeta, dgamma and (times gamma[c]) the two set sums
  of dx. For row sets one call with w = gamma gives the two set sums, a
  second with the per-channel reduction layout and w = 1 gives dbeta and
  dgamma. Per-channel sums with L == 1 (LayerNorm's dgamma and dbeta,
  BatchNorm on (N, C)) run ``_column_sums`` instead: one thread per channel
  walks the N rows, a warp reading consecutive channels, since there are
  many short sets.
- ``_norm_dx``: dx, one thread per element, from the set sums when not
  fused, or from rstd and dxhat alone when the statistics are fixed
  (BatchNorm in eval mode).

Every per-element kernel writes only its own element; every reduction block
writes only the partial of its own (set, part), from thread 0, and, fused,
y or dx of its own set; the merge kernels run one thread per set. Nothing
depends on the grid size. ``member``, ``set_of``, ``parts`` and
``merge_parts`` are public: the GPU lab (kernels/gpu_norm.py) builds its
variants of the statistics kernel on them. Promoted from the lab,
kernels/gpu_norm.py.
"""
import math

import numpy as np
from numba import cuda, float64

from ..contract import implements
from .. import norm
from . import check_layout, set_shape
from ...backends import cuda_device as dev
from ...backends.cuda_device import REDUCE_SHARED
from ...backends.cuda_reduce import block_moments, block_sum2, chan_merge

__all__ = ["norm_stats", "norm_forward", "norm_forward_train", "norm_backward"]

# Blocks the reduction kernels aim for (about four 256-thread blocks per SM
# of a 132-SM GPU): sets are split into TARGET_BLOCKS // S parts, so that
# S >= TARGET_BLOCKS / 2 sets run whole, one block each (and fused); and the
# fewest members per thread a part keeps.
TARGET_BLOCKS = 512
MIN_PER_THREAD = 4

_LAYOUT = "int64, int64, int64, boolean"


@cuda.jit(device=True, inline=True)
def member(s, m, C, L, M, per_channel):
    """The flat index in x (N, C, L) of member m of set s (sets of M members)."""
    if per_channel:
        n = m // L
        return (n * C + s) * L + (m - n * L)
    return s * M + m


@cuda.jit(device=True, inline=True)
def set_of(e, C, L, M, per_channel):
    """The set of the element at flat index e of x (N, C, L) (sets of M members)."""
    if per_channel:
        return (e // L) % C
    return e // M


@cuda.jit(device=True, inline=True)
def _y_value(xe, mean, rstd, gamma, beta, has_gamma, has_beta, c):
    """y of one element in float64, from its set's mean and rstd and, when present,
    gamma[c] and beta[c] of its channel."""
    v = (float64(xe) - mean) * rstd
    if has_gamma:
        v = v * gamma[c]
    if has_beta:
        v = v + beta[c]
    return v


@cuda.jit(device=True, inline=True)
def _dx_value(xe, dye, mean, rstd, w, sum_a, sum_b, M, weighted):
    """dx of one element in float64, dxhat = dy * w, from its set's two sums: of dxhat and
    dxhat * xhat when ``weighted``, else of dy and dy * xhat (per-channel sets, whose w is
    one gamma[c]), which then are scaled by w."""
    xhat = (float64(xe) - mean) * rstd
    ma = sum_a / M
    mb = sum_b / M
    if not weighted:
        ma *= w
        mb *= w
    return rstd * (float64(dye) * w - ma - xhat * mb)


@dev.kernel("void({f}[::1], " + _LAYOUT + ", int64, int64, float64[::1], float64[::1], "
            "float64[::1], boolean, {f}[::1], {f}[::1], boolean, boolean, float64, float64[::1], "
            "float64[::1], float64[::1], {f}[::1])")
def _set_moments(x, C, L, M, per_channel, P, chunk, part_n, part_mean, part_m2, fuse_y, gamma,
                 beta, has_gamma, has_beta, eps, mean, var, rstd, y):
    sh_n = cuda.shared.array(REDUCE_SHARED, float64)
    sh_mean = cuda.shared.array(REDUCE_SHARED, float64)
    sh_m2 = cuda.shared.array(REDUCE_SHARED, float64)
    S = x.size // M
    # Parallel axis: (set, part) tasks, one block each (grid-stride); the block's
    # threads split the part's members and only thread 0 writes the task's
    # partial (or, fused, the set's statistics; each thread then writes y of
    # its own members).
    for task in range(cuda.blockIdx.x, S * P, cuda.gridDim.x):
        s = task // P
        m0 = (task - s * P) * chunk
        m1 = min(M, m0 + chunk)
        shift = float64(x[member(s, m0, C, L, M, per_channel)])
        cnt = float64(0.0)
        s1 = float64(0.0)
        s2 = float64(0.0)
        for m in range(m0 + cuda.threadIdx.x, m1, cuda.blockDim.x):
            d = float64(x[member(s, m, C, L, M, per_channel)]) - shift
            cnt += 1.0
            s1 += d
            s2 += d * d
        mu = float64(0.0)
        m2 = float64(0.0)
        if cnt > 0.0:
            mu = shift + s1 / cnt
            m2 = max(s2 - s1 * s1 / cnt, 0.0)
        cnt, mu, m2 = block_moments(cnt, mu, m2, sh_n, sh_mean, sh_m2)
        if not fuse_y:
            if cuda.threadIdx.x == 0:
                part_n[task] = cnt
                part_mean[task] = mu
                part_m2[task] = m2
        else:
            # P == 1: this block holds the whole set; y while its rows are in cache.
            r = 1.0 / math.sqrt(m2 / cnt + eps)
            if cuda.threadIdx.x == 0:
                mean[s] = mu
                var[s] = m2 / cnt
                rstd[s] = r
            for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
                e = member(s, m, C, L, M, per_channel)
                y[e] = _y_value(x[e], mu, r, gamma, beta, has_gamma, has_beta, (e // L) % C)


@dev.kernel("void(float64[::1], float64[::1], float64[::1], int64, float64, float64[::1], "
            "float64[::1], float64[::1])")
def _merge_moments(part_n, part_mean, part_m2, P, eps, mean, var, rstd):
    # Parallel axis: the sets; each thread merges and writes only its own set.
    for s in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        n = float64(0.0)
        mu = float64(0.0)
        m2 = float64(0.0)
        for p in range(s * P, s * P + P):
            n, mu, m2 = chan_merge(n, mu, m2, part_n[p], part_mean[p], part_m2[p])
        mean[s] = mu
        var[s] = m2 / n
        rstd[s] = 1.0 / math.sqrt(m2 / n + eps)


@dev.kernel("void({f}[::1], float64[::1], float64[::1], {f}[::1], {f}[::1], boolean, boolean, "
            + _LAYOUT + ", {f}[::1])")
def _norm_apply(x, mean, rstd, gamma, beta, has_gamma, has_beta, C, L, M, per_channel, y):
    # Parallel axis: the flat element; each thread writes only its own y.
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = set_of(e, C, L, M, per_channel)
        y[e] = _y_value(x[e], mean[s], rstd[s], gamma, beta, has_gamma, has_beta, (e // L) % C)


@dev.kernel("void({f}[::1], {f}[::1], float64[::1], float64[::1], {f}[::1], boolean, boolean, "
            "int64, int64, int64, boolean, int64, boolean, int64, int64, "
            "float64[::1], float64[::1], boolean, {f}[::1])")
def _set_sums(x, dy, mean, rstd, gamma, has_gamma, weight_sums, C, L, M_red, red_per_channel, M,
              per_channel, P, chunk, part_a, part_b, fuse_dx, dx):
    sh_a = cuda.shared.array(REDUCE_SHARED, float64)
    sh_b = cuda.shared.array(REDUCE_SHARED, float64)
    S = x.size // M_red
    # Parallel axis: (set, part) tasks of the reduction layout, one block each
    # (grid-stride); the block's threads split the part's members and only
    # thread 0 writes the task's two partials (fused, each thread then also
    # writes dx of its own members).
    for task in range(cuda.blockIdx.x, S * P, cuda.gridDim.x):
        s = task // P
        m0 = (task - s * P) * chunk
        m1 = min(M_red, m0 + chunk)
        a = float64(0.0)
        b = float64(0.0)
        for m in range(m0 + cuda.threadIdx.x, m1, cuda.blockDim.x):
            e = member(s, m, C, L, M_red, red_per_channel)
            st = set_of(e, C, L, M, per_channel)
            xhat = (float64(x[e]) - mean[st]) * rstd[st]
            g = float64(dy[e])
            if has_gamma and weight_sums:
                g = g * gamma[(e // L) % C]
            a += g
            b += g * xhat
        a, b = block_sum2(a, b, sh_a, sh_b)
        if cuda.threadIdx.x == 0:
            part_a[task] = a
            part_b[task] = b
        if fuse_dx:
            # P == 1 and the reduction sets are the statistics' sets: dx of the
            # whole set while its rows are in cache.
            for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
                e = member(s, m, C, L, M, per_channel)
                w = float64(gamma[(e // L) % C]) if has_gamma else float64(1.0)
                dx[e] = _dx_value(x[e], dy[e], mean[s], rstd[s], w, a, b, M, weight_sums)


@dev.kernel("void({f}[::1], {f}[::1], float64[::1], float64[::1], int64, int64, boolean, "
            "float64[::1], float64[::1])")
def _column_sums(x, dy, mean, rstd, C, M, per_channel, a, b):
    """Per-channel sum(dy) and sum(dy * xhat) of x viewed as (N, C) (L == 1)."""
    N = x.size // C
    # Parallel axis: the channels c, one thread each; a thread writes only a[c], b[c].
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        sa = float64(0.0)
        sb = float64(0.0)
        for n in range(N):
            e = n * C + c
            st = set_of(e, C, 1, M, per_channel)
            g = float64(dy[e])
            sa += g
            sb += g * (float64(x[e]) - mean[st]) * rstd[st]
        a[c] = sa
        b[c] = sb


@dev.kernel("void(float64[::1], float64[::1], int64, float64[::1], float64[::1])")
def _merge_sums(part_a, part_b, P, a, b):
    # Parallel axis: the sets; each thread adds and writes only its own set.
    for s in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        sa = float64(0.0)
        sb = float64(0.0)
        for p in range(s * P, s * P + P):
            sa += part_a[p]
            sb += part_b[p]
        a[s] = sa
        b[s] = sb


@dev.kernel("void({f}[::1], {f}[::1], float64[::1], float64[::1], {f}[::1], boolean, "
            "float64[::1], float64[::1], boolean, boolean, " + _LAYOUT + ", {f}[::1])")
def _norm_dx(x, dy, mean, rstd, gamma, has_gamma, sum_a, sum_b, weighted, fixed_stats, C, L, M,
             per_channel, dx):
    # Parallel axis: the flat element; each thread writes only its own dx.
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = set_of(e, C, L, M, per_channel)
        w = float64(gamma[(e // L) % C]) if has_gamma else float64(1.0)
        if fixed_stats:
            dx[e] = rstd[s] * float64(dy[e]) * w
        else:
            dx[e] = _dx_value(x[e], dy[e], mean[s], rstd[s], w, sum_a[s], sum_b[s], M, weighted)


def _layout(x, groups, per_channel):
    """(N, C, L, S, M) of the (N, C, L) view and its sets."""
    N, C, L = x.shape
    return (N, C, L) + set_shape(x.shape, groups, per_channel)


def parts(S, M):
    """(P, chunk): each of S sets of M members split into P parts of ``chunk``
    consecutive members, the last one possibly shorter. P is at most
    TARGET_BLOCKS // S (and at least 1), and small enough that a part keeps
    about MIN_PER_THREAD members for each thread of a reduction block."""
    P = max(1, min(TARGET_BLOCKS // S, -(-M // (dev.BLOCK_REDUCE * MIN_PER_THREAD))))
    chunk = -(-M // P)
    return -(-M // chunk), chunk


def _f64(a):
    return a if a.dtype == np.float64 else a.astype(np.float64)


def _vector_arg(v, x):
    """(array, present): a per-channel vector, or a 1-element stand-in for None."""
    return (v, True) if v is not None else (x.reshape(-1)[:1], False)


def _stats(x, groups, per_channel, eps, gamma=None, beta=None, y=None):
    """mean, var, rstd of every set; with ``y``, also y into it. Returns
    (mean, var, rstd, whether y was written): y is written by the statistics
    kernel itself when each set fits one block (P == 1)."""
    N, C, L, S, M = _layout(x, groups, per_channel)
    P, chunk = parts(S, M)
    fuse_y = y is not None and P == 1
    g, has_gamma = _vector_arg(gamma, x)
    b, has_beta = _vector_arg(beta, x)
    mean, var, rstd = (dev.empty((S,), np.float64) for _ in range(3))
    # Fused, the partials are not written: one-slot stand-ins.
    part_n, part_mean, part_m2 = (dev.empty((1 if fuse_y else S * P,), np.float64)
                                  for _ in range(3))
    out = y.reshape(-1) if fuse_y else g
    _set_moments[dev.grid_sets(S * P)](x.reshape(-1), C, L, M, per_channel, P, chunk,
                                       part_n, part_mean, part_m2, fuse_y, g, b, has_gamma,
                                       has_beta, float(eps), mean, var, rstd, out)
    if not fuse_y:
        merge_parts(part_n, part_mean, part_m2, P, eps, mean, var, rstd)
    return mean, var, rstd, fuse_y


def merge_parts(part_n, part_mean, part_m2, P, eps, mean, var, rstd):
    """mean, var and rstd (float64 (S,) device arrays, written) of every set from
    the count, mean and M2 of its P parts (float64 (S*P,), part p of set s at
    s*P + p), by Chan's merge."""
    _merge_moments[dev.grid_1d(mean.size)](part_n, part_mean, part_m2, P, float(eps), mean, var,
                                           rstd)


def _apply(x, mean, rstd, gamma, beta, groups, per_channel, y=None):
    N, C, L, S, M = _layout(x, groups, per_channel)
    g, has_gamma = _vector_arg(gamma, x)
    b, has_beta = _vector_arg(beta, x)
    y = dev.empty_like(x) if y is None else y
    _norm_apply[dev.grid_1d(x.size)](x.reshape(-1), mean, rstd, g, b, has_gamma, has_beta,
                                     C, L, M, per_channel, y.reshape(-1))
    return y


def _sums(x, dy, mean, rstd, gamma, weight_sums, groups, per_channel, red_per_channel, dx=None):
    """(sum(dy * w), sum(dy * w * xhat)) per set of the reduction layout, float64, w = gamma[c]
    when ``weight_sums`` else 1; and whether dx was written. With ``dx`` (the reduction sets
    being the statistics' sets) the sums kernel also writes dx when each set fits one block."""
    N, C, L, S, M = _layout(x, groups, per_channel)
    S_red, M_red = (C, N * L) if red_per_channel else (S, M)
    if red_per_channel and L == 1 and not weight_sums:
        a, b = dev.empty((C,), np.float64), dev.empty((C,), np.float64)
        _column_sums[dev.grid_1d(C)](x.reshape(-1), dy.reshape(-1), mean, rstd, C, M,
                                     per_channel, a, b)
        return a, b, False
    P, chunk = parts(S_red, M_red)
    fuse_dx = dx is not None and P == 1
    g, has_gamma = _vector_arg(gamma, x)
    a, b = dev.empty((S_red,), np.float64), dev.empty((S_red,), np.float64)
    part_a, part_b = (a, b) if P == 1 else (dev.empty((S_red * P,), np.float64),
                                            dev.empty((S_red * P,), np.float64))
    _set_sums[dev.grid_sets(S_red * P)](x.reshape(-1), dy.reshape(-1), mean, rstd, g, has_gamma,
                                        weight_sums, C, L, M_red, red_per_channel, M,
                                        per_channel, P, chunk, part_a, part_b, fuse_dx,
                                        dx.reshape(-1) if fuse_dx else g)
    if P > 1:
        _merge_sums[dev.grid_1d(S_red)](part_a, part_b, P, a, b)
    return a, b, fuse_dx


@implements(norm.norm_stats)
def norm_stats(x, groups, per_channel, eps):
    dev.require_device("norm_stats", x=x)
    check_layout("norm_stats", x, groups, per_channel)
    return _stats(x, groups, bool(per_channel), eps)[:3]


@implements(norm.norm_forward)
def norm_forward(x, mean, rstd, gamma, beta, groups, per_channel):
    dev.require_device("norm_forward", x=x, mean=mean, rstd=rstd, gamma=gamma, beta=beta)
    return _apply(x, _f64(mean), _f64(rstd), gamma, beta, groups, bool(per_channel))


@implements(norm.norm_forward_train)
def norm_forward_train(x, gamma, beta, groups, per_channel, eps):
    dev.require_device("norm_forward_train", x=x, gamma=gamma, beta=beta)
    check_layout("norm_forward_train", x, groups, per_channel)
    per_channel = bool(per_channel)
    y = dev.empty_like(x)
    mean, var, rstd, fused = _stats(x, groups, per_channel, eps, gamma, beta, y)
    if not fused:
        _apply(x, mean, rstd, gamma, beta, groups, per_channel, y)
    return y, mean, var, rstd


@implements(norm.norm_backward)
def norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                  need_dx=True):
    dev.require_device("norm_backward", x=x, dy=dy, mean=mean, rstd=rstd, gamma=gamma)
    per_channel = bool(per_channel)
    N, C, L, S, M = _layout(x, groups, per_channel)
    mean, rstd = _f64(mean), _f64(rstd)
    set_sums = need_dx and not fixed_stats
    dx = dev.empty_like(x) if need_dx else None
    sum_a = sum_b = dgamma = dbeta = None
    fused = False
    if per_channel:
        # The sets are the channels: the sums of dy and dy * xhat are dbeta and dgamma.
        if set_sums or gamma is not None:
            sum_a, sum_b, fused = _sums(x, dy, mean, rstd, gamma, False, groups, True, True,
                                        dx if set_sums else None)
            dbeta, dgamma = sum_a, sum_b
    else:
        if set_sums:
            sum_a, sum_b, fused = _sums(x, dy, mean, rstd, gamma, True, groups, False, False, dx)
        if gamma is not None:
            dbeta, dgamma, _ = _sums(x, dy, mean, rstd, gamma, False, groups, False, True)
    if need_dx and not fused:
        g, has_gamma = _vector_arg(gamma, x)
        a, b = (sum_a, sum_b) if set_sums else (mean, mean)
        _norm_dx[dev.grid_1d(x.size)](x.reshape(-1), dy.reshape(-1), mean, rstd, g, has_gamma,
                                      a, b, not per_channel, bool(fixed_stats), C, L, M,
                                      per_channel, dx.reshape(-1))
    if gamma is None:
        return dx, None, None
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)
