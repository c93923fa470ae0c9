"""batch-size-resnet: BN against GN from batch 2 to 32 in Wu and He's conditions.

Wu and He's figure 1 (https://arxiv.org/abs/1803.08494) trains ResNet-50,
whose last stage is 7 x 7, with BN and GN at 32, 16, 8, 4 and 2 images per
batch: GN's error stays flat, BN's rises as the batch shrinks. Here the zoo's
ResNet-8 (a stem and three stages of one basic block, 16, 32 and 64
channels; the last stage is 7 x 7) on Fashion-MNIST with BN or GN after
every convolution, trained for the same number of samples at each batch
size with SGD (momentum 0.9, weight decay 1e-4) and the learning rate
scaled linearly with the batch (lr = 0.1 B / 32), as in the paper; two
seeds per cell. For BN also the test error in train mode (the statistics of
test batches of the training batch size) against eval mode (the running
statistics).

It tests the explanation docs/normalization.md gave for batch-size, the
same comparison on a two-block CNN whose maps stay at 28 x 28 and 14 x 14:
that the claim did not reproduce there because BN averaged over hundreds of
values per channel even at batch 2.
"""
import numpy as np

from .batch_size import run  # noqa: F401 (this experiment's run: the same measurements)
from .plotting import mark_diverged, save, subplots, titled

NAME = "batch-size-resnet"
CLAIM = "in a ResNet whose last stage is 7x7, GN's error stays flat as the batch shrinks, BN's rises"
NORMS = ("bn", "gn")
BATCHES = (2, 4, 8, 16, 32)
SEEDS = (0, 1)


def grid(quick):
    if quick:
        samples, batches, seeds = 256, (4, 32), (0,)
        size = dict(n_train=2000, n_test=500)
    else:
        samples, batches, seeds = 40000, BATCHES, SEEDS
        size = dict(n_train=20000, n_test=10000)
    return [dict(data="fashion", arch="resnet8", norm=norm, batch_size=b, lr=0.1 * b / 32,
                 momentum=0.9, weight_decay=1e-4, steps=samples // b, seed=seed,
                 log_every=max(1, samples // b // 50), **size)
            for seed in seeds for norm in NORMS for b in batches]


def summarize(records):
    """Per norm and batch size: every seed's test error (eval mode; BN also train
    mode), their mean, train accuracy and divergence."""
    cells = {}
    for r in records:
        c, res = r["config"], r["result"]
        cell = cells.setdefault((c["norm"], c["batch_size"]), {
            "batch_size": c["batch_size"], "seeds": [], "test_err": [], "train_acc": [],
            "diverged": []})
        cell["seeds"].append(c["seed"])
        cell["test_err"].append(1 - res["test_acc"])
        cell["train_acc"].append(res["train_acc"])
        cell["diverged"].append(res["diverged"])
        if "test_acc_train_mode" in res:
            cell.setdefault("test_err_train_mode", []).append(1 - res["test_acc_train_mode"])
    table = {}
    for (norm, _), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        order = np.argsort(cell["seeds"])
        for key in ("seeds", "test_err", "train_acc", "diverged", "test_err_train_mode"):
            if key in cell:
                cell[key] = [cell[key][i] for i in order]
        cell["mean_test_err"] = float(np.mean(cell["test_err"]))
        if "test_err_train_mode" in cell:
            cell["mean_test_err_train_mode"] = float(np.mean(cell["test_err_train_mode"]))
        table.setdefault(norm, []).append(cell)
    return {"norms": table}


def figure(summary):
    """The figure of ``summary``: BN's and GN's test error against batch size (each
    seed a dot, the mean a line), and BN's eval mode against train mode. Returns
    a matplotlib Figure."""
    t = summary["norms"]
    fig, (ax, ax2) = subplots(1, 2, figsize=(12, 4.5))
    batches = sorted({c["batch_size"] for rows in t.values() for c in rows})
    for norm, color in (("bn", "C0"), ("gn", "C1")):
        rows = t.get(norm, [])
        b = [c["batch_size"] for c in rows]
        ax.plot(b, [100 * c["mean_test_err"] for c in rows], "-", color=color,
                label=f"{norm.upper()} (mean of seeds)")
        for c in rows:
            ax.plot([c["batch_size"]] * len(c["test_err"]), [100 * e for e in c["test_err"]],
                    "o", color=color, alpha=0.6)
            mark_diverged(ax, [c["batch_size"]] * sum(c["diverged"]),
                          [100 * e for e, d in zip(c["test_err"], c["diverged"]) if d])
    ax.set(xscale="log", xlabel="batch size (lr = 0.1 B / 32)", ylabel="test error (%)",
           title="ResNet-8, eval mode: test error against batch size")
    bn = t.get("bn", [])
    b = [c["batch_size"] for c in bn]
    ax2.plot(b, [100 * c["mean_test_err"] for c in bn], "o-",
             label="BN eval mode (running stats)")
    ax2.plot(b, [100 * c["mean_test_err_train_mode"] for c in bn], "s--",
             label="BN train mode (test-batch stats, same B)")
    ax2.set(xscale="log", xlabel="batch size", ylabel="test error (%), mean of seeds",
            title="BN: eval mode against train mode")
    for a in (ax, ax2):
        a.minorticks_off()
        a.set_xticks(batches, [str(v) for v in batches])
        a.grid(alpha=0.3)
        a.legend()
    return titled(fig, "batch-size-resnet: ResNet-8 (last stage 7x7) on Fashion-MNIST, "
                       "same number of samples per run")


def plot(summary, path):
    save(figure(summary), path)
