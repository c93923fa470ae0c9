"""GPU lab: GEMM, y = x W^T as Dense computes it, numba.cuda kernels raced against cuBLAS.

x is (N, I), W is (O, I), y is (N, O) float32 (tinynet/ops/dense/__init__.py):
y[n, o] = sum_i x[n, i] * W[o, i], 2*N*O*I flops.

1. naive: one thread per y[n, o], the dot product read straight from global
   memory (each x and W element is read O or N times).
2. tiled: TILE x TILE threads per block compute a TILE x TILE tile of y;
   per step the block stages a TILE-wide slab of x and of W in shared memory,
   so each global element is read N/TILE or O/TILE times (float32 sums, as
   cuBLAS's SGEMM).
3. cuBLAS: device.matmul (CuPy), what the cuda backend's Dense and Conv2D
   call.

    python -m kernels.gpu_gemm --check    # also under NUMBA_ENABLE_CUDASIM=1
    python -m kernels.gpu_gemm --bench    # a GPU
"""
import numpy as np
from numba import cuda, float32

from kernels.common import GpuRow, assert_close, lab_main, event_time, torch_cuda, \
    torch_time
from tinynet.backends import cuda as tcuda
from tinynet.backends import ref
from tinynet.backends import cuda_device as dev

TILE = 16
BENCH_SHAPE = (4096, 4096, 4096)  # (N, I, O)


@cuda.jit
def _gemm_naive(x, W, y):
    # Parallel axis: the outputs y[n, o], one thread each.
    n, o = cuda.grid(2)
    if n < y.shape[0] and o < y.shape[1]:
        acc = float32(0.0)
        for i in range(x.shape[1]):
            acc += x[n, i] * W[o, i]
        y[n, o] = acc


@cuda.jit
def _gemm_tiled(x, W, y):
    xs = cuda.shared.array((TILE, TILE), float32)
    ws = cuda.shared.array((TILE, TILE), float32)
    # threadIdx.x runs along k (loads) and o (stores), so a warp touches
    # consecutive addresses.
    tc, tr = cuda.threadIdx.x, cuda.threadIdx.y
    n = cuda.blockIdx.x * TILE + tr
    o = cuda.blockIdx.y * TILE + tc
    I = x.shape[1]
    acc = float32(0.0)
    # Parallel axis: TILE x TILE tiles of y, one block each; each thread owns
    # y[n, o] and stages one element of each slab per step.
    for k0 in range(0, I, TILE):
        xs[tr, tc] = x[n, k0 + tc] if n < x.shape[0] and k0 + tc < I else 0
        wo = cuda.blockIdx.y * TILE + tr
        ws[tr, tc] = W[wo, k0 + tc] if wo < W.shape[0] and k0 + tc < I else 0
        cuda.syncthreads()
        for k in range(TILE):
            acc += xs[tr, k] * ws[tc, k]
        cuda.syncthreads()
    if n < y.shape[0] and o < y.shape[1]:
        y[n, o] = acc


def _grid2(N, O):
    return ((N + TILE - 1) // TILE, (O + TILE - 1) // TILE), (TILE, TILE)


def gemm_naive(x, W):
    y = dev.empty((x.shape[0], W.shape[0]), x.dtype)
    _gemm_naive[_grid2(*y.shape)](x, W, y)
    return y


def gemm_tiled(x, W):
    y = dev.empty((x.shape[0], W.shape[0]), x.dtype)
    _gemm_tiled[_grid2(*y.shape)](x, W, y)
    return y


def gemm_cublas(x, W):
    return dev.matmul(x, W.T)


VARIANTS = [("1 naive", gemm_naive), ("2 shared-memory tiled", gemm_tiled),
            ("3 cuBLAS (device.matmul)", gemm_cublas)]


def check():
    rng = np.random.default_rng(0)
    # Not multiples of TILE in any dimension.
    x = rng.standard_normal((19, 21)).astype(np.float32)
    W = rng.standard_normal((17, 21)).astype(np.float32)
    want = ref.dense_forward(x.astype(np.float64), W.astype(np.float64), None)
    for name, fn in VARIANTS:
        assert_close(fn(tcuda.to_device(x), tcuda.to_device(W)), want, name, rtol=1e-4,
                     atol=1e-4)


def bench():
    import cupy as cp
    N, I, O = BENCH_SHAPE
    x = cp.random.standard_normal((N, I), dtype=cp.float32)
    W = cp.random.standard_normal((O, I), dtype=cp.float32)
    flops = 2 * N * I * O
    torch = torch_cuda()
    t_torch = None
    if torch:
        tx, tW = torch.randn(N, I, device="cuda"), torch.randn(O, I, device="cuda")
        t_torch = torch_time(torch, lambda: tx @ tW.T, repeat=10)
    rows = []
    for name, fn in VARIANTS:
        seconds = event_time(lambda: fn(x, W), warmup=1, repeat=5 if "naive" in name else 10)
        rows.append(GpuRow(f"gemm {BENCH_SHAPE}", name, seconds, flops=flops,
                           torch_seconds=t_torch))
    return rows


def main(argv=None):
    return lab_main("gpu_gemm", check, bench, argv, device="cuda")


if __name__ == "__main__":
    main()
