"""Kernel lab: 2-D max and average pooling, forward and backward.

The ops, their math and their argmax rule are the contract's
(tinynet/ops/pool/__init__.py); tinynet.backends.ref is the reference. Every
variant has the signatures of the ref ops
(``maxpool2d_forward(x, kernel, stride) -> (y, cache)``,
``maxpool2d_backward(dy, x_shape, cache, kernel, stride) -> dx``,
``avgpool2d_forward(x, kernel, stride) -> y``,
``avgpool2d_backward(dy, x_shape, kernel, stride) -> dx``) and runs over the
N*C planes in parallel: a window never leaves its plane, so each prange
iteration reads and writes only its own plane. ``MAX_VARIANTS`` and
``AVG_VARIANTS`` number the variants. The rows named tinynet run production
through its public names: the cpu backend's ops, or the ops with the
schedule given (tinynet.ops.pool.cpu: "2x2" for a 2x2 window at stride 2,
"any" for any window).

Max pool variants:

- naive, int64 index: a loop per window, the flat argmax index h*W + w as
  the cache (the ref's); the backward zeroes dx, then scatter-adds.
- uint8 offset: the same loop, with the argmax's tap p*kw + q inside the
  window as the cache (int32 above 256 taps): 1 byte per output instead of
  8; the backward is tinynet's "any" one, which zeroes each plane inside
  the kernel and scatter-adds through a table of flat tap offsets p*W + q
  (an integer division t // kw per window cost twice the time).
- recompute from x: the forward writes y only and the cache is x itself;
  the backward finds each argmax again from x.
- taps outside: tinynet's "any" schedule on every window. The forward loops
  turned inside out: for each output row, the taps (p, q) outside and the
  output columns j inside, on a running (max, tap) row, with the compare as
  a branch-free select; the innermost loop runs over j for any kernel and
  stride. The backward as in uint8 offset.
- tinynet: the cpu backend's ops, the "2x2" schedule on 2x2 windows at stride
  2 (the four taps as a branch-free tree: the winner of the top pair, of the
  bottom pair, then of the two, which vectorizes; the backward zeroes the
  plane and stores each dy at its argmax, as the windows do not overlap) and
  "any" elsewhere.
- recompute, 2x2 special: the tree without the taps in the forward, and
  again in the backward. Other windows run recompute from x.

Average pool variants:

- float64 sum, scatter bwd: tinynet's "any" schedule on every window: a
  float64 sum per window; the backward zeroes dx, then scatter-adds.
- gather bwd: the same forward; each dx pixel sums dy over the windows that
  hold it (a row range times a column range), so every dx pixel is written
  once.
- taps outside (as in max pooling): the forward on a float64 row of sums,
  the backward's scatter-add on dx zeroed inside the kernel.
- tinynet: the cpu backend's ops, the "2x2" schedule on 2x2 windows at stride
  2 (four taps unrolled; the backward writes each dx pixel once over
  contiguous columns) and "any" elsewhere.

Floor: forward reads x and writes y; backward reads dy and writes dx (the
argmax cache is extra traffic that a variant may or may not pay).

What the runs showed (2 cores, float32, (64, 32, 28, 28)): on the 2x2
stride-2 target, the tinynet max pool is the fastest by a wide margin;
storing the uint8 tap beats recomputing the argmax from x (recompute, 2x2
special), whose backward must read x again; the branchy per-window loops do
not vectorize. For other windows, taps outside beats the per-window loop 2
to 2.5 times in the forward. For average pooling the 2x2 schedule is 5 to 8
times faster than the generic loops, the gather backward is the slowest (an
integer division per pixel) and taps outside gains nothing over the float64
sum per window.

    python -m kernels.pool --check      every variant against the reference
    python -m kernels.pool --bench      timings, % of floor, torch beside them
"""
import functools

import numba
import numpy as np

from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops.pool import cpu as cpu_pool, output_size
from tinynet.ops.pool.cases import CASES, PoolCase
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch

SHAPE = (64, 32, 28, 28)
OVERLAP = ((3, 3), (2, 2))
# The bench's windows at a smaller batch, for --check.
LAB_CASES = (PoolCase("bench-2x2", (4, 32, 28, 28), (2, 2), (2, 2)),
             PoolCase("bench-3x3s2", (4, 32, 28, 28), *OVERLAP))


def _planes(shape, kernel, stride):
    """(N*C, H, W) of x and (N*C, OH, OW) of y for an input of ``shape``."""
    N, C, H, W = shape
    return (N * C, H, W), (N * C,) + output_size(shape, kernel, stride)


