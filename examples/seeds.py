"""Train one `tinynet train` recipe over several seeds: the table of a published comparison.

    TINYNET_DATA_DIR=../shared/data python examples/seeds.py --seeds 0 1 2 \\
        --out runs/lenet5 --figure lenet5.png -- --model lenet5 --norm none --epochs 20

Each seed is one run directory, OUT/seed<S>, trained by `tinynet train ARGS --seed S`
(a finished run is resumed, which only reports it, so an interrupted table continues).
Prints each seed's validation and test error and their mean and standard deviation,
and draws every seed's validation error per epoch.
"""
import argparse
import json
import os
import statistics
import sys

from tinynet.cli import main as tinynet
from tinynet.plots import subplots

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--out", required=True, help="one run directory per seed goes here")
parser.add_argument("--figure", default=None, help="write the validation-error curves here")
parser.add_argument("train_args", nargs=argparse.REMAINDER,
                    help="after --: the arguments of `tinynet train`")
args = parser.parse_args()
train_args = [a for a in args.train_args if a != "--"]

rows = []
for seed in args.seeds:
    out = os.path.join(args.out, f"seed{seed}")
    again = ["--resume"] if os.path.isfile(os.path.join(out, "result.json")) else []
    code = tinynet(["train", *train_args, "--seed", str(seed), "--out", out, "--quiet", *again])
    if code != 0:
        sys.exit(code)
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    rows.append((seed, result, history))

print(f"{'seed':>4}  {'val error':>9}  {'test error':>10}  {'train s':>7}")
for seed, result, _ in rows:
    print(f"{seed:>4}  {100 * (1 - result['val_acc']):8.2f}%  {100 * (1 - result['test_acc']):9.2f}%"
          f"  {result['train_s']:7.1f}")
errors = [100 * (1 - r["test_acc"]) for _, r, _ in rows]
spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
print(f"test error {statistics.mean(errors):.2f}% +- {spread:.2f}% (mean +- std over "
      f"{len(errors)} seeds)")

if args.figure:
    fig, ax = subplots(figsize=(6.5, 4))
    for seed, _, history in rows:
        ax.plot([r["epoch"] for r in history], [100 * (1 - r["val_acc"]) for r in history],
                "o-", ms=3, label=f"seed {seed}")
    ax.set(xlabel="epoch", ylabel="validation error (%)", yscale="log",
           title=f"tinynet train {' '.join(train_args)}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(args.figure, dpi=110, bbox_inches="tight")
    print(f"figure: {args.figure}")
