"""smoothness: the loss landscape along the gradient, with and without BN.

A CNN on Fashion-MNIST, without normalization and with BatchNorm, at two
learning rates. Every ``measure_every`` steps, on that step's batch, the loss
and gradient at theta - eta * g for step sizes eta = lr * (0.25 ... 4), and
from them the loss range, the gradient predictiveness and the effective
beta-smoothness (tinynet.study.measure.landscape). Claim (Santurkar et al.
2018, https://arxiv.org/abs/1805.11604, section 3): BN makes the landscape
smoother: a smaller loss range, more predictive gradients, a smaller beta.
"""
import numpy as np

from ..common import public, train_run
from ..measure import landscape
from .plotting import mark_end, save, subplots, titled

NAME = "smoothness"
CLAIM = "BN makes the loss landscape smoother (loss range, gradient predictiveness, beta)"
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def grid(quick):
    size = dict(n_train=5000, n_test=1000, steps=100, depth=2, width=8) if quick else \
        dict(n_train=30000, n_test=5000, steps=1500, depth=3, width=16)
    return [dict(data="fashion", arch="cnn", norm=norm, lr=lr, log_every=10, **size)
            for norm in ("none", "bn") for lr in (0.05, 0.2)]


def run(config):
    every = 10 if config["steps"] <= 200 else 50
    etas = [config["lr"] * f for f in FACTORS]
    measured = {"measure_steps": [], "loss_range": [], "grad_pred": [], "beta": [],
                "loss_min": [], "loss_max": []}

    def hook(step, model, xb, yb):
        if step % every:
            return
        with np.errstate(all="ignore"):
            m = landscape(model, xb, yb, etas)
        finite = [v for v in m["losses"] if np.isfinite(v)]
        measured["measure_steps"].append(step)
        for key in ("loss_range", "grad_pred", "beta"):
            measured[key].append(m[key])
        measured["loss_min"].append(min(finite) if finite else float("nan"))
        measured["loss_max"].append(max(finite) if finite else float("nan"))

    result = public(train_run(config, hook=hook))
    result.update(measured)
    return result


def summarize(records):
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        rows.append({"norm": c["norm"], "lr": c["lr"], "test_acc": res["test_acc"],
                     "diverged": res["diverged"],
                     **{k: res[k] for k in ("measure_steps", "loss_range", "grad_pred", "beta",
                                            "loss_min", "loss_max")},
                     "median_loss_range": float(np.nanmedian(res["loss_range"])),
                     "median_grad_pred": float(np.nanmedian(res["grad_pred"])),
                     "median_beta": float(np.nanmedian(res["beta"]))})
    return {"rows": rows, "step_factors": list(FACTORS)}


def figure(summary):
    """The figure of ``summary``: per lr, the loss range along -g, the gradient
    predictiveness and beta against steps; a diverged run is a red x where its
    curves end. Returns a matplotlib Figure."""
    rows = summary["rows"]
    lrs = sorted({r["lr"] for r in rows})
    fig, axes = subplots(len(lrs), 3, figsize=(14, 4 * len(lrs)), squeeze=False)
    for i, lr in enumerate(lrs):
        for r in (r for r in rows if r["lr"] == lr):
            label = f"{r['norm']} (test acc {100 * r['test_acc']:.1f}%)"
            axes[i, 0].fill_between(r["measure_steps"], r["loss_min"], r["loss_max"], alpha=0.4,
                                    label=label)
            axes[i, 1].plot(r["measure_steps"], r["grad_pred"], "o-", label=r["norm"])
            axes[i, 2].plot(r["measure_steps"], r["beta"], "o-", label=r["norm"])
            if r["diverged"]:
                for ax, key in zip(axes[i], ("loss_max", "grad_pred", "beta")):
                    mark_end(ax, r["measure_steps"], r[key])
        axes[i, 0].set(title=f"loss along -g, lr {lr:g}", xlabel="step", ylabel="loss", yscale="log")
        axes[i, 1].set(title="gradient predictiveness: max ||g_eta - g||", xlabel="step",
                       yscale="log")
        axes[i, 2].set(title="effective beta-smoothness", xlabel="step", yscale="log")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return titled(fig, "smoothness: CNN on Fashion-MNIST, step sizes lr x "
                  + ", ".join(f"{f:g}" for f in summary["step_factors"]))


def plot(summary, path):
    save(figure(summary), path)