# tinynet's "any" schedule on every window, 2x2 ones at stride 2 too.
max_forward_any = functools.partial(cpu_pool.maxpool2d_forward_scheduled, schedule="any")
max_backward_any = functools.partial(cpu_pool.maxpool2d_backward_scheduled, schedule="any")
avg_forward_any = functools.partial(cpu_pool.avgpool2d_forward_scheduled, schedule="any")
avg_backward_any = functools.partial(cpu_pool.avgpool2d_backward_scheduled, schedule="any")


@numba.njit(inline="always")
def _window_max(x, pl, h0, w0, kh, kw):
    """The max of the window at (h0, w0) of plane pl and the (p, q) of its argmax,
    scanning the taps in row-major order with the contract's take-over test."""
    best = x[pl, h0, w0]
    bp, bq = 0, 0
    for p in range(kh):
        for q in range(kw):
            v = x[pl, h0 + p, w0 + q]
            if v > best or np.isnan(v):
                best = v
                bp, bq = p, q
    return best, bp, bq


@njit_kernel(parallel=True)
def _max_fwd_flat(x, kh, kw, sh, sw, y, idx):
    # Parallel axis: planes (n, c); iteration pl writes only y[pl], idx[pl].
    W = x.shape[2]
    for pl in numba.prange(x.shape[0]):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                best, p, q = _window_max(x, pl, i * sh, j * sw, kh, kw)
                y[pl, i, j] = best
                idx[pl, i, j] = (i * sh + p) * W + j * sw + q


@njit_kernel(parallel=True)
def _max_bwd_flat(dy, idx, dx):
    # Parallel axis: planes; iteration pl adds only into dx[pl] (flat (P, H*W)).
    for pl in numba.prange(dy.shape[0]):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                dx[pl, idx[pl, i, j]] += dy[pl, i, j]


def max_forward_flat(x, kernel, stride):
    x_planes, y_planes = _planes(x.shape, kernel, stride)
    y = np.empty(y_planes, x.dtype)
    idx = np.empty(y_planes, np.int64)
    _max_fwd_flat(x.reshape(x_planes), *kernel, *stride, y, idx)
    return y.reshape(x.shape[:2] + y.shape[1:]), idx.reshape(x.shape[:2] + y.shape[1:])


def max_backward_flat(dy, x_shape, cache, kernel, stride):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dy.dtype)
    _max_bwd_flat(dy.reshape((N * C,) + dy.shape[2:]), cache.reshape((N * C,) + dy.shape[2:]), dx)
    return dx.reshape(x_shape)


@njit_kernel(parallel=True)
def _max_fwd_offset(x, kh, kw, sh, sw, y, k):
    # Parallel axis: planes; iteration pl writes only y[pl], k[pl].
    for pl in numba.prange(x.shape[0]):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                best, p, q = _window_max(x, pl, i * sh, j * sw, kh, kw)
                y[pl, i, j] = best
                k[pl, i, j] = p * kw + q


def max_forward_offset(x, kernel, stride):
    x_planes, y_planes = _planes(x.shape, kernel, stride)
    y = np.empty(y_planes, x.dtype)
    # The tap's type of tinynet's cache, which the backward below checks.
    k = np.empty(y_planes, np.uint8 if kernel[0] * kernel[1] <= 256 else np.int32)
    _max_fwd_offset(x.reshape(x_planes), *kernel, *stride, y, k)
    return y.reshape(x.shape[:2] + y.shape[1:]), k.reshape(x.shape[:2] + y.shape[1:])


@njit_kernel(parallel=True)
def _max_fwd_only(x, kh, kw, sh, sw, y):
    # Parallel axis: planes; iteration pl writes only y[pl].
    for pl in numba.prange(x.shape[0]):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                y[pl, i, j] = _window_max(x, pl, i * sh, j * sw, kh, kw)[0]


