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
"""
import argparse
import contextlib
import importlib
import io
import os
import platform
import time

import numba

from kernels.common import copy_bandwidth, print_rows

LABS = ("norm", "conv", "dense", "pool", "elementwise", "dropout", "optim")
STEP_ROUNDS = 3
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
MARKERS = {"report": ("<!-- report:start -->", "<!-- report:end -->"),
           "lab": ("<!-- lab:start -->", "<!-- lab:end -->")}


def target_rows(lab_rows):
    """Rows that time tinynet's public API and have a torch time beside them."""
    return [r for r in lab_rows
            if "tinynet" in r.variant or r.variant.startswith("tn.optim")
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [r.op for _, r in rows] + [f"CNN step ({s['norm']})" for s in step]
    ratios = [r.seconds / r.torch_seconds for _, r in rows] + [s["ratio"] for s in step]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.2))
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
    plt.close(fig)


def replace_between(text, key, body):
    start, end = MARKERS[key]
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.report")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
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
    main()
