"""What the experiments share: data, model builders, one training run, evaluation.

Every function here is a pure function of its arguments: a run seeds the
initializers, the layers' masks and the data order from its config, so the
same config gives the same result in any process.

A config for ``train_run`` is a dict with

    data        "mnist", "fashion" or "synthetic" (a fixed random problem for tests)
    n_train     training samples used (the first n of a fixed permutation)
    n_test      test samples used
    arch        "mlp", "cnn" or "resnetD" (the zoo's ResNet of depth D = 6n+2, e.g.
                "resnet8"; norm "bn", "gn", "ln", "in" or "none", as the zoo builds
                them; depth, width, init_scale and the dropouts do not apply)
    norm        "none", "bn", "bn_nostats", "bn_cma", "noisy_bn", "gn", "ln", "in",
                "wn" or "wn_mbn" (WeightNorm with mean-only BatchNorm)
    act         "relu" or "sigmoid"
    depth, width   MLP: hidden layers and their width; CNN: conv blocks and channels
    init_scale  factor on the initial weights (He uniform, INIT)
    optimizer   "sgd" or "adamw"; lr, momentum, weight_decay, batch_size
    steps       training steps (mini-batches)
    dropout, dropconnect   drop probabilities (0 = none), MLP hidden layers
    dropout_kind "inverted" (tn.Dropout) or "classic" (ClassicDropout)
    augment     "none", "shift", "crop", "cutout" or "flip"
    tta         evaluate with test-time augmentation (regularization only; no
                effect on training)
    bn_momentum BatchNorm's momentum (None = cumulative average)
    seed        the run's seed
    log_every   record the training loss every k steps
    label       a free-form name of the variant, for the summaries (no effect on training)
"""
import time

import numpy as np

import tinynet as tn
from .. import zoo
from .measure import linear_layers, restore, snapshot

_DATA = {}
# The study's initialization, named (not the layers' default): He uniform, zero biases.
INIT = "he_uniform"

DEFAULTS = {"data": "mnist", "n_train": 10000, "n_test": 2000, "arch": "mlp", "norm": "none",
            "act": "relu", "depth": 2, "width": 64, "init_scale": 1.0, "optimizer": "sgd",
            "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64, "steps": 200,
            "dropout": 0.0, "dropconnect": 0.0, "augment": "none", "bn_momentum": 0.1,
            "seed": 0, "log_every": 10, "label": "", "dropout_kind": "inverted", "tta": False}


class ClassicDropout(tn.Dropout):
    """Dropout as first published: no scaling in training, a factor 1 - p in eval.

    Srivastava et al. 2014 (https://jmlr.org/papers/v15/srivastava14a.html):

        training:  y = x * keep,        dx = dy * keep
        eval:      y = (1 - p) * x,     dx = (1 - p) * dy

    so E[y] in training equals y in eval, as with inverted dropout (tn.Dropout,
    y = x * keep / (1 - p) in training, y = x in eval); the two differ by the
    constant factor 1 - p in both modes. Built on tn.Dropout's mask.
    """

    def forward(self, x):
        return super().forward(x) * x.dtype.type(1.0 - self.p)

    def backward(self, dy):
        dx = super().backward(dy)
        return None if dx is None else dx * dx.dtype.type(1.0 - self.p)


def with_defaults(config):
    """``config`` completed with DEFAULTS; unknown keys are an error."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"study config: unknown keys {sorted(unknown)}")
    return {**DEFAULTS, **config}


def load_data(name, n_train, n_test):
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 28, 28) images, int64 labels.

    "mnist" and "fashion" are the real sets (normalized by the training mean
    and std), subsampled by a fixed permutation; "synthetic" is a random
    10-class problem whose label is the argmax of a fixed linear map of x.
    Cached per process.
    """
    key = (name, n_train, n_test)
    if key in _DATA:
        return _DATA[key]
    if name == "synthetic":
        rng = np.random.default_rng(12345)
        x = rng.standard_normal((n_train + n_test, 1, 28, 28)).astype(np.float32)
        w = rng.standard_normal((784, 10))
        y = np.argmax(x.reshape(len(x), -1) @ w, axis=1).astype(np.int64)
        out = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    elif name in ("mnist", "fashion"):
        load = tn.data.load_mnist if name == "mnist" else tn.data.load_fashion_mnist
        xtr, ytr = load("train")
        xte, yte = load("test")
        mean, std = xtr.mean() / 255.0, xtr.std() / 255.0
        itr = np.random.default_rng(0).permutation(len(xtr))[:n_train]
        ite = np.random.default_rng(1).permutation(len(xte))[:n_test]
        out = (tn.data.prepare_images(xtr[itr], mean, std), ytr[itr].astype(np.int64),
               tn.data.prepare_images(xte[ite], mean, std), yte[ite].astype(np.int64))
    else:
        raise ValueError(f"study: unknown data set {name!r}")
    _DATA[key] = out
    return out