@njit_kernel(parallel=True)
def _max_bwd_recompute(x, dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl zeroes and adds into dx[pl] only.
    H, W = dx.shape[1], dx.shape[2]
    for pl in numba.prange(dy.shape[0]):
        for h in range(H):
            for w in range(W):
                dx[pl, h, w] = 0
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                _, p, q = _window_max(x, pl, i * sh, j * sw, kh, kw)
                dx[pl, i * sh + p, j * sw + q] += dy[pl, i, j]


def max_forward_recompute(x, kernel, stride):
    x_planes, y_planes = _planes(x.shape, kernel, stride)
    y = np.empty(y_planes, x.dtype)
    _max_fwd_only(x.reshape(x_planes), *kernel, *stride, y)
    return y.reshape(x.shape[:2] + y.shape[1:]), x


def max_backward_recompute(dy, x_shape, cache, kernel, stride):
    x_planes, y_planes = _planes(x_shape, kernel, stride)
    dx = np.empty(x_planes, dy.dtype)
    _max_bwd_recompute(cache.reshape(x_planes), dy.reshape(y_planes), *kernel, *stride, dx)
    return dx.reshape(x_shape)


@numba.njit(inline="always")
def _tree_2x2(x, pl, i, j):
    """The max of 2x2 window (i, j) at stride 2 of plane pl and its tap 0..3:
    the winner of each row pair, then of the two rows, by the take-over test."""
    top, bottom = x[pl, 2 * i, 2 * j], x[pl, 2 * i + 1, 2 * j]
    right, right_below = x[pl, 2 * i, 2 * j + 1], x[pl, 2 * i + 1, 2 * j + 1]
    q_top = (right > top) | (right != right)
    q_bottom = (right_below > bottom) | (right_below != right_below)
    top = right if q_top else top
    bottom = right_below if q_bottom else bottom
    if (bottom > top) | (bottom != bottom):
        return bottom, 2 + np.int64(q_bottom)
    return top, np.int64(q_top)


@njit_kernel(parallel=True)
def _max_fwd_only_2x2(x, y):
    # Parallel axis: planes; iteration pl writes only y[pl].
    for pl in numba.prange(x.shape[0]):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                y[pl, i, j] = _tree_2x2(x, pl, i, j)[0]


@njit_kernel(parallel=True)
def _max_bwd_recompute_2x2(x, dy, dx):
    # Parallel axis: planes; iteration pl zeroes dx[pl] (flat (P, H*W)), then
    # stores each dy at the argmax found again by the tree; the windows do
    # not overlap.
    W = x.shape[2]
    HW = dx.shape[1]
    for pl in numba.prange(dy.shape[0]):
        for e in range(HW):
            dx[pl, e] = 0
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                t = _tree_2x2(x, pl, i, j)[1]
                dx[pl, (2 * i + (t >> 1)) * W + 2 * j + (t & 1)] = dy[pl, i, j]


def max_forward_recompute_2x2(x, kernel, stride):
    if cpu_pool.schedule(kernel, stride) != "2x2":
        return max_forward_recompute(x, kernel, stride)
    x_planes, y_planes = _planes(x.shape, kernel, stride)
    y = np.empty(y_planes, x.dtype)
    _max_fwd_only_2x2(x.reshape(x_planes), y)
    return y.reshape(x.shape[:2] + y.shape[1:]), x


def max_backward_recompute_2x2(dy, x_shape, cache, kernel, stride):
    if cpu_pool.schedule(kernel, stride) != "2x2":
        return max_backward_recompute(dy, x_shape, cache, kernel, stride)
    x_planes, y_planes = _planes(x_shape, kernel, stride)
    dx = np.empty((x_planes[0], x_planes[1] * x_planes[2]), dy.dtype)
    _max_bwd_recompute_2x2(cache.reshape(x_planes), dy.reshape(y_planes), dx)
    return dx.reshape(x_shape)


MAX_VARIANTS = {
    "1 naive, int64 index": (max_forward_flat, max_backward_flat),
    "2 uint8 offset": (max_forward_offset, max_backward_any),
    "3 recompute from x": (max_forward_recompute, max_backward_recompute),
    "4 taps outside (tinynet any)": (max_forward_any, max_backward_any),
    "5 tinynet": (cpu.maxpool2d_forward, cpu.maxpool2d_backward),
    "6 recompute, 2x2 special": (max_forward_recompute_2x2, max_backward_recompute_2x2),
}


@njit_kernel(parallel=True)
def _avg_bwd_gather(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl writes only dx[pl], each pixel once.
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    count = kh * kw
    for pl in numba.prange(P):
        for h in range(H):
            # windows i with i*sh <= h <= i*sh + kh - 1, 0 <= i < OH
            i0 = max(0, (h - kh + sh) // sh)
            i1 = min(OH - 1, h // sh)
            for w in range(W):
                j0 = max(0, (w - kw + sw) // sw)
                j1 = min(OW - 1, w // sw)
                s = 0.0
                for i in range(i0, i1 + 1):
                    for j in range(j0, j1 + 1):
                        s += dy[pl, i, j]
                dx[pl, h, w] = s / count


def avg_backward_gather(dy, x_shape, kernel, stride):
    x_planes, y_planes = _planes(x_shape, kernel, stride)
    dx = np.empty(x_planes, dy.dtype)
    _avg_bwd_gather(dy.reshape(y_planes), *kernel, *stride, dx)
    return dx.reshape(x_shape)


@njit_kernel(parallel=True)
def _avg_fwd_taps(x, kh, kw, sh, sw, y):
    # Parallel axis: planes; iteration pl writes only y[pl] and its own row of sums.
    count = kh * kw
    OW = y.shape[2]
    for pl in numba.prange(x.shape[0]):
        s = np.empty(OW, np.float64)
        for i in range(y.shape[1]):
            h0 = i * sh
            for j in range(OW):
                s[j] = 0.0
            for p in range(kh):
                for q in range(kw):
                    for j in range(OW):
                        s[j] += x[pl, h0 + p, j * sw + q]
            for j in range(OW):
                y[pl, i, j] = s[j] / count


@njit_kernel(parallel=True)
def _avg_bwd_taps(dy, kh, kw, sh, sw, dx):
    # Parallel axis: planes; iteration pl zeroes and adds into dx[pl] only.
    # Taps outside, output columns inside (as the forward).
    P, OH, OW = dy.shape
    count = kh * kw
    H, W = dx.shape[1], dx.shape[2]
    for pl in numba.prange(P):
        for h in range(H):
            for w in range(W):
                dx[pl, h, w] = 0
        for i in range(OH):
            for p in range(kh):
                for q in range(kw):
                    for j in range(OW):
                        dx[pl, i * sh + p, j * sw + q] += dy[pl, i, j] / count


def avg_forward_taps(x, kernel, stride):
    x_planes, y_planes = _planes(x.shape, kernel, stride)
    y = np.empty(y_planes, x.dtype)
    _avg_fwd_taps(x.reshape(x_planes), *kernel, *stride, y)
    return y.reshape(x.shape[:2] + y.shape[1:])


def avg_backward_taps(dy, x_shape, kernel, stride):
    x_planes, y_planes = _planes(x_shape, kernel, stride)
    dx = np.empty(x_planes, dy.dtype)
    _avg_bwd_taps(dy.reshape(y_planes), *kernel, *stride, dx)
    return dx.reshape(x_shape)


AVG_VARIANTS = {
    "1 float64 sum, scatter bwd (tinynet any)": (avg_forward_any, avg_backward_any),
    "2 gather bwd": (avg_forward_any, avg_backward_gather),
    "3 taps outside": (avg_forward_taps, avg_backward_taps),
    "4 tinynet": (cpu.avgpool2d_forward, cpu.avgpool2d_backward),
}


def _check_one(name, got, want, dtype):
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
    assert got.dtype == dtype, name


def check():
    """Every variant against the ref ops over tinynet.ops.pool.cases and the
    bench's windows, float32 and float64, with ties and NaNs."""
    rng = np.random.default_rng(0)
    for case in CASES + LAB_CASES:
        shape, kernel, stride = case.shape, case.kernel, case.stride
        for dtype in (np.float32, np.float64):
            # Ties (rounded values) and NaNs exercise the argmax rules.
            x = np.round(rng.standard_normal(shape), 1).astype(dtype)
            x.flat[rng.choice(x.size, 3, replace=False)] = np.nan
            y_ref, idx = ref.maxpool2d_forward(x.astype(np.float64), kernel, stride)
            dy = rng.standard_normal(y_ref.shape).astype(dtype)
            dx_ref = ref.maxpool2d_backward(dy.astype(np.float64), shape, idx, kernel, stride)
            for name, (fwd, bwd) in MAX_VARIANTS.items():
                y, cache = fwd(x, kernel, stride)
                _check_one(f"max {name} y {case.name}", y, y_ref, dtype)
                _check_one(f"max {name} dx {case.name}", bwd(dy, shape, cache, kernel, stride),
                           dx_ref, dtype)
            x = rng.standard_normal(shape).astype(dtype)
            y_ref = ref.avgpool2d_forward(x.astype(np.float64), kernel, stride)
            dx_ref = ref.avgpool2d_backward(dy.astype(np.float64), shape, kernel, stride)
            for name, (fwd, bwd) in AVG_VARIANTS.items():
                _check_one(f"avg {name} y {case.name}", fwd(x, kernel, stride), y_ref, dtype)
                _check_one(f"avg {name} dx {case.name}", bwd(dy, shape, kernel, stride), dx_ref,
                           dtype)


def _torch_times(torch, module, x, dy):
    """torch's forward (with indices when it keeps them), backward alone, and
    forward + backward through autograd, as a layer would run."""
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def fwd():
        return module(xt)

    yt = fwd()

    def bwd():
        torch.autograd.grad(yt, xt, dyt, retain_graph=True)

    def both():
        xt.grad = None
        module(xt).backward(dyt)

    return median_time(fwd), median_time(bwd), median_time(both)


def _max_calls(fwd, bwd, x, dy, kernel, stride):
    """Forward, backward, and forward then backward of a max-pool variant."""
    cache = fwd(x, kernel, stride)[1]

    def forward():
        fwd(x, kernel, stride)

    def backward():
        bwd(dy, x.shape, cache, kernel, stride)

    def both():
        bwd(dy, x.shape, fwd(x, kernel, stride)[1], kernel, stride)

    return forward, backward, both


def _avg_calls(fwd, bwd, x, dy, kernel, stride):
    """Forward, backward, and forward then backward of an average-pool variant."""
    def forward():
        fwd(x, kernel, stride)

    def backward():
        bwd(dy, x.shape, kernel, stride)

    def both():
        fwd(x, kernel, stride)
        bwd(dy, x.shape, kernel, stride)

    return forward, backward, both


def _bench_family(rows, label, variants, torch_module, x, kernel, stride, calls):
    torch = try_torch()
    y_shape = x.shape[:2] + output_size(x.shape, kernel, stride)
    dy = np.random.default_rng(1).standard_normal(y_shape).astype(x.dtype)
    fwd_bytes = tensor_bytes(x, dy)
    bwd_bytes = tensor_bytes(dy, x)
    t_fwd = t_bwd = t_both = None
    if torch is not None:
        t_fwd, t_bwd, t_both = _torch_times(torch, torch_module(torch), x, dy)
    for name, (fwd, bwd) in variants.items():
        forward, backward, both = calls(fwd, bwd, x, dy, kernel, stride)
        rows.append(Row(f"{label} fwd", name, median_time(forward), fwd_bytes,
                        torch_seconds=t_fwd))
        rows.append(Row(f"{label} bwd", name, median_time(backward), bwd_bytes,
                        torch_seconds=t_bwd))
        rows.append(Row(f"{label} fwd+bwd", name, median_time(both), fwd_bytes + bwd_bytes,
                        torch_seconds=t_both))


def _bench_layers(rows, x):
    """The targets: the public layers tn.MaxPool2D(2) / tn.AvgPool2D(2), forward
    then backward, against torch's nn modules through autograd."""
    import tinynet as tn
    torch = try_torch()
    for label, layer, torch_module in (("layer MaxPool2D(2)", tn.MaxPool2D(2), "MaxPool2d"),
                                       ("layer AvgPool2D(2)", tn.AvgPool2D(2), "AvgPool2d")):
        dy = np.random.default_rng(1).standard_normal(
            (x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2)).astype(x.dtype)

        def step():
            layer.forward(x)
            layer.backward(dy)

        t_torch = None
        if torch is not None:
            t_torch = _torch_times(torch, getattr(torch.nn, torch_module)(2), x, dy)[2]
        rows.append(Row(label + " fwd+bwd", f"tinynet {tn.backend_name()}", median_time(step),
                        tensor_bytes(x, dy, dy, x), torch_seconds=t_torch))


def bench():
    rows = []
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    _bench_family(rows, "maxpool 2x2/2", MAX_VARIANTS,
                  lambda torch: torch.nn.MaxPool2d(2), x, (2, 2), (2, 2), _max_calls)
    _bench_family(rows, "maxpool 3x3/2", MAX_VARIANTS,
                  lambda torch: torch.nn.MaxPool2d(*OVERLAP), x, *OVERLAP, _max_calls)
    _bench_family(rows, "avgpool 2x2/2", AVG_VARIANTS,
                  lambda torch: torch.nn.AvgPool2d(2), x, (2, 2), (2, 2), _avg_calls)
    _bench_family(rows, "avgpool 3x3/2", AVG_VARIANTS,
                  lambda torch: torch.nn.AvgPool2d(*OVERLAP), x, *OVERLAP, _avg_calls)
    _bench_layers(rows, x)
    return rows


def main(argv=None):
    return lab_main("pool", check, bench, argv)


if __name__ == "__main__":
    main()
