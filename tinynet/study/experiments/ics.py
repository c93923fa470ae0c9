"""ics: internal covariate shift in a CNN without BN, with BN and with noisy BN.

One CNN on Fashion-MNIST in three versions: no normalization, BatchNorm after
every convolution, and BatchNorm followed by RandomAffineNoise (a random
per-step shift and scale of every channel, Santurkar et al. 2018,
https://arxiv.org/abs/1805.11604). Every ``measure_every`` steps, on that
step's batch: the percentiles of the input of an early layer (the second
convolution) and of a late one (the classifier), and the ICS of every
linear layer (tinynet.study.measure.ics). Claim (Santurkar et al.): BN does
not reduce ICS, and noisy BN still trains better than no BN.
"""
import numpy as np

import tinynet as tn
from ..common import mean_curves, public, train_run, with_defaults
from ..measure import ics, linear_layers, restore, snapshot
from .plotting import mark_end, save, subplots, titled

NAME = "ics"
CLAIM = "BN does not reduce internal covariate shift, and noisy BN still trains better than no BN"
PERCENTILES = (5, 15, 50, 85, 95)
VARIANTS = ("none", "bn", "noisy_bn")


def grid(quick):
    size = dict(n_train=5000, n_test=1000, steps=120, depth=2, width=8) if quick else \
        dict(n_train=30000, n_test=5000, steps=1500, depth=3, width=16)
    return [dict(data="fashion", arch="cnn", norm=norm, lr=0.1, log_every=10, seed=seed, **size)
            for norm in VARIANTS for seed in ((0,) if quick else (0, 1))]


def run(config):
    every = 20 if config["steps"] <= 200 else 100
    c = with_defaults(config)
    measured = {"measure_steps": [], "ics_l2": [], "ics_cos": [], "early": [], "late": []}

    def hook(step, model, xb, yb):
        if step % every:
            return
        lin = linear_layers(model)
        early, late = str(model.layers.index(lin[1])), str(model.layers.index(lin[-1]))
        snap = snapshot(model)
        with tn.Recorder(model, layers=[early, late], kinds=("x",),
                         percentiles=PERCENTILES) as rec:
            model.forward(xb)
        restore(model, snap)
        measured["early"].append(rec.select(layer=early)[0]["percentiles"])
        measured["late"].append(rec.select(layer=late)[0]["percentiles"])
        with np.errstate(all="ignore"):
            values = ics(model, xb, yb, c["lr"])
        measured["measure_steps"].append(step)
        measured["ics_l2"].append([v[0] for v in values])
        measured["ics_cos"].append([v[1] for v in values])

    result = public(train_run(config, hook=hook))
    result.update(measured)
    return result


def summarize(records):
    """Per variant the mean curves over seeds, up to where the first run stopped
    (a diverged one), and the percentiles of the first seed."""
    out = {}
    for norm in VARIANTS:
        runs = [r["result"] for r in records if r["config"]["norm"] == norm]
        first = runs[0]
        n = min(len(r["steps"]) for r in runs)
        m = min(len(r["measure_steps"]) for r in runs)
        out[norm] = {"steps": first["steps"][:n], "loss": mean_curves([r["loss"] for r in runs]),
                     "test_acc": [r["test_acc"] for r in runs],
                     "diverged": [r["diverged"] for r in runs],
                     "measure_steps": first["measure_steps"][:m],
                     "ics_l2": mean_curves([r["ics_l2"] for r in runs]),
                     "ics_cos": mean_curves([r["ics_cos"] for r in runs]),
                     "early": first["early"][:m], "late": first["late"][:m]}
    return {"variants": out, "percentiles": list(PERCENTILES)}


def figure(summary):
    """The figure of ``summary``: loss and the last layer's ICS against steps, and
    the percentiles of an early and a late layer's input; a variant with a
    diverged run is a red x where its curves end. Returns a matplotlib Figure."""
    v = summary["variants"]
    fig, axes = subplots(3, 3, figsize=(14, 11))
    for norm in VARIANTS:
        axes[0, 0].plot(v[norm]["steps"], v[norm]["loss"],
                        label=f"{norm} (test acc {100 * np.mean(v[norm]['test_acc']):.1f}%)")
        l2 = np.array(v[norm]["ics_l2"])
        cos = np.array(v[norm]["ics_cos"])
        axes[0, 1].plot(v[norm]["measure_steps"], l2[:, -1], "o-", label=norm)
        axes[0, 2].plot(v[norm]["measure_steps"], cos[:, -1], "o-", label=norm)
        if any(v[norm]["diverged"]):
            mark_end(axes[0, 0], v[norm]["steps"], v[norm]["loss"])
            mark_end(axes[0, 1], v[norm]["measure_steps"], l2[:, -1])
            mark_end(axes[0, 2], v[norm]["measure_steps"], cos[:, -1])
    axes[0, 0].set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    axes[0, 1].set(xlabel="step", ylabel="||G - G'||", yscale="log",
                   title="ICS of the last layer: l2 distance")
    axes[0, 2].set(xlabel="step", ylabel="cos(G, G')", title="ICS of the last layer: cosine")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    q = summary["percentiles"]
    for row, where in ((1, "early"), (2, "late")):
        for j, norm in enumerate(VARIANTS):
            ax = axes[row, j]
            steps = v[norm]["measure_steps"]
            p = np.array([[d[f"{k:g}"] for k in q] for d in v[norm][where]])
            ax.fill_between(steps, p[:, 0], p[:, -1], alpha=0.2, label=f"{q[0]}-{q[-1]}%")
            ax.fill_between(steps, p[:, 1], p[:, -2], alpha=0.4, label=f"{q[1]}-{q[-2]}%")
            ax.plot(steps, p[:, 2], "k-", label="median")
            if v[norm]["diverged"][0]:
                mark_end(ax, steps, p[:, 2])
            ax.set(xlabel="step", ylabel="value",
                   title=f"{norm}: input of the {'second conv' if where == 'early' else 'classifier'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return titled(fig, "ics: CNN on Fashion-MNIST, no norm / BN / noisy BN")


def plot(summary, path):
    save(figure(summary), path)
