"""Shared tools of the kernel lab: timing, the memory floor, torch, tables.

Every lab file (``python -m kernels.<op> --check`` / ``--bench``) uses these, so
all figures are measured the same way:

- time: the median of ``repeat`` timed calls after ``warmup`` untimed ones;
- floor: the minimum bytes an op must move, divided by this machine's copy
  bandwidth, measured in the same run by ``copy_bandwidth()``;
- torch: the same op through torch's public API on the CPU, float32, when torch
  is installed; ratio = tinynet time / torch time (below 1 is faster);
- GEMM floor (labs whose work is GEMMs): the op's FLOPs divided by the best
  sgemm rate measured in the same run (``Row(gemm_rate=...)``); x GEMM
  floor = time / that.

The GPU labs (``kernels/gpu_*.py``, ``lab_main(..., device="cuda")``) measure
the same way on the device: CUDA events instead of wall time (the median of
``repeat`` after ``warmup``), the device copy bandwidth of a 1 GiB CuPy copy
(bytes read plus written) instead of the host's, "% copy" of a row = its
minimum bytes per second over that bandwidth, and torch's CUDA API beside
each row when torch sees a GPU. Their ``--check`` also runs under the CUDA
simulator (NUMBA_ENABLE_CUDASIM=1), with small blocks; ``--bench`` needs a GPU.
"""
import argparse
import contextlib
import json
import os
import statistics
import time

import numpy as np
import numba

import tinynet.process

__all__ = ["child_env", "median_time", "race", "torch_layer_seconds", "copy_bandwidth",
           "try_torch", "Row", "print_rows", "lab_main", "tensor_bytes",
           "GpuRow", "event_time", "torch_time", "device_copy_bandwidth", "torch_cuda",
           "format_gpu_rows", "print_gpu_rows", "assert_close", "sync", "small_blocks"]


def child_env(**extra):
    """os.environ for a child process that must choose its own threading
    defaults: without the variables that ``import tinynet`` set in this
    process (tinynet.process.APPLIED), plus ``extra``."""
    applied = {}
    try:
        from tinynet.process import APPLIED as applied
    except ImportError:
        pass
    env = {k: v for k, v in os.environ.items() if applied.get(k) != v}
    env.update(extra)
    return env


def median_time(fn, warmup=2, repeat=15, min_seconds=0.0):
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def race(fns, rounds=5, repeat=15):
    """Median over ``rounds`` of each fn's median time, name -> seconds; the fns
    take turns each round, so a burst of load from another process hits them alike."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_time(fn, repeat=repeat))
    return {name: statistics.median(t) for name, t in times.items()}


def torch_layer_seconds(torch, module, x, dy, input_grad=True, repeat=21):
    """Median seconds of a torch module's forward + backward(dy) on x (float32 numpy
    arrays), the module's grads cleared each time; ``input_grad`` asks for dx too."""
    xt = torch.from_numpy(x).requires_grad_(input_grad)
    dyt = torch.from_numpy(dy)

    def step():
        module.zero_grad(set_to_none=True)
        xt.grad = None
        module(xt).backward(dyt)
    return median_time(step, repeat=repeat)


def _parallel_copy(src, dst):
    """dst[:] = src[:] with a numba prange kernel (compiled on first use)."""
    global _copy_kernel
    if _copy_kernel is None:
        from tinynet.backends.cpu_jit import njit_kernel

        @njit_kernel(parallel=True)
        def copy(src, dst):
            # Parallel axis: contiguous chunks of the flat array; each
            # iteration writes only its own chunk.
            n = src.size
            chunks = 64
            step = (n + chunks - 1) // chunks
            for c in numba.prange(chunks):
                lo = c * step
                hi = min(n, lo + step)
                dst[lo:hi] = src[lo:hi]
        _copy_kernel = copy
    _copy_kernel(src, dst)


_copy_kernel = None


