"""GPU lab: the normalization statistics kernel, and every norm's forward+backward.

The statistics of a set (mean and rstd = 1/sqrt(var + eps), var biased, in
float64; tinynet/ops/norm/__init__.py) in the per-channel layout of BatchNorm
(a set per channel c over (n, l), the hard case: few long strided sets) and
the row layout of LN/IN/GN (one contiguous row per set):

1. naive: one thread per set, two passes over its members (mean, then the
   squared deviations). Few sets leave almost every SM idle.
2. block reduction: one block per set, two passes, each reduced by a
   shared-memory tree.
3. tinynet: the production kernel (tinynet/ops/norm/cuda.py): each set
   split into parts so that about TARGET_BLOCKS blocks run, one pass of
   shifted sums per thread, Chan merge through warp shuffles, then a merge
   of the parts.
4. as 3, with four loads in flight per thread: each thread reads members
   m, m+B, m+2B, m+3B before it accumulates them (numba.cuda has no float4
   type, so "vectorized" here means independent loads, not 128-bit ones).

Then each normalization's whole training forward+backward through tinynet's
ops (BatchNorm, LayerNorm, InstanceNorm, GroupNorm with G=8) beside torch
CUDA's, on (256, 64, 56, 56) float32. The minimum bytes moved are x read and
y written forward, x and dy read and dx written backward: 5 * 4 * numel.

    python -m kernels.gpu_norm --check    # also under NUMBA_ENABLE_CUDASIM=1
    python -m kernels.gpu_norm --bench    # a GPU
"""
import math

import numpy as np
from numba import cuda, float64

from kernels.gpu_common import GpuRow, assert_close, event_time, gpu_lab_main, torch_cuda, \
    torch_time
from tinynet.backends import cuda as tcuda
from tinynet.backends import ref
from tinynet.backends.cuda import device as dev
from tinynet.backends.cuda import norm as tnorm
from tinynet.backends.cuda.device import REDUCE_SHARED
from tinynet.backends.cuda.reduce import block_moments, chan_merge

BENCH_SHAPE = (256, 64, 56, 56)
# name -> (groups, per_channel) on the (N, C, H*W) view; LayerNorm views (N, C*H*W, 1).
NORMS = {"batch": (1, True), "layer": (1, False), "instance": (64, False), "group": (8, False)}
_member, _set_of = tnorm._member, tnorm._set_of


@cuda.jit
def _stats_naive(x, C, L, M, per_channel, eps, mean, rstd):
    # Parallel axis: the sets, one thread each; a thread writes only its set.
    s = cuda.grid(1)
    if s < mean.size:
        acc = float64(0.0)
        for m in range(M):
            acc += x[_member(s, m, C, L, M, per_channel)]
        mu = acc / M
        acc = float64(0.0)
        for m in range(M):
            d = x[_member(s, m, C, L, M, per_channel)] - mu
            acc += d * d
        mean[s] = mu
        rstd[s] = 1.0 / math.sqrt(acc / M + eps)


@cuda.jit(device=True, inline=True)
def _tree_sum(v, sh):
    """Sum over the block through a shared-memory tree; every thread gets it."""
    t = cuda.threadIdx.x
    sh[t] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    v = sh[0]
    cuda.syncthreads()
    return v


@cuda.jit
def _stats_block(x, C, L, M, per_channel, eps, mean, rstd):
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    # Parallel axis: the sets, one block each; thread 0 writes the set's result.
    for s in range(cuda.blockIdx.x, mean.size, cuda.gridDim.x):
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            acc += x[_member(s, m, C, L, M, per_channel)]
        mu = _tree_sum(acc, sh) / M
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            d = x[_member(s, m, C, L, M, per_channel)] - mu
            acc += d * d
        var = _tree_sum(acc, sh) / M
        if cuda.threadIdx.x == 0:
            mean[s] = mu
            rstd[s] = 1.0 / math.sqrt(var + eps)


@cuda.jit
def _moments_ilp4(x, C, L, M, per_channel, P, chunk, part_n, part_mean, part_m2):
    sh_n = cuda.shared.array(REDUCE_SHARED, float64)
    sh_mean = cuda.shared.array(REDUCE_SHARED, float64)
    sh_m2 = cuda.shared.array(REDUCE_SHARED, float64)
    B = cuda.blockDim.x
    S = x.size // M
    # Parallel axis: (set, part) tasks, one block each; thread 0 writes the partial.
    for task in range(cuda.blockIdx.x, S * P, cuda.gridDim.x):
        s = task // P
        m0 = (task - s * P) * chunk
        m1 = min(M, m0 + chunk)
        shift = float64(x[_member(s, m0, C, L, M, per_channel)])
        cnt = float64(0.0)
        s1 = float64(0.0)
        s2 = float64(0.0)
        m = m0 + cuda.threadIdx.x
        # Four independent loads, then their four updates.
        while m + 3 * B < m1:
            a = float64(x[_member(s, m, C, L, M, per_channel)]) - shift
            b = float64(x[_member(s, m + B, C, L, M, per_channel)]) - shift
            c = float64(x[_member(s, m + 2 * B, C, L, M, per_channel)]) - shift
            d = float64(x[_member(s, m + 3 * B, C, L, M, per_channel)]) - shift
            cnt += 4.0
            s1 += (a + b) + (c + d)
            s2 += (a * a + b * b) + (c * c + d * d)
            m += 4 * B
        while m < m1:
            a = float64(x[_member(s, m, C, L, M, per_channel)]) - shift
            cnt += 1.0
            s1 += a
            s2 += a * a
            m += B
        mu = float64(0.0)
        m2 = float64(0.0)
        if cnt > 0.0:
            mu = shift + s1 / cnt
            m2 = max(s2 - s1 * s1 / cnt, 0.0)
        cnt, mu, m2 = block_moments(cnt, mu, m2, sh_n, sh_mean, sh_m2)
        if cuda.threadIdx.x == 0:
            part_n[task] = cnt
            part_mean[task] = mu
            part_m2[task] = m2


@cuda.jit
def _merge(part_n, part_mean, part_m2, P, eps, mean, rstd):
    # Parallel axis: the sets; each thread merges its own set's parts.
    for s in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        n = float64(0.0)
        mu = float64(0.0)
        m2 = float64(0.0)
        for p in range(s * P, s * P + P):
            n, mu, m2 = chan_merge(n, mu, m2, part_n[p], part_mean[p], part_m2[p])
        mean[s] = mu
        rstd[s] = 1.0 / math.sqrt(m2 / n + eps)


