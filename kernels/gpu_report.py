"""The one prepared GPU command: every cuda test and GPU bench, into docs/performance-gpu.md.

    python -m kernels.gpu_report              # on a GPU: about 5 minutes on one H200
    python -m kernels.gpu_report --ptx-only   # no GPU: only the PTX/SASS table
    python -m kernels.gpu_report --no-write   # print, leave the doc alone

In order, each with its command beside its result in the doc:

1. ``python -m pytest -q tests/test_cuda_*.py`` on the GPU (every cuda op
   against the reference with real kernels and warp shuffles);
2. the PTX/SASS table of every kernel (``python -m kernels.ptx``);
3. the benches of kernels/gpu_launch.py, gpu_norm.py, gpu_gemm.py and
   gpu_step.py (each after its --check), against the issue's targets: each
   normalization forward+backward on (256, 64, 56, 56) at >= 70% of the
   device copy bandwidth; the CNN step at batch 512 no slower than torch and
   at batch 64 within 1.5x; one MNIST epoch at batch 64 under 5 s.

The generated text replaces what lies between the ``gpu-report`` and
``ptx`` markers of docs/performance-gpu.md.
"""
import argparse
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

from kernels import ptx
from kernels.common import device_copy_bandwidth, format_gpu_rows, small_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "performance-gpu.md")
LABS = ("gpu_launch", "gpu_norm", "gpu_gemm", "gpu_step")
MARKERS = {"gpu-report": ("<!-- gpu-report:start -->", "<!-- gpu-report:end -->"),
           "ptx": ("<!-- ptx:start -->", "<!-- ptx:end -->")}


def _run_tests():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + sorted(
        os.path.join("tests", f) for f in os.listdir(os.path.join(ROOT, "tests"))
        if f.startswith("test_cuda_") and f.endswith(".py"))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, lines[-1] if lines else proc.stderr.strip()[-500:]


def ptx_section():
    ptxas = ptx.find_ptxas()
    rows = ptx.kernel_resources(ptxas)
    bad = ptx.problems(rows)
    verdict = "no spills, shared memory within a block" if not bad else \
        "PROBLEMS: " + "; ".join(bad)
    lines = [f"`python -m kernels.ptx` (ptxas {ptx.ptxas_version(ptxas)}, numba-cuda "
             f"{importlib.metadata.version('numba-cuda')}): {len(rows)} kernel builds, "
             f"{verdict}.",
             "", "```", ptx.format_table(rows), "```"]
    return "\n".join(lines), not bad


def gpu_section():
    from numba import cuda
    out = [f"Run of `python -m kernels.gpu_report` on {cuda.get_current_device().name.decode()} "
           f"(cc {'.'.join(map(str, cuda.get_current_device().compute_capability))}), "
           f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}.", ""]
    t0 = time.perf_counter()
    rc, summary = _run_tests()
    out += [f"- `python -m pytest -q tests/test_cuda_*.py` on the GPU: {summary} "
            f"(exit {rc}).", ""]
    bandwidth = device_copy_bandwidth()
    out.append(f"Device copy bandwidth (CuPy copy of 1 GiB, read + write): "
               f"{bandwidth / 1e9:.0f} GB/s.")
    for name in LABS:
        lab = importlib.import_module(f"kernels.{name}")
        with small_blocks():
            lab.check()
        rows = lab.bench()
        out += ["", f"`python -m kernels.{name} --bench`:", "",
                format_gpu_rows(rows, bandwidth, title=f"kernels.{name}")]
    out += ["", f"The whole report took {time.perf_counter() - t0:.0f} s."]
    return "\n".join(out), rc == 0


def replace_between(text, key, body):
    start, end = MARKERS[key]
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.gpu_report")
    parser.add_argument("--ptx-only", action="store_true", help="only the PTX/SASS table")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    args = parser.parse_args(argv)
    sections, ok = {}, True
    sections["ptx"], ptx_ok = ptx_section()
    ok &= ptx_ok
    if not args.ptx_only:
        from tinynet.backends import cuda
        cuda.check_available()
        sections["gpu-report"], gpu_ok = gpu_section()
        ok &= gpu_ok
    for body in sections.values():
        print(body + "\n")
    if not args.no_write:
        with open(DOC) as f:
            text = f.read()
        for key, body in sections.items():
            text = replace_between(text, key, body)
        with open(DOC, "w") as f:
            f.write(text)
        print(f"wrote {DOC}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
