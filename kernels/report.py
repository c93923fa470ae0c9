"""Regenerate docs/performance.md's tables and docs/performance.png.

Runs every lab bench in this process (one machine state, one run), then

- runs ``kernels.system.instep`` (each layer inside the step and alone, without
  and with torch imported first) for batch norm and no norm, and
  ``kernels.system.latency`` (first-step latency, compile time per kernel);
- rewrites the target table (the rows that time a public layer, or the whole
  training step, next to torch) between the ``report:start`` /
  ``report:end`` markers of docs/performance.md, and every lab's full
  variant table between ``lab:start`` / ``lab:end``;
- runs the MNIST speedrun recipe over 10 seeds, tinynet against torch in new
  processes (``kernels.speedrun``; ``--speedrun-seeds N``, 0 to leave it
  out; MNIST from $TINYNET_DATA_DIR), and writes its table between
  ``speedrun:start`` / ``speedrun:end``;
- draws docs/performance.png: a bar chart of tinynet / torch per row
  (below 1 is faster than torch).

    python -m kernels.report            # about 10 minutes on 2 cores
    python -m kernels.report --no-write # print only

The GPU report, ``python -m kernels.report --device cuda``, is the one
prepared command for a machine with a GPU; it writes
docs/performance-gpu.md:

    python -m kernels.report --device cuda              # on a GPU: every GPU section below
    python -m kernels.report --device cuda --ptx-only   # no GPU needed: only the PTX/SASS table
    python -m kernels.report --device cuda --no-write   # print each section, leave the doc alone
    python -m kernels.report --device cuda --section-timeout 600   # each section's time limit, s
    python -m kernels.report --device cuda --out FILE   # write FILE instead (made if missing)
    python -m kernels.report --device cuda --only tests,step   # these sections, in this order
    python -m kernels.report --device cuda --test-workers 4    # pytest-xdist processes for tests
    python -m kernels.report --device cuda --logs DIR   # each section's whole output: DIR/NAME.log
    python -m kernels.report --device cuda --launchers numba,cupy  # tests and timings per launcher

Each section runs in a process of its own (``python -m kernels.report
--device cuda --section NAME``), which is killed, with every process it
started, when it runs past ``--section-timeout`` seconds (default 300). The
doc is rewritten (a temp file, then a rename) as soon as each section
finishes, with every section finished so far, so a run cut short keeps
them; a section that fails or runs out of time is written too, with its exit
status and the end of its output, and the report goes on with the next one.
On a GPU, in order, each with its command beside its result in the doc:

1. ``device``: the GPU, its compute capability, the date and the versions;
2. ``tests``: ``python -m pytest -q -rfE -m cuda`` on the GPU (every cuda op
   against the reference with real kernels and warp shuffles): its whole
   summary, a line for each failure and error, and the counts line;
3. ``bandwidth``: the device copy bandwidth (a CuPy copy of 1 GiB), which the
   tables below are measured against;
4. ``gpu_launch``, ``gpu_norm``, ``gpu_gemm``, ``step``: the benches of
   kernels/gpu_launch.py, gpu_norm.py, gpu_gemm.py and ``kernels.step
   --device cuda`` (each after its --check, with small blocks), against the
   issue's targets: each normalization forward+backward on (256, 64, 56, 56)
   at >= 70% of the device copy bandwidth; the CNN step at batch 512 no
   slower than torch and at batch 64 within 1.5x; one MNIST epoch at batch 64
   under 5 s;
5. ``speedrun``: the MNIST speedrun recipe (``python -m kernels.speedrun
   --device cuda --seeds 3``), tinynet's cuda backend against torch CUDA,
   each in its own processes: under 2 s, and ahead of torch.

These replace what lies between the ``gpu-report`` markers of the doc. The
PTX/SASS table of every kernel (``ptx``: ``python -m kernels.ptx``, which
replaces what lies between the ``ptx`` markers) is a check for a machine
without a GPU: it runs with ``--ptx-only``, and without a GPU, where the
command then exits 1 saying why no GPU section ran; on a GPU it is skipped.
"""
import argparse
import contextlib
import importlib
import importlib.metadata
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numba
import tinynet.process
from tinynet.backends import cuda_device

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
           "ptx": ("<!-- ptx:start -->", "<!-- ptx:end -->"),
           "speedrun": ("<!-- speedrun:start -->", "<!-- speedrun:end -->")}


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