def _layout(x, groups, per_channel):
    N, C, L = x.shape
    S, M = (C, N * L) if per_channel else (N * groups, (C // groups) * L)
    return C, L, S, M


def stats_naive(x, groups, per_channel, eps):
    C, L, S, M = _layout(x, groups, per_channel)
    mean, rstd = dev.empty((S,), np.float64), dev.empty((S,), np.float64)
    _stats_naive[dev.grid_1d(S)](x.reshape(-1), C, L, M, per_channel, eps, mean, rstd)
    return mean, rstd


def stats_block(x, groups, per_channel, eps):
    C, L, S, M = _layout(x, groups, per_channel)
    mean, rstd = dev.empty((S,), np.float64), dev.empty((S,), np.float64)
    _stats_block[dev.grid_sets(S)](x.reshape(-1), C, L, M, per_channel, eps, mean, rstd)
    return mean, rstd


def stats_tinynet(x, groups, per_channel, eps):
    mean, _, rstd = tcuda.norm_stats(x, groups, per_channel, eps)
    return mean, rstd


def stats_ilp4(x, groups, per_channel, eps):
    C, L, S, M = _layout(x, groups, per_channel)
    P, chunk = tnorm._parts(S, M)
    parts = [dev.empty((S * P,), np.float64) for _ in range(3)]
    _moments_ilp4[dev.grid_sets(S * P)](x.reshape(-1), C, L, M, per_channel, P, chunk, *parts)
    mean, rstd = dev.empty((S,), np.float64), dev.empty((S,), np.float64)
    _merge[dev.grid_1d(S)](*parts, P, eps, mean, rstd)
    return mean, rstd


VARIANTS = [("1 naive, thread per set", stats_naive), ("2 block per set, tree", stats_block),
            ("3 tinynet: parts + warp shuffle", stats_tinynet),
            ("4 as 3, 4 loads in flight", stats_ilp4)]


def check():
    rng = np.random.default_rng(0)
    for per_channel, groups in ((True, 1), (False, 3)):
        x = 50 + rng.standard_normal((3, 6, 37)).astype(np.float32)
        want_mean, _, want_rstd = ref.norm_stats(x, groups, per_channel, 1e-5)
        for name, fn in VARIANTS:
            mean, rstd = fn(tcuda.to_device(x), groups, per_channel, 1e-5)
            assert_close(mean, want_mean, f"{name} mean", rtol=1e-10, atol=1e-10)
            assert_close(rstd, want_rstd, f"{name} rstd", rtol=1e-8, atol=1e-8)


def _view(shape, name):
    N, C, H, W = shape
    groups, per_channel = NORMS[name]
    return ((N, C * H * W, 1) if name == "layer" else (N, C, H * W)), groups, per_channel


def _torch_norm(torch, name, shape):
    """A closure running torch's forward+backward of norm ``name`` on CUDA float32."""
    F = torch.nn.functional
    N, C, H, W = shape
    x = torch.randn(shape, device="cuda", requires_grad=True)
    dy = torch.randn(shape, device="cuda")
    w = torch.ones(C, device="cuda", requires_grad=True)
    b = torch.zeros(C, device="cuda", requires_grad=True)
    lw = torch.ones((C, H, W), device="cuda", requires_grad=True)
    lb = torch.zeros((C, H, W), device="cuda", requires_grad=True)
    ops = {"batch": lambda: F.batch_norm(x, None, None, w, b, training=True),
           "layer": lambda: F.layer_norm(x, (C, H, W), lw, lb),
           "instance": lambda: F.instance_norm(x, weight=w, bias=b),
           "group": lambda: F.group_norm(x, NORMS["group"][0], w, b)}

    def run():
        ops[name]().backward(dy)
    return run


def bench():
    import cupy as cp
    rows = []
    nbytes = 4 * int(np.prod(BENCH_SHAPE))
    torch = torch_cuda()
    for per_channel, groups, label in ((True, 1, "BN layout"), (False, 64, "IN layout")):
        x = cp.random.standard_normal(BENCH_SHAPE, dtype=cp.float32).reshape(
            BENCH_SHAPE[0], BENCH_SHAPE[1], -1)
        for name, fn in VARIANTS:
            seconds = event_time(lambda: fn(x, groups, per_channel, 1e-5), repeat=10)
            rows.append(GpuRow(f"stats, {label}", name, seconds, floor_bytes=nbytes))
    for name in NORMS:
        view, groups, per_channel = _view(BENCH_SHAPE, name)
        C = view[1]
        x = cp.random.standard_normal(view, dtype=cp.float32)
        dy = cp.random.standard_normal(view, dtype=cp.float32)
        gamma, beta = cp.ones(C, cp.float32), cp.zeros(C, cp.float32)

        def step():
            _, mean, _, rstd = tcuda.norm_forward_train(x, gamma, beta, groups, per_channel, 1e-5)
            tcuda.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
        seconds = event_time(step, repeat=10)
        t_torch = torch_time(torch, _torch_norm(torch, name, BENCH_SHAPE), repeat=10) \
            if torch else None
        rows.append(GpuRow(f"{name} norm fwd+bwd {BENCH_SHAPE}", "tinynet", seconds,
                           floor_bytes=5 * nbytes, torch_seconds=t_torch))
    return rows


def main(argv=None):
    return gpu_lab_main("gpu_norm", check, bench, argv)


if __name__ == "__main__":
    main()
