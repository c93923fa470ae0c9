"""GPU lab: the normalization statistics kernel, and every norm's forward+backward.

The statistics of a set (mean and rstd, in float64; the sets and the
equations are the contract's, tinynet/ops/norm/__init__.py) in the
per-channel layout of BatchNorm (a set per channel c over (n, l), the hard
case: few long strided sets) and the row layout of LN/IN/GN (one contiguous
row per set). The variants index the sets with production's ``member`` and
reduce with the block reductions of tinynet/backends/cuda_reduce.py:

1. naive: one thread per set, two passes over its members (mean, then the
   squared deviations). Few sets leave almost every SM idle.
2. block per set: one block per set, two passes, each reduced by
   ``block_sum``.
3. tinynet: the production kernel (tinynet/ops/norm/cuda.py): each set
   split into parts so that about TARGET_BLOCKS blocks run, one pass of
   shifted sums per thread, Chan merge through warp shuffles
   (``block_moments``), then a merge of the parts.
4. as 3, with four loads in flight per thread: each thread reads members
   m, m+B, m+2B, m+3B before it accumulates them (numba.cuda has no float4
   type, so "vectorized" here means independent loads, not 128-bit ones);
   the parts and their merge (``merge_parts``) are production's.

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

from kernels.common import GpuRow, assert_close, event_time, lab_main, torch_cuda, torch_time
from tinynet.backends import cuda as tcuda
from tinynet.backends import cuda_device as dev
from tinynet.backends import ref
from tinynet.backends.cuda_device import REDUCE_SHARED
from tinynet.backends.cuda_reduce import block_moments, block_sum
from tinynet.ops.norm import set_shape
from tinynet.ops.norm.cases import CASES
from tinynet.ops.norm.cuda import member, merge_parts, parts

BENCH_SHAPE = (256, 64, 56, 56)
# name -> (groups, per_channel) on the (N, C, H*W) view; LayerNorm views (N, C*H*W, 1).
NORMS = {"batch": (1, True), "layer": (1, False), "instance": (64, False), "group": (8, False)}
EPS = 1e-5


@cuda.jit
def _stats_naive(x, C, L, M, per_channel, eps, mean, rstd):
    # Parallel axis: the sets, one thread each (grid-stride); a thread writes only its set.
    for s in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        acc = float64(0.0)
        for m in range(M):
            acc += x[member(s, m, C, L, M, per_channel)]
        mu = acc / M
        acc = float64(0.0)
        for m in range(M):
            d = x[member(s, m, C, L, M, per_channel)] - mu
            acc += d * d
        mean[s] = mu
        rstd[s] = 1.0 / math.sqrt(acc / M + eps)


@cuda.jit
def _stats_block(x, C, L, M, per_channel, eps, mean, rstd):
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    # Parallel axis: the sets, one block each; thread 0 writes the set's result.
    for s in range(cuda.blockIdx.x, mean.size, cuda.gridDim.x):
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            acc += x[member(s, m, C, L, M, per_channel)]
        mu = block_sum(acc, sh) / M
        acc = float64(0.0)
        for m in range(cuda.threadIdx.x, M, cuda.blockDim.x):
            d = x[member(s, m, C, L, M, per_channel)] - mu
            acc += d * d
        var = block_sum(acc, sh) / M
        if cuda.threadIdx.x == 0:
            mean[s] = mu
            rstd[s] = 1.0 / math.sqrt(var + eps)


@cuda.jit(device=True, inline=True)
def _thread_moments(count, s1, s2, shift):
    """(count, mean, M2) of a thread's members from their shifted sums (of x - shift)."""
    if count == 0.0:
        return count, float64(0.0), float64(0.0)
    return count, shift + s1 / count, max(s2 - s1 * s1 / count, 0.0)


