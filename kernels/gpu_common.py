"""Shared tools of the GPU lab (``kernels/gpu_*.py``): CUDA-event timing, the
device copy bandwidth, torch CUDA, tables.

Every GPU lab file runs ``--check`` (each variant against tinynet.backends.ref,
on tiny shapes; it also runs under the CUDA simulator, NUMBA_ENABLE_CUDASIM=1)
and ``--bench`` (a GPU only) and measures the same way:

- time: the median over ``repeat`` runs, each timed by a pair of CUDA events
  around the call on the current stream, after ``warmup`` untimed calls;
- copy bandwidth: bytes read plus bytes written per second of a device-to-device
  copy of 1 GiB (CuPy), measured in the same run; "% copy" of a row is its
  minimum bytes moved per second over that bandwidth;
- torch: the same op through torch's CUDA API, float32, when torch with CUDA
  is importable; ratio = tinynet time / torch time (below 1 is faster).
"""
import argparse
import contextlib
import json
import os
import statistics

import numpy as np

from kernels.common import Row

__all__ = ["GpuRow", "event_time", "torch_time", "device_copy_bandwidth", "torch_cuda",
           "format_gpu_rows", "print_gpu_rows", "assert_close", "gpu_lab_main", "sync",
           "small_blocks"]


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
    from tinynet.backends.cuda import device
    saved = device.BLOCK, device.BLOCK_REDUCE, device.MAX_BLOCKS
    device.BLOCK, device.MAX_BLOCKS = 8, 3
    device.BLOCK_REDUCE = 4 if device.SIMULATOR else 64
    try:
        yield device
    finally:
        device.BLOCK, device.BLOCK_REDUCE, device.MAX_BLOCKS = saved


def gpu_lab_main(name, check, bench, argv=None):
    """Command line of a GPU lab file: ``--check`` (simulator or GPU), ``--bench``
    (GPU), ``--json PATH`` to save the bench rows."""
    parser = argparse.ArgumentParser(prog=f"python -m kernels.{name}")
    parser.add_argument("--check", action="store_true", help="check every variant against ref")
    parser.add_argument("--bench", action="store_true", help="time every variant and torch")
    parser.add_argument("--json", default=None, help="also write the bench rows to this file")
    args = parser.parse_args(argv)
    if not (args.check or args.bench):
        args.check = args.bench = True
    from tinynet.backends import cuda
    cuda.check_available()
    if args.check:
        with small_blocks():
            check()
        print(f"{name}: every variant matches the reference")
    if args.bench:
        if cuda.device.SIMULATOR:
            raise SystemExit(f"kernels.{name} --bench needs a GPU, not the simulator")
        bandwidth = device_copy_bandwidth()
        rows = bench()
        print_gpu_rows(rows, bandwidth, title=f"kernels.{name}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bandwidth": bandwidth, "rows": [r.as_dict(bandwidth) for r in rows]},
                          f, indent=2)
            print(f"wrote {os.path.abspath(args.json)}")
        return rows, bandwidth
    return None, None