def copy_bandwidth(nbytes=256 << 20):
    """This machine's copy bandwidth in bytes/s (bytes read + bytes written).

    The best of a single-threaded numpy copy and a parallel numba copy of a
    ``nbytes`` float32 buffer, each the median of several runs.
    """
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    t_numpy = median_time(lambda: np.copyto(dst, src), warmup=1, repeat=7)
    t_numba = median_time(lambda: _parallel_copy(src, dst), warmup=1, repeat=7)
    return 2 * nbytes / min(t_numpy, t_numba)


def tensor_bytes(*arrays_or_shapes, itemsize=4):
    """Total bytes of arrays (or shapes of float32 arrays)."""
    total = 0
    for a in arrays_or_shapes:
        total += a.nbytes if isinstance(a, np.ndarray) else int(np.prod(a)) * itemsize
    return total


def try_torch():
    """torch, with its CPU thread count matched to numba's, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return torch


class Row:
    """One benchmark result: op, variant, seconds, bytes moved (or flops)."""

    def __init__(self, op, variant, seconds, floor_bytes=None, flops=None, torch_seconds=None,
                 gemm_rate=None):
        self.op, self.variant, self.seconds = op, variant, seconds
        self.floor_bytes, self.flops, self.torch_seconds = floor_bytes, flops, torch_seconds
        self.gemm_rate = gemm_rate  # FLOP/s of the best GEMM measured in the same run

    def as_dict(self, bandwidth):
        d = {"op": self.op, "variant": self.variant, "ms": 1e3 * self.seconds}
        if self.floor_bytes:
            d["GB/s"] = self.floor_bytes / self.seconds / 1e9
            d["floor_ms"] = 1e3 * self.floor_bytes / bandwidth
            d["time/floor"] = self.seconds / (self.floor_bytes / bandwidth)
        if self.flops:
            d["GFLOP/s"] = self.flops / self.seconds / 1e9
        if self.torch_seconds:
            d["torch_ms"] = 1e3 * self.torch_seconds
            d["ratio"] = self.seconds / self.torch_seconds
        if self.flops and self.gemm_rate:
            d["gemm_floor_ms"] = 1e3 * self.flops / self.gemm_rate
            d["time/gemm_floor"] = self.seconds * self.gemm_rate / self.flops
        return d


def print_rows(rows, bandwidth, title="", file=None):
    """Print a table of Rows: median ms, GB/s or GFLOP/s, time/floor, torch ms, ratio."""
    wo = max([len(r.op) for r in rows] + [2]) + 2
    wv = max([len(r.variant) for r in rows] + [7]) + 2
    gemm = any(r.gemm_rate and r.flops for r in rows)
    head = (f"{'op':<{wo}}{'variant':<{wv}}{'ms':>9}{'GB/s':>8}{'GFLOP/s':>9}"
            f"{'x floor':>9}{'torch ms':>10}{'ratio':>7}")
    if gemm:
        head += f"{'x GEMM floor':>13}"
    lines = [f"{title}  (copy bandwidth {bandwidth / 1e9:.2f} GB/s, "
             f"{numba.get_num_threads()} threads, threading layer {numba.threading_layer()})",
             head, "-" * len(head)]
    for r in rows:
        d = r.as_dict(bandwidth)

        def f(key, fmt):
            width = int(fmt.split(".")[0])
            return format(d[key], fmt) if key in d else " " * width
        line = (f"{r.op:<{wo}}{r.variant:<{wv}}{f('ms', '9.3f')}{f('GB/s', '8.1f')}"
                f"{f('GFLOP/s', '9.1f')}{f('time/floor', '9.2f')}{f('torch_ms', '10.3f')}"
                f"{f('ratio', '7.2f')}")
        lines.append(line + (f('time/gemm_floor', '13.2f') if gemm else ""))
    print("\n" + "\n".join(lines), file=file)


def lab_main(name, check, bench, argv=None, device="cpu"):
    """Command line of a lab file: ``--check`` runs every variant against the
    reference; ``--bench`` times them (and torch); ``--json PATH`` saves rows.

    ``device="cuda"`` (the GPU labs): ``--check`` runs with small blocks on a
    GPU or under the CUDA simulator, ``--bench`` needs a GPU and reports the
    device copy bandwidth. Returns (rows, bandwidth) of the bench, or
    (None, None).
    """
    parser = argparse.ArgumentParser(prog=f"python -m kernels.{name}")
    parser.add_argument("--check", action="store_true", help="check every variant against ref")
    parser.add_argument("--bench", action="store_true", help="time every variant and torch")
    parser.add_argument("--json", default=None, help="also write the bench rows to this file")
    args = parser.parse_args(argv)
    if not (args.check or args.bench):
        args.check = args.bench = True
    # The lab times tinynet as a training script runs it: with tinynet's process
    # settings (tinynet/process.py) in place before the first kernel, which may
    # be a lab variant that runs before any tinynet op loads the cpu backend.
    tinynet.process.apply()
    gpu = device == "cuda"
    if gpu:
        from tinynet.backends import cuda
        cuda.check_available()
    if args.check:
        with small_blocks() if gpu else contextlib.nullcontext():
            check()
        print(f"{name}: every variant matches the reference")
    if not args.bench:
        return None, None
    if gpu:
        if cuda.device.SIMULATOR:
            raise SystemExit(f"kernels.{name} --bench needs a GPU, not the simulator")
        bandwidth = device_copy_bandwidth()
        rows = bench()
        print_gpu_rows(rows, bandwidth, title=f"kernels.{name}")
    else:
        bandwidth = copy_bandwidth()
        rows = bench()
        print_rows(rows, bandwidth, title=f"kernels.{name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth": bandwidth, "rows": [r.as_dict(bandwidth) for r in rows]},
                      f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return rows, bandwidth


# -- the GPU lab ----------------------------------------------------------------

def sync():
    """Wait for every queued kernel of the default stream."""
    from numba import cuda
    cuda.synchronize()


def event_time(fn, warmup=3, repeat=20):
    """Median seconds of ``fn()`` timed by CUDA events, after ``warmup`` calls."""
    from numba import cuda
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop) * 1e-3)
    return statistics.median(times)


def device_copy_bandwidth(nbytes=1 << 30):
    """Device copy bandwidth in bytes/s (read + write) of a CuPy copy of ``nbytes``."""
    import cupy as cp
    src = cp.ones(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    seconds = event_time(lambda: cp.copyto(dst, src), warmup=2, repeat=10)
    return 2 * nbytes / seconds


def torch_cuda():
    """torch when it is importable and sees a GPU, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def torch_time(torch, fn, warmup=3, repeat=20):
    """Median seconds of ``fn()`` by torch's CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3)
    return statistics.median(times)


class GpuRow(Row):
    """One result as kernels.common.Row (op, variant, seconds, minimum bytes moved
    or flops, torch seconds), with the share of the device copy bandwidth."""

    def as_dict(self, bandwidth):
        d = super().as_dict(bandwidth)
        if "time/floor" in d:
            d["% copy"] = 100 / d["time/floor"]
        return d


def format_gpu_rows(rows, bandwidth, title=""):
    """A Markdown table of GpuRows: ms, GB/s, % of copy bandwidth, GFLOP/s, torch ms, ratio."""
    cols = ["op", "variant", "ms", "GB/s", "% copy", "GFLOP/s", "torch_ms", "ratio"]
    lines = [f"{title} (device copy bandwidth {bandwidth / 1e9:.0f} GB/s)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        d = r.as_dict(bandwidth)
        lines.append("| " + " | ".join(_cell(d, c) for c in cols) + " |")
    return "\n".join(lines)


def _cell(d, col):
    if col not in d:
        return ""
    v = d[col]
    if isinstance(v, str):
        return v
    return f"{v:.3f}" if col.endswith("ms") else f"{v:.2f}" if col == "ratio" else f"{v:.0f}"


def print_gpu_rows(rows, bandwidth, title=""):
    print("\n" + format_gpu_rows(rows, bandwidth, title))


def assert_close(got, want, what, rtol=1e-4, atol=1e-4):
    """A device or host result against the reference, with a message."""
    from tinynet.backends import cuda
    np.testing.assert_allclose(np.asarray(cuda.to_host(got), np.float64),
                               np.asarray(want, np.float64), rtol=rtol, atol=atol, err_msg=what)


@contextlib.contextmanager
def small_blocks():
    """Small blocks and grids for a --check on tiny shapes (and a quick simulator)."""
    from tinynet.backends import cuda_device as device
    with device.launch_sizes(block=8, block_reduce=4 if device.SIMULATOR else 64, max_blocks=3):
        yield device


def torch_twin(torch, model, sample_shape):
    """A torch module computing what the tinynet ``model`` computes, with its weights.

    Built layer by layer from the layers' configs (``get_config``); a sample of
    ``sample_shape`` (one input, e.g. (1, 28, 28)) goes through the model on
    the ref backend to give each layer its input rank (BatchNorm 1d or 2d).
    Module attributes follow tinynet's keys (Residual: ``block``,
    ``shortcut``), so the twin loads ``model.state_dict()`` strictly.
    """
    import tinynet as tn
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block = block
            if shortcut is not None:
                self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + (self.shortcut(x) if hasattr(self, "shortcut") else x)

    class GlobalAvgPool(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    def convert(layer, x):
        name, c = type(layer).__name__, layer.get_config()
        if name == "Sequential":
            modules = []
            for sub in layer.layers:
                module, x = convert(sub, x)
                modules.append(module)
            return nn.Sequential(*modules), x
        if name == "Residual":
            block, y = convert(layer.block, x)
            shortcut = None if layer.shortcut is None else convert(layer.shortcut, x)[0]
            return Residual(block, shortcut), y
        y = layer.forward(x)
        simple = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU,
                  "Flatten": nn.Flatten, "GlobalAvgPool2D": GlobalAvgPool}
        if name in simple:
            return simple[name](), y
        make = {
            "Conv2D": lambda: nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"],
                                        c["stride"], c["padding"], bias=c["bias"],
                                        groups=c.get("groups", 1)),
            "Dense": lambda: nn.Linear(c["in_features"], c["out_features"], bias=c["bias"]),
            "BatchNorm": lambda: (nn.BatchNorm2d if x.ndim == 4 else nn.BatchNorm1d)(
                c["num_features"], eps=c["eps"], momentum=c["momentum"], affine=c["affine"],
                track_running_stats=c["track_running_stats"]),
            "GroupNorm": lambda: nn.GroupNorm(c["num_groups"], c["num_channels"], eps=c["eps"],
                                              affine=c["affine"]),
            "LayerNorm": lambda: nn.LayerNorm(c["normalized_shape"], eps=c["eps"],
                                              elementwise_affine=c["elementwise_affine"],
                                              bias=c["bias"]),
            "InstanceNorm": lambda: nn.InstanceNorm2d(
                c["num_features"], eps=c["eps"], momentum=c["momentum"], affine=c["affine"],
                track_running_stats=c["track_running_stats"]),
            "LeakyReLU": lambda: nn.LeakyReLU(c["negative_slope"]),
            "MaxPool2D": lambda: nn.MaxPool2d(c["kernel_size"], c["stride"]),
            "AvgPool2D": lambda: nn.AvgPool2d(c["kernel_size"], c["stride"]),
            "Dropout": lambda: nn.Dropout(c["p"]),
        }
        if name not in make:
            raise NotImplementedError(f"torch_twin: no torch module for {name}")
        return make[name](), y

    was_training = model.training
    model.eval()  # the shape walk must not move the running statistics
    with tn.use_backend("ref"):
        twin, _ = convert(model, np.zeros((2,) + tuple(sample_shape), dtype=model.dtype))
    model.train(was_training)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin
