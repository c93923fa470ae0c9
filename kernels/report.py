"""Regenerate docs/performance.md's tables and docs/performance.png.

Runs every lab bench in this process (one machine state, one run), then

- runs ``kernels.system.instep`` (each layer inside the step and alone, without
  and with torch imported first) for batch norm and no norm, and
  ``kernels.system.latency`` (first-step latency, compile time per kernel);
- rewrites the target table (the rows that time a public layer, or the whole
  training step, next to torch) between the ``report:start`` /
  ``report:end`` markers of docs/performance.md, and every lab's full
  variant table between ``lab:start`` / ``lab:end``;
- draws docs/performance.png: a bar chart of tinynet / torch per row
  (below 1 is faster than torch).

    python -m kernels.report            # about 5 minutes on 2 cores
    python -m kernels.report --no-write # print only

The GPU report, ``python -m kernels.report --device cuda``, is the one
prepared command for a machine with a GPU; it writes
docs/performance-gpu.md:

python -m kernels.report --device cuda              # on a GPU: about 5 minutes on one H200
    python -m kernels.report --device cuda --ptx-only   # no GPU: only the PTX/SASS table
    python -m kernels.report --device cuda --no-write   # print, leave the doc alone

In order, each with its command beside its result in the doc:

1. ``python -m pytest -q -m cuda`` on the GPU (every cuda op
   against the reference with real kernels and warp shuffles);
2. the PTX/SASS table of every kernel (``python -m kernels.ptx``);
3. the benches of kernels/gpu_launch.py, gpu_norm.py, gpu_gemm.py and
   ``kernels.step --device cuda`` (each after its --check), against the issue's targets: each
   normalization forward+backward on (256, 64, 56, 56) at >= 70% of the
   device copy bandwidth; the CNN step at batch 512 no slower than torch and
   at batch 64 within 1.5x; one MNIST epoch at batch 64 under 5 s.

The generated text replaces what lies between the ``gpu-report`` and
``ptx`` markers of docs/performance-gpu.md.
"""
import argparse
import contextlib
import importlib
import importlib.metadata
import io
import os
import platform
import subprocess
import sys
import time

import numba
import tinynet.process

from kernels import ptx
from kernels.common import (copy_bandwidth, device_copy_bandwidth, format_gpu_rows,
                            print_rows, small_blocks)

LABS = ("norm", "conv", "dense", "pool", "elementwise", "dropout", "optim")
STEP_ROUNDS = 3
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
ROOT = os.path.dirname(DOC)
GPU_DOC = os.path.join(DOC, "performance-gpu.md")
GPU_LABS = ("gpu_launch", "gpu_norm", "gpu_gemm")
MARKERS = {"report": ("<!-- report:start -->", "<!-- report:end -->"),
           "lab": ("<!-- lab:start -->", "<!-- lab:end -->"),
           "gpu-report": ("<!-- gpu-report:start -->", "<!-- gpu-report:end -->"),
           "ptx": ("<!-- ptx:start -->", "<!-- ptx:end -->")}


def target_rows(lab_rows):
    """Rows that time tinynet's public API (the labs name them "tinynet <backend>",
    "layer, tinynet <backend>" or "tn.optim...") and have a torch time beside them;
    a numbered variant row ("5 tinynet") is the lab's and stays in its table."""
    return [r for r in lab_rows
            if r.variant.startswith(("tinynet ", "layer, tinynet", "tn.optim"))
            if r.torch_seconds]


def collect():
    """(bandwidth, target rows, the labs' full tables as text, step rows)."""
    bandwidth = copy_bandwidth()
    rows, tables = [], io.StringIO()
    for name in LABS:
        module = importlib.import_module(f"kernels.{name}")
        lab_rows = module.bench()
        print_rows(lab_rows, bandwidth, title=f"python -m kernels.{name} --bench", file=tables)
        rows.extend((name, r) for r in target_rows(lab_rows))
    from kernels.system import instep, latency
    settings = ["no torch", "no torch, glibc malloc defaults", "torch first",
                "torch first, workqueue", "torch first, omp"]
    print(f"\npython -m kernels.system.instep --norm batch --rounds 3 --settings "
          f"\"{';'.join(settings[1:])}\"", file=tables)
    instep.print_table(instep.bench("batch", rounds=3, settings=settings), "batch", file=tables)
    print("\npython -m kernels.system.latency", file=tables)
    with contextlib.redirect_stdout(tables):
        latency.main([])
    from kernels.step import bench as step_bench
    step = step_bench(repeat=20, rounds=STEP_ROUNDS)
    return bandwidth, rows, tables.getvalue(), step