def _act(name):
    return {"relu": tn.ReLU, "sigmoid": tn.Sigmoid}[name]()


def _norm_after(norm, features, spatial, seed, momentum):
    """The normalization layers that follow a linear layer of ``features`` outputs."""
    if norm in ("none", "wn"):
        return []
    if norm == "bn":
        return [tn.BatchNorm(features, momentum=momentum)]
    if norm == "bn_cma":
        return [tn.BatchNorm(features, momentum=None)]
    if norm == "bn_nostats":
        return [tn.BatchNorm(features, track_running_stats=False)]
    if norm == "noisy_bn":
        return [tn.BatchNorm(features, momentum=momentum),
                tn.RandomAffineNoise(features, shift=0.5, scale=2.0, seed=seed)]
    if norm == "wn_mbn":
        return [tn.MeanOnlyBatchNorm(features, momentum=momentum)]
    if norm == "gn":
        return [tn.GroupNorm(min(4, features), features)]
    if norm == "ln":
        return [tn.LayerNorm((features,) + ((spatial, spatial) if spatial else ()))]
    if norm == "in":
        if not spatial:
            raise ValueError("study: InstanceNorm needs a CNN")
        return [tn.InstanceNorm(features)]
    raise ValueError(f"study: unknown norm {norm!r}")


def _linear(layer, norm):
    return tn.WeightNorm(layer) if norm in ("wn", "wn_mbn") else layer


def build_model(c):
    """The Sequential that config ``c`` describes (seeded by ``c["seed"]``)."""
    tn.init.seed(c["seed"])
    norm, layers = c["norm"], []
    seed = c["seed"] * 1000 + 1
    if c["arch"] == "mlp":
        layers.append(tn.Flatten())
        fan_in = 784
        for i in range(c["depth"]):
            dense = tn.Dense(fan_in, c["width"], bias=norm not in ("bn", "bn_cma", "bn_nostats"),
                             init=INIT)
            if c["dropconnect"] > 0:
                layers.append(tn.DropConnect(dense, c["dropconnect"], seed=seed + i))
            else:
                layers.append(_linear(dense, norm))
            layers += _norm_after(norm, c["width"], 0, seed + 100 + i, c["bn_momentum"])
            layers.append(_act(c["act"]))
            if c["dropout"] > 0:
                kind = {"inverted": tn.Dropout, "classic": ClassicDropout}[c["dropout_kind"]]
                layers.append(kind(c["dropout"], seed=seed + 200 + i))
            fan_in = c["width"]
        layers.append(_linear(tn.Dense(fan_in, 10, init=INIT), norm))
    elif c["arch"].startswith("resnet") and c["arch"][6:].isdigit():
        zoo_norm = {"bn": "batch", "gn": "group", "ln": "layer", "in": "instance",
                    "none": "none"}
        if norm not in zoo_norm:
            raise ValueError(f"study: a {c['arch']} takes a norm in {', '.join(zoo_norm)}, "
                             f"got {norm!r}")
        if c["bn_momentum"] != DEFAULTS["bn_momentum"]:
            raise ValueError(f"study: a {c['arch']} keeps BatchNorm's momentum "
                             f"{DEFAULTS['bn_momentum']}, got bn_momentum={c['bn_momentum']}")
        return zoo.build_resnet(int(c["arch"][6:]), zoo_norm[norm])
    elif c["arch"] == "cnn":
        channels, size = 1, 28
        for i in range(c["depth"]):
            conv = tn.Conv2D(channels, c["width"], 3, padding=1, init=INIT)
            layers.append(_linear(conv, norm))
            layers += _norm_after(norm, c["width"], size, seed + 100 + i, c["bn_momentum"])
            layers += [_act(c["act"]), tn.MaxPool2D(2)]
            channels, size = c["width"], size // 2
        layers += [tn.Flatten(), _linear(tn.Dense(channels * size * size, 10, init=INIT), norm)]
    else:
        raise ValueError(f"study: unknown arch {c['arch']!r}")
    model = tn.Sequential(*layers)
    if c["init_scale"] != 1.0:
        # Scale every linear layer's weight (for WeightNorm its length g).
        for layer in linear_layers(model):
            p = layer.weight_g if isinstance(layer, tn.WeightNorm) else layer.weight
            p.data *= np.float32(c["init_scale"])
    return model


