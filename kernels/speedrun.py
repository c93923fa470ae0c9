"""The public MNIST speedrun recipe, tinynet against torch, each in its own process.

    python -m kernels.speedrun --seeds 10 [--json PATH] [--data-dir DIR]
    python -m kernels.speedrun --device cuda --seeds 3   # on a GPU: tinynet's cuda
                                                         # backend against torch CUDA

The recipe is tinynet/speedrun.py's (``tinynet speedrun``): conv 1->24 5x5,
maxpool 2, ReLU; conv 24->32 3x3, maxpool 2, ReLU; dense 800->256, ReLU,
dense 256->10; torch's default initialization; Adam lr 0.01, betas (0.7,
0.9); OneCycleLR over one epoch (no momentum cycling); batch 256; the data
preloaded as normalized float32 arrays, loading not timed. ``torch_speedrun``
below is the same recipe written with torch's public API (the same images,
the same normalization; torch's own generator draws the weights and the
order).

For each seed 0..N-1 a new tinynet process (``python -m tinynet speedrun
--seeds S --json``) and a new torch process (``--child torch``) run one
training each, alternating, so that load on the machine falls on both alike.
Each prints its training time (the loop over the epoch's 235 steps) and its
test accuracy (10,000 images, after the clock stops). The table shows every
seed, the medians of the times, the mean accuracies and the ratio of the
median times (tinynet / torch; below 1 tinynet is faster).

tinynet's time includes loading its compiled kernels from numba's cache in
the first step (a new process does it once); the first step is reported on
its own (``first_step_s``). Run ``tinynet warmup`` or one speedrun first, so
that the cache is filled and nothing compiles.
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import time

from kernels.common import child_env

STEPS = math.ceil(60000 / 256)


def torch_model(torch):
    """The recipe's model in torch (tinynet.zoo.build_speedrun's twin; the same
    state_dict keys), with torch's default initialization."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10))


def torch_speedrun(seed, data_dir=None, device="cpu"):
    """The recipe in torch on ``device`` ("cpu" or "cuda"; the data set is moved
    there before the clock starts): {"train_s", "test_acc", "first_step_s", ...}."""
    import torch
    from torch import nn
    from tinynet.speedrun import RECIPE, load_data  # data only: no tinynet kernel runs here
    (x, y), (xt, yt) = load_data(data_dir)
    x, y, xt, yt = (torch.from_numpy(a).to(device) for a in (x, y, xt, yt))

    def sync():  # the clock reads finished work only
        if device == "cuda":
            torch.cuda.synchronize()
    torch.manual_seed(seed)
    model = torch_model(torch).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"], betas=RECIPE["betas"])
    batch = RECIPE["batch_size"]
    steps = math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=RECIPE["lr"], total_steps=steps, pct_start=RECIPE["pct_start"],
        div_factor=RECIPE["div_factor"], final_div_factor=RECIPE["final_div_factor"],
        cycle_momentum=False)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x)).to(device)
    sync()
    t0 = time.perf_counter()
    first = None
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if first is None:
            sync()
            first = time.perf_counter() - t0
    sync()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xt[s:s + 1000]).argmax(1) == yt[s:s + 1000]).sum())
                      for s in range(0, len(xt), 1000))
    return {"seed": seed, "train_s": train_s, "first_step_s": first, "steps": steps,
            "test_acc": correct / len(xt)}