def speedrun_table(seeds):
    """The MNIST speedrun recipe over ``seeds`` seeds, tinynet against torch, each in
    new processes (kernels.speedrun; MNIST from $TINYNET_DATA_DIR): its Markdown
    table with a header line naming the command, the date, the CPU and the load."""
    from kernels import speedrun
    load = os.getloadavg()[0]
    rows = speedrun.bench(seeds, torch=speedrun.have_torch())
    head = (f"Measured by `python -m kernels.report` (`python -m kernels.speedrun --seeds "
            f"{seeds}`) on {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.2f} at the "
            f"start and {os.getloadavg()[0]:.2f} at the end, CPU {cpu_model()}, "
            f"{numba.get_num_threads()} threads each; train time in seconds, the loop over the "
            "epoch's 235 steps; test accuracy on the 10,000 test images; ratio = tinynet / torch.")
    return head + "\n\n" + speedrun.markdown(rows, speedrun.summary(rows))


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


# Seconds a GPU report section may run before it is killed (--section-timeout).
SECTION_TIMEOUT = 300
# Lines (and at most characters) of a failed section's output that the doc keeps.
OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_CHARS = 6000
# The GPU labs: section name -> the command its tables are the result of.
GPU_LAB_COMMANDS = {"gpu_launch": "kernels.gpu_launch", "gpu_norm": "kernels.gpu_norm",
                    "gpu_gemm": "kernels.gpu_gemm", "step": "kernels.step --device cuda"}