@cuda.jit
def _moments_ilp4(x, C, L, M, per_channel, P, chunk, part_n, part_mean, part_m2):
    sh_n = cuda.shared.array(REDUCE_SHARED, float64)
    sh_mean = cuda.shared.array(REDUCE_SHARED, float64)
    sh_m2 = cuda.shared.array(REDUCE_SHARED, float64)
    B = cuda.blockDim.x
    # Parallel axis: (set, part) tasks, one block each; thread 0 writes the partial.
    for task in range(cuda.blockIdx.x, part_n.size, cuda.gridDim.x):
        s = task // P
        start = (task % P) * chunk
        end = min(M, start + chunk)
        shift = float64(x[member(s, start, C, L, M, per_channel)])
        count = s1 = s2 = float64(0.0)
        m = start + cuda.threadIdx.x
        # Four independent loads, then their four updates.
        while m + 3 * B < end:
            a = float64(x[member(s, m, C, L, M, per_channel)]) - shift
            b = float64(x[member(s, m + B, C, L, M, per_channel)]) - shift
            c = float64(x[member(s, m + 2 * B, C, L, M, per_channel)]) - shift
            d = float64(x[member(s, m + 3 * B, C, L, M, per_channel)]) - shift
            count += 4.0
            s1 += (a + b) + (c + d)
            s2 += (a * a + b * b) + (c * c + d * d)
            m += 4 * B
        while m < end:
            a = float64(x[member(s, m, C, L, M, per_channel)]) - shift
            count += 1.0
            s1 += a
            s2 += a * a
            m += B
        n_t, mean_t, m2_t = _thread_moments(count, s1, s2, shift)
        n_t, mean_t, m2_t = block_moments(n_t, mean_t, m2_t, sh_n, sh_mean, sh_m2)
        if cuda.threadIdx.x == 0:
            part_n[task] = n_t
            part_mean[task] = mean_t
            part_m2[task] = m2_t


def _layout(x, groups, per_channel):
    """(C, L, S, M) of the (N, C, L) view x and its sets."""
    return x.shape[1:] + set_shape(x.shape, groups, per_channel)


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
    P, chunk = parts(S, M)
    part_n, part_mean, part_m2 = (dev.empty((S * P,), np.float64) for _ in range(3))
    _moments_ilp4[dev.grid_sets(S * P)](x.reshape(-1), C, L, M, per_channel, P, chunk,
                                        part_n, part_mean, part_m2)
    mean, var, rstd = (dev.empty((S,), np.float64) for _ in range(3))
    merge_parts(part_n, part_mean, part_m2, P, eps, mean, var, rstd)
    return mean, rstd


VARIANTS = [("1 naive, thread per set", stats_naive), ("2 block per set, two passes", stats_block),
            ("3 tinynet: parts + warp shuffle", stats_tinynet),
            ("4 as 3, 4 loads in flight", stats_ilp4)]


def check():
    """Every variant against the ref statistics over tinynet.ops.norm.cases, float32
    at offset 50."""
    rng = np.random.default_rng(0)
    for case in CASES:
        x = (50 + rng.standard_normal(case.shape)).astype(np.float32)
        want_mean, _, want_rstd = ref.norm_stats(x.astype(np.float64), case.groups,
                                                 case.per_channel, EPS)
        for name, fn in VARIANTS:
            mean, rstd = fn(tcuda.to_device(x), case.groups, case.per_channel, EPS)
            assert_close(mean, want_mean, f"{name} {case.name} mean", rtol=1e-10, atol=1e-10)
            assert_close(rstd, want_rstd, f"{name} {case.name} rstd", rtol=1e-8, atol=1e-8)


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
        rows.append(GpuRow(f"{name} norm fwd+bwd {BENCH_SHAPE}", "tinynet cuda", seconds,
                           floor_bytes=5 * nbytes, torch_seconds=t_torch))
    return rows


def main(argv=None):
    return lab_main("gpu_norm", check, bench, argv, device="cuda")


if __name__ == "__main__":
    main()
