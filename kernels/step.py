"""The whole training step of the reference CNN, tinynet against torch.

The reference CNN (tinynet.cli.build_cnn) at batch 64, float32:
conv32-norm-relu-pool, conv64-norm-relu-pool, dense128-relu, dropout, dense10,
for each of the four normalizations. One step is the same explicit loop in
both frameworks: forward, softmax cross-entropy, zero_grad, backward, Adam
step. The image batch needs no gradient in either.

    python -m kernels.step [--repeat 20] [--json PATH]

prints the median ms per step, the tinynet/torch ratio and the implied time
per MNIST epoch (938 steps of 64).

Each framework runs in its own new process, so that each keeps its own
threading defaults: ``import tinynet`` sets OMP_WAIT_POLICY=PASSIVE, which
slowed torch's step by 15-20% here, and torch's OpenMP runtime, loaded first,
makes tinynet fall back to numba's workqueue layer (tinynet/threads.py). The
processes alternate for ``--rounds`` rounds; each round reports the median of
``--repeat`` steps, and the table shows the median over rounds.
"""
import argparse
import json
import statistics
import subprocess
import sys

import numpy as np

from kernels.common import median_time

NORMS = ("batch", "layer", "instance", "group")
BATCH = 64
STEPS_PER_EPOCH = 938


def tinynet_step(norm, x, y):
    """A closure running one tinynet training step on (x, y)."""
    import tinynet as tn
    from tinynet.cli import build_cnn
    tn.init.seed(0)
    model = build_cnn(norm)
    loss_fn = tn.SoftmaxCrossEntropy()
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        loss_fn.forward(model.forward(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return step


def torch_step(torch, norm, x, y):
    """The same step in torch, or None without torch."""
    nn = torch.nn

    def norm_layer(c, hw):
        return {"batch": lambda: nn.BatchNorm2d(c),
                "layer": lambda: nn.LayerNorm((c, hw, hw)),
                "instance": lambda: nn.InstanceNorm2d(c, affine=True),
                "group": lambda: nn.GroupNorm(8, c)}[norm]()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), norm_layer(32, 28), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), norm_layer(64, 14), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = loss_fn(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return x, y


def child(framework, norm, repeat, torch_first=False):
    """Run in a new process: print the median seconds of one step.

    ``torch_first`` imports torch before tinynet, as a user script might.
    """
    if torch_first:
        import torch  # noqa: F401
    x, y = inputs()
    if framework == "torch":
        from kernels.common import try_torch
        step = torch_step(try_torch(), norm, x, y)
    else:
        step = tinynet_step(norm, x, y)
    print(median_time(step, warmup=3, repeat=repeat))


def run_child(framework, norm, repeat):
    out = subprocess.run([sys.executable, "-m", "kernels.step", "--child", framework,
                          "--norm", norm, "--repeat", str(repeat)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def have_torch():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def bench(repeat=20, rounds=3):
    """Rows of median ms per step for each norm, tinynet and torch side by side."""
    frameworks = ("tinynet", "torch") if have_torch() else ("tinynet",)
    rows = []
    for norm in NORMS:
        times = {f: [] for f in frameworks}
        for _ in range(rounds):
            for f in frameworks:
                times[f].append(run_child(f, norm, repeat))
        t_tn = statistics.median(times["tinynet"])
        t_torch = statistics.median(times["torch"]) if "torch" in times else None
        rows.append({"norm": norm, "tinynet_ms": 1e3 * t_tn,
                     "torch_ms": None if t_torch is None else 1e3 * t_torch,
                     "ratio": None if t_torch is None else t_tn / t_torch,
                     "tinynet_epoch_s": t_tn * STEPS_PER_EPOCH,
                     "torch_epoch_s": None if t_torch is None else t_torch * STEPS_PER_EPOCH})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.step")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=("tinynet", "torch"),
                        help="time one framework's step in this process and print seconds")
    parser.add_argument("--norm", choices=NORMS, default="batch",
                        help="with --child: the normalization")
    parser.add_argument("--torch-first", action="store_true",
                        help="with --child tinynet: import torch before tinynet")
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.norm, args.repeat, args.torch_first)
    rows = bench(args.repeat, args.rounds)
    print(f"reference CNN training step, batch {BATCH}, float32, backend cpu, "
          f"each framework in its own process, median of {args.rounds} rounds")
    print(f"{'norm':<10}{'tinynet ms':>12}{'torch ms':>10}{'ratio':>8}{'tinynet s/epoch':>17}"
          f"{'torch s/epoch':>15}")
    for r in rows:
        t = "" if r["torch_ms"] is None else f"{r['torch_ms']:10.1f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:8.2f}"
        te = "" if r["torch_epoch_s"] is None else f"{r['torch_epoch_s']:15.1f}"
        print(f"{r['norm']:<10}{r['tinynet_ms']:12.1f}{t:>10}{ratio:>8}"
              f"{r['tinynet_epoch_s']:17.1f}{te:>15}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