def cpu_model():
    """The CPU's model name as lscpu and /proc/cpuinfo give it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(bandwidth, rows, step, load):
    lines = [f"Measured by `python -m kernels.report` on {time.strftime('%Y-%m-%d %H:%M')}, "
             f"load average {load[0]:.2f} at the start and {load[1]:.2f} at the end, "
             f"CPU {cpu_model()}: "
             f"{numba.get_num_threads()} threads, threading layer {numba.threading_layer()}, "
             f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write). "
             "Median times, float32; ratio = tinynet / torch (below 1: tinynet is faster); "
             "x floor = time / (minimum bytes moved / copy bandwidth).",
             "",
             "| lab | op (public API, forward + backward unless noted) | tinynet ms | torch ms | ratio | x floor |",
             "|---|---|---|---|---|---|"]
    for lab, r in rows:
        d = r.as_dict(bandwidth)
        floor = f"{d['time/floor']:.2f}" if "time/floor" in d else ""
        lines.append(f"| {lab} | {r.op} | {d['ms']:.3f} | {d['torch_ms']:.3f} | "
                     f"{d['ratio']:.2f} | {floor} |")
    for s in step:
        lines.append(f"| step | reference CNN step, norm={s['norm']} | {s['tinynet_ms']:.1f} | "
                     f"{s['torch_ms']:.1f} | {s['ratio']:.2f} | |")
        lines.append(f"| step | the same, torch imported first, one process | "
                     f"{s['one_process_tinynet_ms']:.1f} | {s['one_process_torch_ms']:.1f} | "
                     f"{s['one_process_ratio']:.2f} | |")
        lines.append(f"| step | tinynet with torch imported first / tinynet alone (torch column: "
                     f"tinynet alone) | {s['torch_first_ms']:.1f} | {s['tinynet_ms']:.1f} | "
                     f"{s['torch_first_ratio']:.2f} | |")
    lines += ["", "Peak resident memory of each framework's step process (MB, `python -m "
              "kernels.step`; step = what the model and its steps added after the imports):", "",
              "| norm | tinynet peak | tinynet step | torch peak | torch step |",
              "|---|---|---|---|---|"]
    for s in step:
        lines.append(f"| {s['norm']} | {s['tinynet_peak_mb']:.0f} | {s['tinynet_step_mb']:.0f} | "
                     f"{s['torch_peak_mb']:.0f} | {s['torch_step_mb']:.0f} |")
    return "\n".join(lines)


def chart(rows, step, path):
    from tinynet.plots import subplots
    labels = [r.op for _, r in rows] + [f"CNN step ({s['norm']})" for s in step]
    ratios = [r.seconds / r.torch_seconds for _, r in rows] + [s["ratio"] for s in step]
    fig, ax = subplots(figsize=(9, 0.32 * len(labels) + 1.2))
    colors = ["tab:green" if v <= 1 else "tab:red" for v in ratios]
    ax.barh(range(len(labels)), ratios, color=colors)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("time tinynet / time torch (log scale; left of 1 = tinynet faster)")
    ax.set_title("tinynet cpu backend vs PyTorch CPU, float32, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def replace_between(text, key, body):
    start, end = MARKERS[key]
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def _run_tests():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda"]
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


def _gpu_labs():
    """(command, check, bench) of every GPU lab, in the report's order."""
    labs = []
    for name in GPU_LABS:
        module = importlib.import_module(f"kernels.{name}")
        labs.append((f"kernels.{name}", module.check, module.bench))
    from kernels import step
    labs.append(("kernels.step --device cuda", step.gpu_check, step.gpu_bench))
    return labs


def gpu_section():
    from numba import cuda
    gpu = cuda.get_current_device()
    out = [f"Run of `python -m kernels.report --device cuda` on {gpu.name.decode()} "
           f"(cc {'.'.join(map(str, gpu.compute_capability))}), "
           f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}.", ""]
    t0 = time.perf_counter()
    rc, summary = _run_tests()
    out += [f"- `python -m pytest -q -m cuda` on the GPU: {summary} "
            f"(exit {rc}).", ""]
    bandwidth = device_copy_bandwidth()
    out.append(f"Device copy bandwidth (CuPy copy of 1 GiB, read + write): "
               f"{bandwidth / 1e9:.0f} GB/s.")
    for command, check, bench in _gpu_labs():
        with small_blocks():
            check()
        rows = bench()
        out += ["", f"`python -m {command} --bench`:", "",
                format_gpu_rows(rows, bandwidth, title=command)]
    out += ["", f"The whole report took {time.perf_counter() - t0:.0f} s."]
    return "\n".join(out), rc == 0


def gpu_main(args):
    """docs/performance-gpu.md: the PTX table, and on a GPU the cuda tests and GPU labs."""
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
        with open(GPU_DOC) as f:
            text = f.read()
        for key, body in sections.items():
            text = replace_between(text, key, body)
        with open(GPU_DOC, "w") as f:
            f.write(text)
        print(f"wrote {GPU_DOC}")
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.report")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU report (docs/performance-gpu.md)")
    parser.add_argument("--ptx-only", action="store_true",
                        help="with --device cuda: only the PTX/SASS table (no GPU needed)")
    args = parser.parse_args(argv)
    tinynet.process.apply()  # the settings a training script's first cpu op makes
    if args.device == "cuda":
        return gpu_main(args)
    load_start = os.getloadavg()[0]
    bandwidth, rows, tables, step = collect()
    table = markdown(bandwidth, rows, step, (load_start, os.getloadavg()[0]))
    print(tables)
    print(table)
    if args.no_write:
        return
    doc = os.path.join(DOC, "performance.md")
    with open(doc) as f:
        text = f.read()
    text = replace_between(text, "report", table)
    text = replace_between(text, "lab", f"```\n{tables.strip()}\n```")
    with open(doc, "w") as f:
        f.write(text)
    chart(rows, step, os.path.join(DOC, "performance.png"))
    print(f"wrote {doc} and {os.path.join(DOC, 'performance.png')}")


if __name__ == "__main__":
    sys.exit(main())
