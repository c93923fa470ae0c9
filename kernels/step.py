"""The whole training step of a zoo model, tinynet against torch.

By default the reference CNN (tinynet.zoo.build_cnn) at batch 64, float32:
conv32-norm-relu-pool, conv64-norm-relu-pool, dense128-relu, dropout, dense10,
for each of the four normalizations; ``--model resnet20`` (any zoo model)
times that model instead, against its torch twin built layer by layer from
its config (kernels.common.torch_twin), with tinynet's initial weights. One step is the same explicit loop in
both frameworks: forward, softmax cross-entropy, zero_grad, backward, Adam
step. The image batch needs no gradient in either.

    python -m kernels.step [--model cnn] [--repeat 20] [--rounds 3] [--json PATH]
    python -m kernels.step --profile [--model resnet20] [--norm batch] [--repeat 10]

prints, for each normalization and for none, the median ms per step, the
tinynet/torch ratio and the implied time per MNIST epoch (938 steps of 64),
in three settings:

- separate: each framework in its own new process (the fair comparison);
- torch first: tinynet in a process that imported torch before tinynet, as
  a kernel experimenter's script does, against tinynet's separate time;
- one process: torch imported first, then both frameworks timed in that one
  process, alternating, torch step against tinynet step.

and the peak resident memory (VmHWM) of each framework's process, with
the part that the model and its training steps added on top of the imports
and the input batch.

Each framework runs in its own new process, so that each keeps its own
threading defaults: ``import tinynet`` sets OMP_WAIT_POLICY=PASSIVE, which
slowed torch's step by 15-20% here, and torch's OpenMP runtime, loaded first,
makes tinynet fall back to numba's workqueue layer (tinynet/threads.py). The
processes alternate for ``--rounds`` rounds; each round reports the median of
``--repeat`` steps, and the table shows the median over rounds.

``--profile`` runs tinynet's step alone under cProfile and prints the
functions with the most own time per step and their share of it: the
kernels (numba calls) and the containers' own numpy work.

On the cuda backend (``--device cuda``), the same step for each
normalization, float32, the batch already on the device. Timed by CUDA events (median), at batch 512
and 64, with the kernel launches of one step: numba.cuda launches plus
cuBLAS GEMM calls (device.matmul); CuPy's own small kernels (dtype casts,
copies of non-contiguous views) are not counted. Then one MNIST epoch at
batch 64 through ``tn.fit`` (the data uploaded once), when the MNIST files
are found.

    python -m kernels.step --device cuda --check   # one step at batch 2 against ref
                                                   # (about 3 minutes under the simulator)
    python -m kernels.step --device cuda --bench   # a GPU
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from kernels.common import GpuRow, child_env, event_time, lab_main, median_time, torch_cuda, \
    torch_time, torch_twin

NORMS = ("batch", "layer", "instance", "group", "none")
GPU_NORMS = ("batch", "layer", "instance", "group")
GPU_BATCHES = (512, 64)
BATCH = 64
STEPS_PER_EPOCH = 938


def tinynet_step(norm, x, y, device="cpu", model_name="cnn"):
    """A closure running one tinynet training step on (x, y) on ``device``
    (it returns the loss), and the model."""
    import tinynet as tn
    from tinynet.zoo import build
    tn.init.seed(0)
    model = build(model_name, norm).to(device)
    loss_fn = tn.SoftmaxCrossEntropy()
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)
    if device == "cuda":
        x, y = tn.to_device(x), tn.to_device(y)

    def step():
        loss = loss_fn.forward(model.forward(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss
    return step, model


def torch_model(torch, norm, model_name="cnn"):
    """The torch side's model: the reference CNN written in torch, or any other zoo
    model's twin built from its config (kernels.common.torch_twin)."""
    nn = torch.nn
    if model_name != "cnn":
        import tinynet as tn
        from tinynet.zoo import MODELS, build
        tn.init.seed(0)
        return torch_twin(torch, build(model_name, norm), MODELS[model_name][1])

    def norm_layers(c, hw):
        return {"batch": lambda: [nn.BatchNorm2d(c)],
                "layer": lambda: [nn.LayerNorm((c, hw, hw))],
                "instance": lambda: [nn.InstanceNorm2d(c, affine=True)],
                "group": lambda: [nn.GroupNorm(8, c)],
                "none": lambda: []}[norm]()
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), *norm_layers(32, 28), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), *norm_layers(64, 14), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10))