TEST_COMMAND = ["-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "cuda"]
# pytest-xdist processes for the tests section (--test-workers): most of its time
# is numba-cuda compiling kernels on the host, one at a time per process.
TEST_WORKERS = max(1, min(8, (os.cpu_count() or 1) // 2))
# A new doc (--out to a file that does not exist yet): the markers the report fills.
NEW_GPU_DOC = ("# GPU performance\n\n## GPU results\n\n<!-- gpu-report:start -->\n"
               "<!-- gpu-report:end -->\n\n## Kernel resources\n\n<!-- ptx:start -->\n"
               "<!-- ptx:end -->\n")


class Section(NamedTuple):
    """One part of the GPU report, run in a process of its own.

    ``argv`` is its command line (``--section-out PATH`` is appended: the
    process writes its result there as JSON: {"body": markdown, "ok": bool,
    "data": dict}); ``title`` is the command whose result it is, the heading
    of its text in the doc; ``marker`` is the MARKERS key of the doc region
    it goes to; ``env`` is added to its process's environment."""
    name: str
    title: str
    marker: str
    argv: list
    env: dict = {}


def device_name(gpu):
    """The name of a numba.cuda device as str: numba-cuda 0.30 gives a str,
    older versions bytes."""
    name = gpu.name
    return name.decode() if isinstance(name, bytes) else str(name)


def _version(package):
    """The installed version of ``package``, or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _report_data():
    """What the sections before this one reported (``Section`` "data"), e.g. the
    device copy bandwidth; {} in a section run on its own."""
    return json.loads(os.environ.get("TINYNET_REPORT_DATA") or "{}")


def pytest_summary(output):
    """The summary at the end of a ``pytest -q -rfE`` run's ``output``: the lines of
    its short test summary (one for each failure and error) and the counts line;
    without a short summary (nothing failed), the last line."""
    lines = output.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if "short test summary info" in lines[i]:
            return "\n".join(line for line in lines[i + 1:] if line.strip())
    return lines[-1] if lines else "(no output)"


def ptx_section():
    """The PTX/SASS table of every kernel (no GPU needed): (body, ok, data)."""
    ptxas = ptx.find_ptxas()
    rows = ptx.kernel_resources(ptxas)
    bad = ptx.problems(rows)
    verdict = "no spills, shared memory within a block" if not bad else \
        "PROBLEMS: " + "; ".join(bad)
    lines = [f"`python -m kernels.ptx` (ptxas {ptx.ptxas_version(ptxas)}, numba-cuda "
             f"{_version('numba-cuda')}): {len(rows)} kernel builds, {verdict}.",
             "", "```", ptx.format_table(rows), "```"]
    return "\n".join(lines), not bad, {}


def device_section():
    """The GPU, its compute capability, the date and the versions: (body, ok, data)."""
    import cupy
    from numba import cuda
    gpu = cuda.get_current_device()
    body = (f"Run of `python -m kernels.report --device cuda` on {device_name(gpu)} "
            f"(cc {'.'.join(map(str, gpu.compute_capability))}), {time.strftime('%Y-%m-%d')}, "
            f"Python {platform.python_version()}, numba-cuda {_version('numba-cuda')}, "
            f"CuPy {cupy.__version__}; kernels launched by {cuda_device.LAUNCHER}'s launcher "
            f"(TINYNET_CUDA_LAUNCHER).")
    return body, True, {}


def test_command(workers):
    """The tests section's pytest arguments: TEST_COMMAND, spread over ``workers``
    pytest-xdist processes when more than one."""
    return TEST_COMMAND + (["-n", str(workers)] if workers > 1 else [])


def tests_section(workers=1):
    """``pytest -q -rfE -m cuda [-n workers]``: its exit status and whole summary:
    (body, ok, data).

    pytest's output is copied to this process's stdout as it comes, so a run
    killed at the time limit still shows how far it got."""
    proc = subprocess.Popen([sys.executable] + test_command(workers), cwd=ROOT,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    rc = proc.wait()
    body = "\n".join([f"Exit {rc}; the summary:", "", "```", pytest_summary("".join(lines)),
                      "```"])
    return body, rc == 0, {}


def bandwidth_section():
    """The device copy bandwidth: (body, ok, {"bandwidth": bytes/s})."""
    bandwidth = device_copy_bandwidth()
    body = (f"Device copy bandwidth (CuPy copy of 1 GiB, read + write): "
            f"{bandwidth / 1e9:.0f} GB/s.")
    return body, True, {"bandwidth": bandwidth}


def lab_section(name):
    """One GPU lab, ``name`` a key of GPU_LAB_COMMANDS: its --check with small blocks
    (an exception fails the section), then its bench as a table: (body, ok, data)."""
    if name == "step":
        from kernels import step
        check, bench = step.gpu_check, step.gpu_bench
    else:
        module = importlib.import_module(f"kernels.{name}")
        check, bench = module.check, module.bench
    bandwidth = _report_data().get("bandwidth") or device_copy_bandwidth()
    with small_blocks():
        check()
    rows = bench()
    return format_gpu_rows(rows, bandwidth, title=GPU_LAB_COMMANDS[name]), True, {}


# The GPU speedrun: seeds (a new process per framework and seed) and the target.
SPEEDRUN_SEEDS = 3
SPEEDRUN_TARGET_S = 2.0


def speedrun_section():
    """The MNIST speedrun recipe on the GPU, tinynet's cuda backend against torch
    CUDA, each in its own processes (kernels.speedrun; MNIST from
    $TINYNET_DATA_DIR): (body, ok, data). ok is whether every run finished;
    the verdict against the target (under 2 s, ahead of torch) is in the text."""
    from kernels import speedrun
    torch = speedrun.have_torch()
    rows = speedrun.bench(SPEEDRUN_SEEDS, torch=torch, device="cuda")
    summary = speedrun.summary(rows)
    t = summary["tinynet"]["median_train_s"]
    verdict = (f"tinynet's median train time {t:.2f} s against the target "
               f"{SPEEDRUN_TARGET_S:g} s: {'met' if t < SPEEDRUN_TARGET_S else 'missed'}")
    if "ratio" in summary:
        verdict += (f"; {summary['ratio']:.2f}x torch CUDA's "
                    f"({'ahead' if summary['ratio'] < 1 else 'behind'})")
    body = "\n".join([speedrun.markdown(rows, summary), "", verdict + "."])
    return body, True, {}


SECTION_FUNCTIONS = {"ptx": ptx_section, "device": device_section, "tests": tests_section,
                     "bandwidth": bandwidth_section, "speedrun": speedrun_section}
SECTION_FUNCTIONS.update({name: (lambda name=name: lab_section(name))
                          for name in GPU_LAB_COMMANDS})
# The GPU report's sections in their default order (--only picks and orders them).
GPU_SECTION_NAMES = ("device", "tests", "bandwidth", *GPU_LAB_COMMANDS, "speedrun")


# The sections that run once per launcher with --launchers (the others run once).
PER_LAUNCHER = ("tests", "step", "speedrun", "gpu_norm")


def gpu_sections(gpu, test_workers=TEST_WORKERS, only=None, launchers=None):
    """The sections of the GPU report: on a GPU (``gpu``) the device, the tests (over
    ``test_workers`` processes), the bandwidth and the labs; without one only the
    PTX/SASS table (a CPU-only check). ``only`` (section names) keeps those, in
    its order. With ``launchers`` (names of TINYNET_CUDA_LAUNCHER values) each
    PER_LAUNCHER section runs once per launcher, in its environment, its
    title naming it."""
    def child(name, *extra):
        return [sys.executable, "-m", "kernels.report", "--device", "cuda", "--section",
                name, *extra]
    if not gpu:
        return [Section("ptx", "`python -m kernels.ptx`", "ptx", child("ptx"))]
    sections = [Section("device", "The machine", "gpu-report", child("device")),
                Section("tests", f"`python {' '.join(test_command(test_workers))}`",
                        "gpu-report", child("tests", "--test-workers", str(test_workers))),
                Section("bandwidth", "Device copy bandwidth", "gpu-report", child("bandwidth"))]
    for name, command in GPU_LAB_COMMANDS.items():
        sections.append(Section(name, f"`python -m {command} --bench` (after its --check)",
                                "gpu-report", child(name)))
    sections.append(Section("speedrun", "`python -m kernels.speedrun --device cuda --seeds "
                            f"{SPEEDRUN_SEEDS}`", "gpu-report", child("speedrun")))
    if only is not None:
        by_name = {s.name: s for s in sections}
        sections = [by_name[name] for name in only]
    if not launchers:
        return sections
    out = []
    for s in sections:
        if s.name not in PER_LAUNCHER:
            out.append(s)
            continue
        out += [s._replace(title=f"{s.title}, {launcher}'s launcher",
                           env={"TINYNET_CUDA_LAUNCHER": launcher}) for launcher in launchers]
    return out


def _tail(output):
    """The end of a section's output: its last OUTPUT_TAIL_LINES lines, at most
    OUTPUT_TAIL_CHARS characters."""
    lines = output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:]
    return "\n".join(lines)[-OUTPUT_TAIL_CHARS:] or "(no output)"


def run_section(section, timeout, data=None, logs=None):
    """Run ``section`` in a new process (and process group), killed with everything
    it started after ``timeout`` seconds.

    ``data`` (what earlier sections reported) reaches it as $TINYNET_REPORT_DATA.
    With ``logs`` (a folder) its whole output is kept there as NAME.log
    (NAME-VALUE.log for a section with ``env``, e.g. tests-cupy.log).
    Returns (text, ok, data): its markdown with its heading, whether it
    succeeded, and what it reported; a failed or timed-out section gives
    ok=False and its exit status and the end of its output as its text.
    """
    with tempfile.TemporaryDirectory(prefix="tinynet-report-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        output_path = os.path.join(tmp, "output.txt")
        env = dict(os.environ, **section.env, TINYNET_REPORT_DATA=json.dumps(data or {}))
        start = time.monotonic()
        timed_out = False
        with open(output_path, "w") as output_file:
            proc = subprocess.Popen(list(section.argv) + ["--section-out", result_path],
                                    cwd=ROOT, env=env, stdout=output_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                # The whole process group: a section's own children (pytest) too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.monotonic() - start
        with open(output_path, errors="replace") as f:
            output = f.read()
        if logs is not None:
            os.makedirs(logs, exist_ok=True)
            suffix = "".join(f"-{value}" for value in section.env.values())
            with open(os.path.join(logs, f"{section.name}{suffix}.log"), "w") as f:
                f.write(output)
        result = None
        if not timed_out and proc.returncode == 0:
            with contextlib.suppress(OSError, ValueError):
                with open(result_path) as f:
                    result = json.load(f)
    heading = f"### {section.title}"
    if timed_out:
        body = (f"TIMED OUT: killed after {timeout:g} s (--section-timeout); the end of its "
                f"output:\n\n```\n{_tail(output)}\n```")
        return f"{heading} (timed out)\n\n{body}", False, {}
    if result is None:
        why = (f"exit {proc.returncode}" if proc.returncode else
               "exit 0 but no result written")
        body = f"FAILED ({why}); the end of its output:\n\n```\n{_tail(output)}\n```"
        return f"{heading} (failed, {seconds:.0f} s)\n\n{body}", False, {}
    return (f"{heading} ({seconds:.0f} s)\n\n{result['body']}", bool(result.get("ok")),
            result.get("data") or {})


def prepare_doc(path, markers):
    """Check that the doc at ``path`` has the start and end of each of ``markers``
    (MARKERS keys), or create it with them (NEW_GPU_DOC) when it does not exist.

    Raises ValueError naming the file and the missing marker, before any section runs.
    """
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(NEW_GPU_DOC)
    with open(path) as f:
        text = f.read()
    for key in markers:
        for marker in MARKERS[key]:
            if marker not in text:
                raise ValueError(f"prepare_doc: the doc {path} (--out) has no {marker} "
                                 f"line; expected the {key} markers of "
                                 f"docs/performance-gpu.md")


def write_doc(path, texts):
    """Rewrite the doc at ``path`` atomically (a temp file, then a rename), with
    ``texts[key]`` (a MARKERS key -> markdown) between each marker pair of ``texts``."""
    with open(path) as f:
        text = f.read()
    for key, body in texts.items():
        text = replace_between(text, key, body)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_sections(sections, doc=None, timeout=SECTION_TIMEOUT, echo=print, logs=None):
    """Run ``sections`` in order, each in a process of its own (``run_section``, which
    keeps each one's whole output in the folder ``logs`` when given),
    and after each one ``echo`` its text and rewrite ``doc`` (a path; None writes
    nothing) with every section finished so far, each marker region holding its
    sections' texts and, while some are still to run, a line that names them.
    Returns True when every section succeeded."""
    texts, data, ok = {}, {}, True
    for i, section in enumerate(sections):
        text, section_ok, section_data = run_section(section, timeout, data, logs)
        data.update(section_data)
        ok &= section_ok
        texts.setdefault(section.marker, []).append(text)
        echo(text + "\n")
        if doc is None:
            continue
        regions = {key: "\n\n".join(parts) for key, parts in texts.items()}
        pending = [s.name for s in sections[i + 1:]]
        if pending:
            regions[section.marker] += (f"\n\n(Not run yet when this was written: "
                                        f"{', '.join(pending)}.)")
        write_doc(doc, regions)
    return ok


def gpu_missing():
    """None when the cuda backend runs on a GPU here, else why not (the CUDA
    simulator is no GPU for a report)."""
    from tinynet.backends import cuda_device
    if cuda_device.SIMULATOR:
        return "NUMBA_ENABLE_CUDASIM=1 is set: the CUDA simulator is not a GPU"
    try:
        cuda_device.check_available()
    except RuntimeError as e:
        return str(e)
    return None


def gpu_main(args):
    """docs/performance-gpu.md (or --out): on a GPU the cuda tests and the GPU labs,
    without one (or with --ptx-only) the PTX table. Returns the exit status."""
    missing = None if args.ptx_only else gpu_missing()
    gpu = not args.ptx_only and missing is None
    sections = gpu_sections(gpu, args.test_workers, args.only if gpu else None,
                            args.launchers if gpu else None)
    doc = None if args.no_write else args.out
    if doc is not None:
        try:
            prepare_doc(doc, {s.marker for s in sections})
        except (OSError, ValueError) as e:
            print(f"kernels.report: {e}", file=sys.stderr)
            return 2
    ok = run_sections(sections, doc, args.section_timeout, logs=args.logs)
    if doc is not None:
        print(f"wrote {doc}")
    if missing is not None:
        print(f"kernels.report: no GPU section ran, only the PTX/SASS table: {missing}",
              file=sys.stderr)
        return 1
    return 0 if ok else 1


def section_main(name, out=None, test_workers=1):
    """Run the section ``name`` in this process (a child of ``run_section``): write its
    result as JSON to ``out``, or print its body without ``out``. Returns 0."""
    body, ok, data = (tests_section(test_workers) if name == "tests" else
                      SECTION_FUNCTIONS[name]())
    if out is None:
        print(body)
    else:
        with open(out, "w") as f:
            json.dump({"body": body, "ok": bool(ok), "data": data}, f)
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.report")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--speedrun-seeds", type=int, default=10, metavar="N",
                        help="the cpu report's MNIST speedrun table over seeds 0..N-1 "
                             "(0: leave it out)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU report (docs/performance-gpu.md)")
    parser.add_argument("--ptx-only", action="store_true",
                        help="with --device cuda: only the PTX/SASS table (no GPU needed)")
    parser.add_argument("--section-timeout", type=float, default=SECTION_TIMEOUT,
                        metavar="SECONDS",
                        help="with --device cuda: kill a section (and its children) after "
                             "this many seconds, record it as timed out, and go on")
    parser.add_argument("--out", default=GPU_DOC, metavar="FILE",
                        help="with --device cuda: the markdown file to rewrite after each "
                             "section (made, with its markers, when it does not exist)")
    parser.add_argument("--section", choices=sorted(SECTION_FUNCTIONS),
                        help="with --device cuda: run this one section in this process "
                             "(how the report runs each section)")
    parser.add_argument("--section-out", metavar="FILE",
                        help="with --section: write its result there as JSON")
    parser.add_argument("--logs", metavar="DIR",
                        help="with --device cuda: keep each section's whole output as "
                             "DIR/NAME.log (the doc keeps only a failure's end)")
    parser.add_argument("--only", metavar="NAME,...", type=lambda s: s.split(","),
                        help="with --device cuda on a GPU: run only these sections, in this "
                             f"order (of {', '.join(GPU_SECTION_NAMES)})")
    parser.add_argument("--launchers", metavar="NAME,...", type=lambda s: s.split(","),
                        help="with --device cuda on a GPU: run the tests, step, speedrun and "
                             "gpu_norm sections once per launcher (TINYNET_CUDA_LAUNCHER: "
                             "numba, cupy)")
    parser.add_argument("--test-workers", type=int, default=TEST_WORKERS, metavar="N",
                        help="with --device cuda: pytest-xdist processes for the tests "
                             f"section (default {TEST_WORKERS}, half the cores, at most 8)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only or () if name not in GPU_SECTION_NAMES]
    if unknown:
        parser.error(f"--only: no GPU section {', '.join(map(repr, unknown))}; expected "
                     f"names of {', '.join(GPU_SECTION_NAMES)}")
    bad = [name for name in args.launchers or () if name not in cuda_device.LAUNCHERS]
    if bad:
        parser.error(f"--launchers: no launcher {', '.join(map(repr, bad))}; expected "
                     f"numba or cupy")
    if args.test_workers < 1:
        parser.error(f"--test-workers must be at least 1, got {args.test_workers}")
    if args.section_timeout <= 0:
        parser.error(f"--section-timeout must be a positive number of seconds, got "
                     f"{args.section_timeout:g}")
    return args


def main(argv=None):
    args = parse_args(argv)
    tinynet.process.apply()  # the settings a training script's first cpu op makes
    if args.section is not None:
        return section_main(args.section, args.section_out, args.test_workers)
    if args.device == "cuda":
        return gpu_main(args)
    load_start = os.getloadavg()[0]
    bandwidth, rows, tables, step = collect()
    table = markdown(bandwidth, rows, step, (load_start, os.getloadavg()[0]))
    speedrun = speedrun_table(args.speedrun_seeds) if args.speedrun_seeds else None
    print(tables)
    print(table)
    if speedrun:
        print(speedrun)
    if args.no_write:
        return
    doc = os.path.join(DOC, "performance.md")
    with open(doc) as f:
        text = f.read()
    text = replace_between(text, "report", table)
    text = replace_between(text, "lab", f"```\n{tables.strip()}\n```")
    if speedrun:
        text = replace_between(text, "speedrun", speedrun)
    with open(doc, "w") as f:
        f.write(text)
    chart(rows, step, os.path.join(DOC, "performance.png"))
    print(f"wrote {doc} and {os.path.join(DOC, 'performance.png')}")


if __name__ == "__main__":
    sys.exit(main())