def _child(args, data_dir):
    """Run ``python args... [--data-dir D]`` in a new process; its last stdout line as JSON."""
    cmd = [sys.executable] + args + (["--data-dir", data_dir] if data_dir else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    if out.returncode != 0:
        raise RuntimeError(f"kernels.speedrun: {' '.join(cmd[1:])} exited {out.returncode}; "
                           f"the end of its stderr:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_tinynet(seed, data_dir=None, device="cpu"):
    return _child(["-m", "tinynet", "speedrun", "--seeds", str(seed), "--json",
                   "--backend", device], data_dir)


def run_torch(seed, data_dir=None, device="cpu"):
    return _child(["-m", "kernels.speedrun", "--child", "torch", "--seed", str(seed),
                   "--device", device], data_dir)


def bench(seeds, data_dir=None, torch=True, say=print, device="cpu"):
    """Rows {"seed", "tinynet": result, "torch": result or None} for seeds 0..seeds-1,
    each framework on ``device`` ("cpu": tinynet's cpu backend; "cuda")."""
    rows = []
    for seed in range(seeds):
        row = {"seed": seed, "tinynet": run_tinynet(seed, data_dir, device),
               "torch": run_torch(seed, data_dir, device) if torch else None}
        rows.append(row)
        say(_row_line(row))
    return rows


def _row_line(row):
    t = row["tinynet"]
    line = f"seed {row['seed']:>3}  tinynet {t['train_s']:7.2f} s {100 * t['test_acc']:6.2f}%"
    if row["torch"]:
        o = row["torch"]
        line += (f"   torch {o['train_s']:7.2f} s {100 * o['test_acc']:6.2f}%   ratio "
                 f"{t['train_s'] / o['train_s']:.2f}")
    return line


def summary(rows):
    """Medians of the train times, mean test accuracies and the ratio of the medians."""
    out = {}
    for name in ("tinynet", "torch"):
        results = [r[name] for r in rows if r[name]]
        if results:
            out[name] = {"median_train_s": statistics.median(r["train_s"] for r in results),
                         "mean_test_acc": statistics.fmean(r["test_acc"] for r in results),
                         "min_test_acc": min(r["test_acc"] for r in results),
                         "seeds": len(results)}
    if "torch" in out:
        out["ratio"] = out["tinynet"]["median_train_s"] / out["torch"]["median_train_s"]
    return out


def markdown(rows, s):
    """The bench as a Markdown table (the GPU report's speedrun section)."""
    lines = ["| seed | tinynet s | tinynet test acc | torch s | torch test acc | ratio |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        t, o = r["tinynet"], r["torch"]
        other = (f"{o['train_s']:.2f} | {100 * o['test_acc']:.2f}% | "
                 f"{t['train_s'] / o['train_s']:.2f}") if o else "| |"
        lines.append(f"| {r['seed']} | {t['train_s']:.2f} | {100 * t['test_acc']:.2f}% | {other} |")
    v = s["tinynet"]
    last = f"| median / mean | {v['median_train_s']:.2f} | {100 * v['mean_test_acc']:.2f}% |"
    if "torch" in s:
        w = s["torch"]
        last += f" {w['median_train_s']:.2f} | {100 * w['mean_test_acc']:.2f}% | {s['ratio']:.2f} |"
    else:
        last += " | | |"
    return "\n".join(lines + [last])


def print_summary(s):
    for name in ("tinynet", "torch"):
        if name in s:
            v = s[name]
            print(f"{name:<8} median {v['median_train_s']:.2f} s, mean test accuracy "
                  f"{100 * v['mean_test_acc']:.2f}% (lowest {100 * v['min_test_acc']:.2f}%) "
                  f"over {v['seeds']} seeds")
    if "ratio" in s:
        print(f"ratio of the medians (tinynet / torch): {s['ratio']:.2f}")


def have_torch():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.speedrun")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1, one run each")
    parser.add_argument("--data-dir", default=None, help="the data root (MNIST)")
    parser.add_argument("--json", default=None, help="also write the rows and summary here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="tinynet's backend and torch's device (cuda: a GPU)")
    parser.add_argument("--child", choices=("torch",), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from kernels.common import try_torch
        try_torch()  # torch's threads matched to numba's (the machine's cores)
        print(json.dumps(torch_speedrun(args.seed, args.data_dir, args.device)))
        return
    torch = have_torch()
    if not torch:
        print("torch is not installed: timing tinynet alone")
    rows = bench(args.seeds, args.data_dir, torch, device=args.device)
    s = summary(rows)
    print_summary(s)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": s}, f, indent=2)


if __name__ == "__main__":
    main()
