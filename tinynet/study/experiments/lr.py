"""lr: BatchNorm against no normalization over learning rates and init scales.

A six-hidden-layer MLP on MNIST, ReLU or sigmoid, with or without BatchNorm
after every hidden Dense, trained with plain SGD at learning rates 0.01 to 1
from He-uniform weights scaled by 0.1, 1 and 10. Claim (Ioffe and Szegedy
2015, https://arxiv.org/abs/1502.03167): BN trains at higher learning rates,
is less sensitive to the initial scale, and makes a deep sigmoid net trainable.
"""
import numpy as np

from ..common import run_train
from .plotting import mark_diverged, mark_end, save, subplots, titled

NAME = "lr"
CLAIM = ("BN trains at higher learning rates, is less sensitive to initialization, "
         "and makes deep sigmoid nets trainable")
run = run_train


def grid(quick):
    lrs = [0.01, 0.1, 1.0] if quick else [0.01, 0.03, 0.1, 0.3, 1.0]
    size = dict(n_train=5000, n_test=1000, steps=150, width=64) if quick else \
        dict(n_train=20000, n_test=5000, steps=1500, width=100)
    return [dict(data="mnist", arch="mlp", depth=6, act=act, norm=norm, lr=lr,
                 init_scale=scale, log_every=10 if quick else 25, **size)
            for act in ("relu", "sigmoid") for norm in ("none", "bn")
            for scale in (0.1, 1.0, 10.0) for lr in lrs]


def summarize(records):
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        rows.append({"act": c["act"], "norm": c["norm"], "lr": c["lr"],
                     "init_scale": c["init_scale"], "test_acc": res["test_acc"],
                     "train_acc": res["train_acc"], "diverged": res["diverged"],
                     "steps": res["steps"], "loss": res["loss"]})
    return {"rows": rows}


def figure(summary):
    """The figure of ``summary``: test accuracy against lr per activation and init
    scale, and the loss curves at the smallest and largest lr; diverged runs are
    red x's. Returns a matplotlib Figure."""
    rows = summary["rows"]
    lrs = sorted({r["lr"] for r in rows})
    fig, axes = subplots(3, 3, figsize=(13, 11))
    for i, act in enumerate(("relu", "sigmoid")):
        for j, scale in enumerate((0.1, 1.0, 10.0)):
            ax = axes[i, j]
            for norm, style in (("none", "o-"), ("bn", "s-")):
                runs = [next(r for r in rows if r["act"] == act and r["norm"] == norm
                             and r["init_scale"] == scale and r["lr"] == lr) for lr in lrs]
                acc = [100 * r["test_acc"] for r in runs]
                ax.plot(lrs, acc, style, label=norm)
                mark_diverged(ax, [lr for lr, r in zip(lrs, runs) if r["diverged"]],
                              [a for a, r in zip(acc, runs) if r["diverged"]])
            ax.set(xscale="log", ylim=(0, 100), xlabel="learning rate", ylabel="test acc (%)",
                   title=f"{act}, init x{scale:g}")
            ax.grid(alpha=0.3)
            ax.legend()
    for j, act in enumerate(("relu", "sigmoid")):
        ax = axes[2, j]
        for r in rows:
            if r["act"] == act and r["init_scale"] == 1.0 and r["lr"] in (lrs[0], lrs[-1]):
                loss = np.array(r["loss"], dtype=float)
                ax.plot(r["steps"], loss, "-" if r["norm"] == "bn" else "--",
                        label=f"{r['norm']}, lr {r['lr']:g}")
                if r["diverged"]:
                    mark_end(ax, r["steps"], loss)
        ax.set(yscale="log", xlabel="step", ylabel="training loss",
               title=f"loss curves, {act}, init x1")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2, 2].axis("off")
    return titled(fig, "lr: 6-hidden-layer MLP on MNIST, with and without BatchNorm")


def plot(summary, path):
    save(figure(summary), path)
