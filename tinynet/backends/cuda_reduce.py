"""Block reductions shared by the cuda kernels: float64 sums and Chan-merged moments.

``channel_sums(a, N, C, L)`` (the bias gradient of Dense and Conv2D: the sum
of an (N, C, L) array over n and l for every c, in float64) and
``add_channel_bias`` are built on them.

A block of B threads (B = device.BLOCK_REDUCE, a power of two) reduces one
value per thread to one value per block:

- ``block_sum(v, sh)``: the sum of v over the block;
  ``block_sum2(a, b, sh_a, sh_b)`` two such sums in one pass.
- ``block_moments(n, mean, m2, sh_n, sh_mean, sh_m2)``: the count, mean and
  M2 = sum((x - mean)^2) of the union of the threads' member sets, by Chan,
  Golub and LeVeque's pairwise merge
  (https://doi.org/10.1080/00031305.1983.10483115):

      n = na + nb,  delta = mean_b - mean_a,
      mean = mean_a + delta * nb / n,  M2 = M2_a + M2_b + delta^2 * na * nb / n.

On a GPU (``device.WARP_SHUFFLE``) each warp first reduces its 32 values with
``shfl_down_sync``; lane 0 of each warp stores its warp's value in shared
memory and warp 0 reduces those; thread 0 stores the block's value in slot
0. Under the simulator, which has no ``shfl_*_sync``, the block reduces
through shared memory alone: a tree in which thread t < s merges slot t + s
into slot t, s = B/2, B/4, ..., 1, with a barrier between the levels, so no
two threads write one slot and no slot is read before it is written; the
result ends in slot 0. Both paths then pass a barrier, every thread reads
slot 0 and a last barrier lets the caller reuse the shared arrays at once.

Every accumulator is float64. The calling kernel allocates the shared arrays,
``cuda.shared.array(REDUCE_SHARED, float64)`` each (``device.REDUCE_SHARED``
slots, at least ``BLOCK_REDUCE``).
"""
from numba import cuda, float64

from . import cuda_device as _dev
from .cuda_device import REDUCE_SHARED

__all__ = ["block_sum", "block_sum2", "block_moments", "chan_merge", "channel_sums",
           "add_channel_bias"]

_FULL_MASK = 0xFFFFFFFF
_WARP = 32


@cuda.jit(device=True, inline=True)
def chan_merge(na, mean_a, m2a, nb, mean_b, m2b):
    """(n, mean, M2) of the union of two sets given by their own (n, mean, M2)."""
    n = na + nb
    if n == 0.0:
        return float64(0.0), float64(0.0), float64(0.0)
    delta = mean_b - mean_a
    return n, mean_a + delta * (nb / n), m2a + m2b + delta * delta * (na * nb / n)


@cuda.jit(device=True, inline=True)
def _warp_sum(v):
    off = _WARP // 2
    while off > 0:
        v += cuda.shfl_down_sync(_FULL_MASK, v, off)
        off //= 2
    return v


