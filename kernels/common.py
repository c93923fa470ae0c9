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
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import numba

__all__ = ["child_env", "median_time", "copy_bandwidth", "try_torch", "Row", "print_rows",
           "lab_main", "tensor_bytes"]


def child_env(**extra):
    """os.environ for a child process that must choose its own threading
    defaults: without the variables that ``import tinynet`` set in this
    process (tinynet.threads.APPLIED), plus ``extra``."""
    applied = {}
    try:
        from tinynet.threads import APPLIED as applied
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


def _parallel_copy(src, dst):
    """dst[:] = src[:] with a numba prange kernel (compiled on first use)."""
    global _copy_kernel
    if _copy_kernel is None:
        from tinynet.backends.cpu.jit import njit_kernel

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


def lab_main(name, check, bench, argv=None):
    """Command line of a lab file: ``--check`` runs every variant against the
    reference; ``--bench`` times them (and torch); ``--json PATH`` saves rows."""
    parser = argparse.ArgumentParser(prog=f"python -m kernels.{name}")
    parser.add_argument("--check", action="store_true", help="check every variant against ref")
    parser.add_argument("--bench", action="store_true", help="time every variant and torch")
    parser.add_argument("--json", default=None, help="also write the bench rows to this file")
    args = parser.parse_args(argv)
    if not (args.check or args.bench):
        args.check = args.bench = True
    if args.check:
        check()
        print(f"{name}: every variant matches the reference")
    if args.bench:
        bandwidth = copy_bandwidth()
        rows = bench()
        print_rows(rows, bandwidth, title=f"kernels.{name}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bandwidth": bandwidth, "rows": [r.as_dict(bandwidth) for r in rows]},
                          f, indent=2)
            print(f"wrote {os.path.abspath(args.json)}")