AUGMENTS = {"none": None, "shift": tn.data.RandomShift(2), "crop": tn.data.RandomCrop(28, 2),
            "cutout": tn.data.Cutout(8), "flip": tn.data.HorizontalFlip(0.5)}


def make_optimizer(model, c):
    """The optimizer of config ``c`` over the model's parameters."""
    if c["optimizer"] == "sgd":
        return tn.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                            weight_decay=c["weight_decay"])
    if c["optimizer"] == "adamw":
        return tn.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    raise ValueError(f"study: unknown optimizer {c['optimizer']!r}")


def batches(c, x, y):
    """An endless iterator of shuffled, augmented training batches, seeded by the config."""
    loader = tn.data.DataLoader(x, y, batch_size=c["batch_size"], shuffle=True,
                                seed=c["seed"], drop_last=True, augment=AUGMENTS[c["augment"]])
    while True:
        yield from loader


def accuracy(model, x, y, batch_size=500, train_mode=False):
    """Accuracy and mean loss of ``model`` on (x, y), in eval mode unless ``train_mode``.

    In train mode the batch statistics are used and the running statistics
    are restored afterwards.
    """
    saved = snapshot(model)
    model.train(train_mode)
    loss_fn = tn.SoftmaxCrossEntropy()
    correct = loss = 0.0
    for s in range(0, len(x), batch_size):
        logits = model.forward(x[s:s + batch_size])
        loss += loss_fn.forward(logits, y[s:s + batch_size]) * len(logits)
        correct += float(np.sum(np.argmax(logits, axis=1) == y[s:s + batch_size]))
    model.train(True)
    restore(model, saved)
    return correct / len(x), loss / len(x)


def train_step(model, loss_fn, opt, xb, yb):
    """One SGD step; returns the loss (float)."""
    loss = loss_fn.forward(model.forward(xb), yb)
    model.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
    return float(loss)


def train_run(config, hook=None):
    """Train the model of ``config`` for ``steps`` steps and evaluate it.

    Parameters
    ----------
    config : dict
        See the module docstring; missing keys take DEFAULTS.
    hook : callable, optional
        ``hook(step, model, xb, yb)`` before each step (for measurements).

    Returns
    -------
    dict
        "steps" and "loss" (the training loss every ``log_every`` steps),
        "wall" (seconds spent in training steps up to those steps, without
        the hook's measurements), "train_acc",
        "test_acc", "test_loss", "diverged" (a NaN or inf loss), "threads"
        (numba and BLAS thread counts), and the model
        under "_model" (removed before a result is stored).
    """
    c = with_defaults(config)
    xtr, ytr, xte, yte = load_data(c["data"], c["n_train"], c["n_test"])
    model = build_model(c)
    opt = make_optimizer(model, c)
    loss_fn = tn.SoftmaxCrossEntropy()
    it = batches(c, xtr, ytr)
    log_steps, losses, wall = [], [], []
    seconds = 0.0
    diverged = False
    for step in range(c["steps"]):
        xb, yb = next(it)
        if hook is not None:
            hook(step, model, xb, yb)
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            loss = train_step(model, loss_fn, opt, xb, yb)
        seconds += time.perf_counter() - t0
        if not np.isfinite(loss):
            diverged = True
        if step % c["log_every"] == 0 or step == c["steps"] - 1:
            log_steps.append(step)
            losses.append(loss)
            wall.append(seconds)
        if diverged:
            break
    out = {"steps": log_steps, "loss": losses, "wall": wall, "diverged": diverged,
           "threads": tn.get_num_threads(), "_model": model}
    # A diverged model is evaluated as it is (NaN logits count as class 0).
    with np.errstate(all="ignore"):
        out["train_acc"], _ = accuracy(model, xtr[:2000], ytr[:2000])
        out["test_acc"], out["test_loss"] = accuracy(model, xte, yte)
    return out


def public(result):
    """``result`` without the keys that start with "_" (the model), for storing."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def mean_curves(curves):
    """The mean over runs of curves that may end early (a diverged run stops).

    Parameters
    ----------
    curves : list of sequences, each of shape (T_i, ...)
        One per run; the trailing shape is the same for all.

    Returns
    -------
    list
        Shape (T, ...), T = min(T_i): the mean where every run has a value.
    """
    n = min(len(c) for c in curves)
    return np.mean([np.asarray(c, dtype=float)[:n] for c in curves], axis=0).tolist()


def run_train(config):
    """``train_run`` as a grid function: the stored (JSON) part of its result."""
    return public(train_run(config))