def torch_step(torch, norm, x, y, device="cpu", model_name="cnn"):
    """The same step in torch on ``device`` ("cpu" or "cuda")."""
    model = torch_model(torch, norm, model_name).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        loss = loss_fn(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def inputs(batch=BATCH, seed=0, model_name="cnn"):
    from tinynet.zoo import MODELS
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + MODELS[model_name][1]).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return x, y


def _rss_mb():
    """(current, peak) resident memory of this process in MB, from
    /proc/self/status (VmRSS, VmHWM). Not ru_maxrss: Linux carries that
    across exec, so a child would report its parent's peak."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key] = int(kb) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def child(framework, norm, repeat, torch_first=False, model_name="cnn"):
    """Run in a new process: print one JSON line of seconds per step and memory.

    ``framework`` is "tinynet", "torch" or "both" (torch imported first, then
    both timed in this process, alternating). ``torch_first`` imports torch
    before tinynet, as a user script might.
    """
    if torch_first or framework != "tinynet":
        import torch  # noqa: F401
    x, y = inputs(model_name=model_name)
    base_mb, _ = _rss_mb()
    out = {}
    names = ("torch", "tinynet") if framework == "both" else (framework,)
    steps = {}
    for name in names:
        if name == "torch":
            from kernels.common import try_torch
            steps[name] = torch_step(try_torch(), norm, x, y, model_name=model_name)
        else:
            steps[name] = tinynet_step(norm, x, y, model_name=model_name)[0]
    for name in names:
        out[name] = median_time(steps[name], warmup=3, repeat=repeat)
    _, peak_mb = _rss_mb()
    out["peak_rss_mb"] = peak_mb
    out["step_rss_mb"] = peak_mb - base_mb
    print(json.dumps(out))


def run_child(framework, norm, repeat, torch_first=False, model_name="cnn"):
    cmd = [sys.executable, "-m", "kernels.step", "--child", framework, "--norm", norm,
           "--repeat", str(repeat), "--model", model_name] + (
               ["--torch-first"] if torch_first else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=child_env()).stdout
    return json.loads(out.strip().splitlines()[-1])


def profile(norm="batch", repeat=10, model_name="cnn", top=12):
    """Where tinynet's step spends its time: ``repeat`` steps under cProfile after
    three warm-up steps. Returns (ms per step, rows), each row (function, ms per
    step of its own time, share of the step), the ``top`` functions by own time.

    A kernel's own time is its numba call; "container.py:forward" is the
    Residual's own work, the numpy add of block and shortcut.
    """
    import cProfile
    import pstats
    x, y = inputs(model_name=model_name)
    step = tinynet_step(norm, x, y, model_name=model_name)[0]
    for _ in range(3):
        step()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(repeat):
        step()
    prof.disable()
    total = (time.perf_counter() - t0) / repeat
    stats = pstats.Stats(prof).stats
    rows = []
    for (path, line, name), (_, _, tottime, _, _) in stats.items():
        where = "/".join(path.split("/")[-2:])
        rows.append((f"{where}:{name}", 1e3 * tottime / repeat, tottime / repeat / total))
    rows.sort(key=lambda r: -r[1])
    return 1e3 * total, rows[:top]


def print_profile(ms, rows, model_name, norm):
    print(f"kernels.step --profile: tinynet {model_name} ({norm}) at batch {BATCH}, "
          f"{ms:.1f} ms per step (under cProfile)")
    print(f"{'function (own time)':<48} {'ms/step':>8} {'share':>7}")
    for name, t, share in rows:
        print(f"{name:<48} {t:8.2f} {100 * share:6.1f}%")


def have_torch():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def bench(repeat=20, rounds=3, model_name="cnn", norms=NORMS):
    """One row per norm: median ms per step in each setting, ratios and peak RSS.

    The child processes run in the order separate tinynet, separate torch,
    torch-first tinynet, one-process pair, repeated ``rounds`` times, so
    that load on the machine falls on all settings alike.
    """
    torch = have_torch()
    rows = []
    for norm in norms:
        runs = {"tinynet": [], "torch": [], "torch_first": [], "both": []}
        for _ in range(rounds):
            runs["tinynet"].append(run_child("tinynet", norm, repeat, model_name=model_name))
            if torch:
                runs["torch"].append(run_child("torch", norm, repeat, model_name=model_name))
                runs["torch_first"].append(run_child("tinynet", norm, repeat, torch_first=True,
                                                     model_name=model_name))
                runs["both"].append(run_child("both", norm, repeat, model_name=model_name))

        def median(setting, key):
            values = [r[key] for r in runs[setting]]
            return statistics.median(values) if values else None
        row = {"norm": norm, "tinynet_ms": 1e3 * median("tinynet", "tinynet"),
               "tinynet_peak_mb": median("tinynet", "peak_rss_mb"),
               "tinynet_step_mb": median("tinynet", "step_rss_mb")}
        row["tinynet_epoch_s"] = row["tinynet_ms"] * STEPS_PER_EPOCH / 1e3
        if torch:
            row.update({
                "torch_ms": 1e3 * median("torch", "torch"),
                "torch_peak_mb": median("torch", "peak_rss_mb"),
                "torch_step_mb": median("torch", "step_rss_mb"),
                "torch_first_ms": 1e3 * median("torch_first", "tinynet"),
                "one_process_tinynet_ms": 1e3 * median("both", "tinynet"),
                "one_process_torch_ms": 1e3 * median("both", "torch")})
            row["torch_epoch_s"] = row["torch_ms"] * STEPS_PER_EPOCH / 1e3
            row["ratio"] = row["tinynet_ms"] / row["torch_ms"]
            row["torch_first_ratio"] = row["torch_first_ms"] / row["tinynet_ms"]
            row["one_process_ratio"] = row["one_process_tinynet_ms"] / row["one_process_torch_ms"]
        rows.append(row)
    return rows


def print_table(rows, rounds, model_name="cnn"):
    """Print the rows of ``bench`` as two tables: time and memory."""
    torch = "torch_ms" in rows[0]
    what = "reference CNN" if model_name == "cnn" else model_name
    print(f"{what} training step, batch {BATCH}, float32, backend cpu, "
          f"median of {rounds} rounds")
    head = f"{'norm':<10}{'tinynet ms':>11}"
    if torch:
        head += (f"{'torch ms':>10}{'ratio':>7}{'torch-first ms':>16}{'vs alone':>9}"
                 f"{'1-proc tn ms':>14}{'1-proc torch ms':>17}{'ratio':>7}")
    print(head + f"{'tinynet s/epoch':>17}")
    for r in rows:
        line = f"{r['norm']:<10}{r['tinynet_ms']:11.1f}"
        if torch:
            line += (f"{r['torch_ms']:10.1f}{r['ratio']:7.2f}{r['torch_first_ms']:16.1f}"
                     f"{r['torch_first_ratio']:9.2f}{r['one_process_tinynet_ms']:14.1f}"
                     f"{r['one_process_torch_ms']:17.1f}{r['one_process_ratio']:7.2f}")
        print(line + f"{r['tinynet_epoch_s']:17.1f}")
    print("\npeak RSS (MB) of each framework's own process; 'step' is what the model and "
          "its steps added after the imports")
    print(f"{'norm':<10}{'tinynet peak':>13}{'tinynet step':>13}"
          + (f"{'torch peak':>11}{'torch step':>11}" if torch else ""))
    for r in rows:
        line = f"{r['norm']:<10}{r['tinynet_peak_mb']:13.0f}{r['tinynet_step_mb']:13.0f}"
        if torch:
            line += f"{r['torch_peak_mb']:11.0f}{r['torch_step_mb']:11.0f}"
        print(line)


# -- the cuda backend's step ------------------------------------------------------

def count_launches(fn):
    """(numba.cuda launches, device.matmul calls) made by one call of ``fn``."""
    from tinynet.backends import cuda_device as device
    counts = [0, 0]

    def count_gemm(a, b):
        counts[1] += 1

    def count(py_func, args):
        counts[0] += 1
    with device.watch_launches(count), device.watch_gemms(count_gemm):
        fn()
    return tuple(counts)


def gpu_check():
    """One step of build_cnn on the cuda backend against the same step on ref: the
    loss and every gradient (Adam's first step is lr * sign(grad) wherever the
    gradient is rounding noise, so the updated parameters are not compared)."""
    import tinynet as tn
    x, y = inputs(2)
    losses, grads = [], []
    for backend, device in (("ref", "cpu"), ("cuda", "cuda")):
        with tn.use_backend(backend):
            step, model = tinynet_step("batch", x, y, device)
            losses.append(float(step()))
            grads.append([tn.to_host(p.grad) for p in model.parameters()])
    assert abs(losses[0] - losses[1]) < 1e-4 * max(1.0, abs(losses[0])), losses
    for g_ref, g in zip(*grads):
        np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(g_ref).max()))


def _mnist_epoch():
    """Seconds of one MNIST epoch at batch 64 on the cuda backend, or None without the data."""
    import tinynet as tn
    from tinynet.zoo import build_cnn
    try:
        images, labels = tn.data.load_mnist("train", download=False)
    except (OSError, RuntimeError, ValueError):
        return None
    x = (images.astype(np.float32) / 255.0)[:, None]
    tn.init.seed(0)
    model = build_cnn("batch").to("cuda")
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, labels.astype(np.int64)), epochs=1,
           batch_size=64, progress=False)
    return time.perf_counter() - t0


def gpu_bench():
    import tinynet as tn
    tn.set_backend("cuda")
    torch = torch_cuda()
    rows = []
    for batch in GPU_BATCHES:
        x, y = inputs(batch)
        for norm in GPU_NORMS:
            step, _ = tinynet_step(norm, x, y, "cuda")
            seconds = event_time(step, warmup=3, repeat=20)
            launches, gemms = count_launches(step)
            t_torch = torch_time(torch, torch_step(torch, norm, x, y, "cuda")) if torch else None
            rows.append(GpuRow(f"CNN step, batch {batch}, {norm} norm",
                               f"tinynet cuda [{launches} launches + {gemms} GEMMs]", seconds,
                               torch_seconds=t_torch))
    epoch = _mnist_epoch()
    if epoch is not None:
        rows.append(GpuRow("MNIST epoch, batch 64, batch norm (tn.fit)", "tinynet cuda", epoch))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.step")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the GPU step (--check on a GPU or the simulator, "
                             "--bench on a GPU)")
    parser.add_argument("--check", action="store_true", help="with --device cuda: one step "
                        "against the ref backend")
    parser.add_argument("--bench", action="store_true", help="with --device cuda: time it")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=("tinynet", "torch", "both"),
                        help="time one framework's step (or both) in this process and print JSON")
    parser.add_argument("--norm", choices=NORMS, default=None,
                        help="the normalization (default: every one; with --child: batch)")
    parser.add_argument("--model", default="cnn",
                        help="the zoo model (tinynet models lists them)")
    parser.add_argument("--torch-first", action="store_true",
                        help="with --child tinynet: import torch before tinynet")
    parser.add_argument("--profile", action="store_true",
                        help="tinynet only: where one step spends its time (cProfile, "
                             "--repeat steps), the functions with the most own time")
    args = parser.parse_args(argv)
    if args.profile:
        import tinynet
        tinynet.process.apply()
        norm = args.norm or "batch"
        return print_profile(*profile(norm, args.repeat, args.model), args.model, norm)
    if args.device == "cuda":
        rest = [f for f, on in (("--check", args.check), ("--bench", args.bench)) if on]
        return lab_main("step", gpu_check, gpu_bench, rest, device="cuda")
    if args.child:
        return child(args.child, args.norm or "batch", args.repeat, args.torch_first,
                     args.model)
    rows = bench(args.repeat, args.rounds, args.model,
                 NORMS if args.norm is None else (args.norm,))
    print_table(rows, args.rounds, args.model)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
