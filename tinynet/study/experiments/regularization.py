"""regularization: the train/test gap on a small training set.

An MLP (two hidden layers of 256) trained on 1000 images of MNIST and of
Fashion-MNIST, long enough to overfit, with: nothing, Dropout 0.2 and 0.5,
DropConnect 0.5, L2 weight decay in SGD, AdamW's decoupled weight decay,
BatchNorm, each augmentation (shift, crop, cutout, flip), and test-time
augmentation (the unregularized model evaluated on the average of its
predictions over the identity and four one-pixel shifts, and the mirror
image on Fashion-MNIST; tn.train.tta_views). Claim: each regularizer narrows
the gap between train and test accuracy, and the augmentations that suit the
data help the most.

Also classic dropout (no scaling in training, a factor 1 - p at test time)
against inverted dropout (tn.Dropout): for each, the mean activation after
the first dropout layer on test images, in training mode (averaged over 20
masks) and in eval mode. Claim: the same expected activation and the same
accuracy, with no scaling at test time for the inverted form.
"""
import numpy as np

import tinynet as tn
from ..common import load_data, public, train_run, with_defaults
from .plotting import mark_diverged, save, subplots, titled

NAME = "regularization"
CLAIM = ("regularizers narrow the train/test gap on a small training set; classic and "
         "inverted dropout give the same expected activation and accuracy")
MASKS = 20

VARIANTS = {
    "none": {},
    "dropout 0.2": {"dropout": 0.2},
    "dropout 0.5": {"dropout": 0.5},
    "dropout 0.5 (classic)": {"dropout": 0.5, "dropout_kind": "classic"},
    "dropconnect 0.5": {"dropconnect": 0.5},
    "L2 (SGD, 5e-4)": {"weight_decay": 5e-4},
    "AdamW (1e-2)": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2},
    "BN": {"norm": "bn"},
    "shift 2": {"augment": "shift"},
    "crop 28, pad 2": {"augment": "crop"},
    "cutout 8": {"augment": "cutout"},
    "flip": {"augment": "flip"},
    "TTA (eval only)": {"tta": True},
}


def grid(quick):
    size = dict(n_train=500, n_test=1000, steps=300) if quick else \
        dict(n_train=1000, n_test=10000, steps=3000)
    return [{**dict(data=data, arch="mlp", depth=2, width=256, lr=0.05, momentum=0.9,
                    log_every=50, label=name, **size), **spec}
            for data in ("mnist", "fashion") for name, spec in VARIANTS.items()]


def run(config):
    out = train_run(config)
    result = public(out)
    if config.get("tta"):
        c = with_defaults(config)
        _, _, xte, yte = load_data(c["data"], c["n_train"], c["n_test"])
        views = tn.train.tta_views((28, 28), shift=1, hflip=c["data"] == "fashion")
        result["test_acc_one_view"] = result["test_acc"]
        _, result["test_acc"] = tn.evaluate(out["_model"], tn.SoftmaxCrossEntropy(),
                                            (xte, yte), tta=views)
    if config.get("dropout", 0) > 0:
        c = with_defaults(config)
        model = out["_model"]
        _, _, xte, _ = load_data(c["data"], c["n_train"], c["n_test"])
        k = next(i for i, l in enumerate(model.layers) if isinstance(l, tn.Dropout))
        model.eval()
        h = xte[:500]
        for layer in model.layers[:k]:
            h = layer.forward(h)
        drop = model.layers[k]
        eval_mean = float(drop.forward(h).astype(np.float64).mean())
        drop.train()
        train_mean = float(np.mean([drop.forward(h).astype(np.float64).mean()
                                    for _ in range(MASKS)]))
        result["activation_mean"] = {"train": train_mean, "eval": eval_mean}
    return result


def summarize(records):
    table = {}
    for r in records:
        res = r["result"]
        table.setdefault(r["config"]["data"], {})[r["config"]["label"]] = {
            "train_acc": res["train_acc"], "test_acc": res["test_acc"],
            "gap": res["train_acc"] - res["test_acc"], "diverged": res["diverged"],
            "activation_mean": res.get("activation_mean"),
            "test_acc_one_view": res.get("test_acc_one_view")}
    return {"data": table, "variants": list(VARIANTS)}


def figure(summary):
    """The figure of ``summary``: train and test accuracy of every variant on each
    data set, with the gap; a diverged run is a red x at the end of its test bar.
    Returns a matplotlib Figure."""
    names = summary["variants"]
    fig, axes = subplots(1, 2, figsize=(15, 5))
    for ax, (data, table) in zip(axes, sorted(summary["data"].items())):
        y = range(len(names))
        ax.barh([i + 0.2 for i in y], [100 * table[n]["train_acc"] for n in names], 0.4,
                label="train")
        ax.barh([i - 0.2 for i in y], [100 * table[n]["test_acc"] for n in names], 0.4,
                label="test")
        for i, n in enumerate(names):
            ax.text(100 * table[n]["test_acc"] - 1, i - 0.2,
                    f"gap {100 * table[n]['gap']:.1f}", ha="right", va="center", fontsize=7)
        diverged = [i for i, n in enumerate(names) if table[n]["diverged"]]
        mark_diverged(ax, [100 * table[names[i]]["test_acc"] for i in diverged],
                      [i - 0.2 for i in diverged])
        lo = min(100 * table[n]["test_acc"] for n in names)
        ax.set(xlim=(max(0, lo - 15), 100.5), xlabel="accuracy (%)", title=data)
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        ax.legend(loc="lower left")
    return titled(fig, "regularization: MLP 256-256 on a small training set")


def plot(summary, path):
    save(figure(summary), path)