@cuda.jit(device=True, inline=True)
def block_sum(v, sh):
    """The sum over the block of each thread's float64 v, returned to every thread."""
    t = cuda.threadIdx.x
    B = cuda.blockDim.x
    if _dev.WARP_SHUFFLE:
        v = _warp_sum(v)
        if t % _WARP == 0:
            sh[t // _WARP] = v
        cuda.syncthreads()
        if t < _WARP:
            v = sh[t] if t < B // _WARP else float64(0.0)
            v = _warp_sum(v)
            if t == 0:
                sh[0] = v
        cuda.syncthreads()
    else:
        sh[t] = v
        cuda.syncthreads()
        s = B // 2
        while s > 0:
            if t < s:
                sh[t] += sh[t + s]
            cuda.syncthreads()
            s //= 2
    v = sh[0]
    cuda.syncthreads()
    return v


@cuda.jit(device=True, inline=True)
def block_sum2(a, b, sh_a, sh_b):
    """The sums over the block of each thread's float64 a and b, returned to every thread."""
    t = cuda.threadIdx.x
    B = cuda.blockDim.x
    if _dev.WARP_SHUFFLE:
        a = _warp_sum(a)
        b = _warp_sum(b)
        if t % _WARP == 0:
            sh_a[t // _WARP] = a
            sh_b[t // _WARP] = b
        cuda.syncthreads()
        if t < _WARP:
            a = sh_a[t] if t < B // _WARP else float64(0.0)
            b = sh_b[t] if t < B // _WARP else float64(0.0)
            a = _warp_sum(a)
            b = _warp_sum(b)
            if t == 0:
                sh_a[0] = a
                sh_b[0] = b
        cuda.syncthreads()
    else:
        sh_a[t] = a
        sh_b[t] = b
        cuda.syncthreads()
        s = B // 2
        while s > 0:
            if t < s:
                sh_a[t] += sh_a[t + s]
                sh_b[t] += sh_b[t + s]
            cuda.syncthreads()
            s //= 2
    a = sh_a[0]
    b = sh_b[0]
    cuda.syncthreads()
    return a, b


@cuda.jit(device=True, inline=True)
def _warp_moments(n, mean, m2):
    off = _WARP // 2
    while off > 0:
        nb = cuda.shfl_down_sync(_FULL_MASK, n, off)
        mean_b = cuda.shfl_down_sync(_FULL_MASK, mean, off)
        m2b = cuda.shfl_down_sync(_FULL_MASK, m2, off)
        n, mean, m2 = chan_merge(n, mean, m2, nb, mean_b, m2b)
        off //= 2
    return n, mean, m2


@cuda.jit(device=True, inline=True)
def block_moments(n, mean, m2, sh_n, sh_mean, sh_m2):
    """Chan-merge every thread's (n, mean, M2); the block's, returned to every thread."""
    t = cuda.threadIdx.x
    B = cuda.blockDim.x
    if _dev.WARP_SHUFFLE:
        n, mean, m2 = _warp_moments(n, mean, m2)
        if t % _WARP == 0:
            w = t // _WARP
            sh_n[w] = n
            sh_mean[w] = mean
            sh_m2[w] = m2
        cuda.syncthreads()
        if t < _WARP:
            if t < B // _WARP:
                n, mean, m2 = sh_n[t], sh_mean[t], sh_m2[t]
            else:
                n, mean, m2 = float64(0.0), float64(0.0), float64(0.0)
            n, mean, m2 = _warp_moments(n, mean, m2)
            if t == 0:
                sh_n[0], sh_mean[0], sh_m2[0] = n, mean, m2
        cuda.syncthreads()
    else:
        sh_n[t] = n
        sh_mean[t] = mean
        sh_m2[t] = m2
        cuda.syncthreads()
        s = B // 2
        while s > 0:
            if t < s:
                sh_n[t], sh_mean[t], sh_m2[t] = chan_merge(sh_n[t], sh_mean[t], sh_m2[t],
                                                           sh_n[t + s], sh_mean[t + s],
                                                           sh_m2[t + s])
            cuda.syncthreads()
            s //= 2
    n, mean, m2 = sh_n[0], sh_mean[0], sh_m2[0]
    cuda.syncthreads()
    return n, mean, m2


# -- per-channel sums and bias: Dense's and Conv2D's bias and its gradient -----

@_dev.kernel("void({f}[::1], {f}[::1], int64, int64)")
def _add_channel_bias(y, b, C, L):
    """y[n, c, l] += b[c] for y viewed flat as (N, C, L)."""
    # Parallel axis: the flat index of y; each thread writes only its own elements.
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] += b[(i // L) % C]


@_dev.kernel("void({f}[::1], int64, int64, int64, {f}[::1])")
def _channel_sums(a, N, C, L, out):
    """out[c] = sum over (n, l) of a[n, c, l], in float64, for a viewed flat as (N, C, L)."""
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    M = N * L
    # Parallel axis: channels, one block each (grid-stride); the block's threads
    # split the (n, l) members and only thread 0 writes out[c].
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            n = m // L
            acc += a[(n * C + c) * L + (m - n * L)]
        acc = block_sum(acc, sh)
        if cuda.threadIdx.x == 0:
            out[c] = acc


@_dev.kernel("void({f}[::1], int64, int64, {f}[::1])")
def _column_sums(a, N, C, out):
    """out[c] = sum over n of a[n, c], in float64, for a viewed flat as (N, C)."""
    # Parallel axis: the columns c, one thread each; a thread writes only out[c].
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = float64(0.0)
        for n in range(N):
            acc += a[n * C + c]
        out[c] = acc


def add_channel_bias(y, b, C, L):
    """y (viewed as (N, C, L)) += b[c], in place on a fresh device array."""
    _add_channel_bias[_dev.grid_1d(y.size)](y.reshape(-1), b, C, L)


def channel_sums(a, N, C, L):
    """sum over (n, l) of a viewed as (N, C, L): a fresh (C,) device array of a's dtype."""
    out = _dev.empty((C,), a.dtype)
    if L == 1:
        _column_sums[_dev.grid_1d(C)](a.reshape(-1), N, C, out)
    else:
        _channel_sums[_dev.grid_sets(C)](a.reshape(-1), N, C, L, out)
    return out
