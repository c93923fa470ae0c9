"""weightnorm: no norm, BN, WeightNorm and WeightNorm with mean-only BN.

A CNN on Fashion-MNIST trained with the same SGD settings in four versions:
no normalization, BatchNorm after every convolution, WeightNorm on every
convolution and on the classifier (Salimans and Kingma 2016,
https://arxiv.org/abs/1602.07868), and WeightNorm with mean-only BatchNorm.
The training loss against steps and against wall time (after two warm-up
steps of the same model, so that no curve carries the one-off cost of
loading the compiled kernels). Claim (the paper):
WeightNorm speeds up convergence like BN at a lower cost per step, and
mean-only BN adds to it.
"""
import numpy as np

from ..common import mean_curves, run_train
from .plotting import mark_end, save, subplots, titled

NAME = "weightnorm"
CLAIM = ("WeightNorm speeds up convergence like BN at a lower cost per step; "
         "mean-only BN adds to it")
NORMS = ("none", "bn", "wn", "wn_mbn")


def run(config):
    run_train({**config, "steps": 2})
    return run_train(config)


def grid(quick):
    size = dict(n_train=5000, n_test=1000, steps=150, depth=2, width=8) if quick else \
        dict(n_train=30000, n_test=5000, steps=2000, depth=3, width=16)
    return [dict(data="fashion", arch="cnn", norm=norm, lr=0.1, log_every=10, seed=seed, **size)
            for norm in NORMS for seed in ((0,) if quick else (0, 1))]


def summarize(records):
    """Per norm the mean loss and wall-time curves over seeds, up to where the first
    run stopped (a diverged one), and the mean seconds per training step."""
    out = {}
    for norm in NORMS:
        runs = [r["result"] for r in records if r["config"]["norm"] == norm]
        n = min(len(r["steps"]) for r in runs)
        out[norm] = {"steps": runs[0]["steps"][:n],
                     "loss": mean_curves([r["loss"] for r in runs]),
                     "wall": mean_curves([r["wall"] for r in runs]),
                     "test_acc": [r["test_acc"] for r in runs],
                     "diverged": [r["diverged"] for r in runs],
                     "seconds_per_step": float(np.mean([r["wall"][-1] / (r["steps"][-1] + 1)
                                                        for r in runs]))}
    return {"norms": out}


def figure(summary):
    """The figure of ``summary``: the training loss against steps and against wall
    time; a norm with a diverged run is a red x where its curves end. Returns a
    matplotlib Figure."""
    t = summary["norms"]
    fig, axes = subplots(1, 2, figsize=(12, 4.5))
    for norm in NORMS:
        label = f"{norm} (test acc {100 * np.mean(t[norm]['test_acc']):.1f}%)"
        axes[0].plot(t[norm]["steps"], t[norm]["loss"], label=label)
        axes[1].plot(t[norm]["wall"], t[norm]["loss"],
                     label=f"{norm} ({1e3 * t[norm]['seconds_per_step']:.1f} ms/step)")
        if any(t[norm]["diverged"]):
            mark_end(axes[0], t[norm]["steps"], t[norm]["loss"])
            mark_end(axes[1], t[norm]["wall"], t[norm]["loss"])
    axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss against steps")
    axes[1].set(xlabel="wall time (s, shared machine)", ylabel="training loss", yscale="log",
                title="loss against wall time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return titled(fig, "weightnorm: CNN on Fashion-MNIST")


def plot(summary, path):
    save(figure(summary), path)
