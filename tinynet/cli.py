"""The ``tinynet`` command.

    tinynet train [--dataset mnist] [--model cnn] [--norm batch] [--epochs 5] ...
    tinynet gradcheck [--layer NAME]
    tinynet warmup [--model all] [--norm all]   (fill the kernel cache after installing)

``train`` writes to ``--out`` (default ./runs/<dataset>-<model>-<norm>):
checkpoint.npz (every epoch, atomically), history.json and curves.png.
``--resume`` continues from that checkpoint with the optimizer's state.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import backends, data, init, losses, optim
from .layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, GELU, GlobalAvgPool2D,
                     GroupNorm, InstanceNorm, LayerNorm, LeakyReLU, MaxPool2D, AvgPool2D,
                     ReLU, Sigmoid, Softmax, Tanh)
from .model import Sequential

NORMS = ("batch", "layer", "instance", "group", "none")


def _norm_2d(kind, channels, spatial):
    """A normalization for (N, channels, H, W) feature maps, or None."""
    if kind == "batch":
        return BatchNorm(channels)
    if kind == "layer":
        return LayerNorm((channels,) + spatial)
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "group":
        return GroupNorm(8, channels)
    return None


def _norm_1d(kind, features):
    """A normalization for (N, features) activations, or None."""
    if kind == "batch":
        return BatchNorm(features)
    if kind == "layer":
        return LayerNorm(features)
    if kind == "group":
        return GroupNorm(8, features)
    return None  # instance norm has no meaning for a feature vector


def build_cnn(norm="batch", num_classes=10, dropout=0.5):
    """The reference CNN for 1x28x28 images.

    conv32-norm-relu-pool, conv64-norm-relu-pool, dense128-relu, dropout, dense10.
    Shapes: (N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128) -> (N, 10).
    """
    layers = [Conv2D(1, 32, 3, padding=1), _norm_2d(norm, 32, (28, 28)), ReLU(), MaxPool2D(2),
              Conv2D(32, 64, 3, padding=1), _norm_2d(norm, 64, (14, 14)), ReLU(), MaxPool2D(2),
              Flatten(), Dense(64 * 7 * 7, 128), ReLU(), Dropout(dropout), Dense(128, num_classes)]
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False  # the images need no gradient
    return model


def build_mlp(norm="batch", num_classes=10, hidden=256, dropout=0.2):
    """An MLP for flattened images: (N, 784) -> 256 -> 256 -> (N, 10)."""
    layers = []
    width = 28 * 28
    for _ in range(2):
        layers += [Dense(width, hidden), _norm_1d(norm, hidden), ReLU(), Dropout(dropout)]
        width = hidden
    layers.append(Dense(width, num_classes))
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False
    return model


def _load_dataset(name, data_dir):
    loader = data.load_mnist if name == "mnist" else data.load_fashion_mnist
    return loader("train", root=data_dir), loader("test", root=data_dir)


def _make_optimizer(args, params):
    if args.optimizer == "sgd":
        return optim.SGD(params, lr=args.lr, momentum=0.9, nesterov=True,
                         weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay or 1e-2)


def cmd_train(args):
    if args.backend != "auto":
        backends.set_backend(args.backend)
    print(f"backend: {backends.backend_name()}", file=sys.stderr)
    init.seed(args.seed)
    (x_train, y_train), (x_test, y_test) = _load_dataset(args.dataset, args.data_dir)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    if args.val_limit:
        x_test, y_test = x_test[:args.val_limit], y_test[:args.val_limit]
    flatten = args.model == "mlp"
    x_train = data.prepare_images(x_train, flatten=flatten)
    x_test = data.prepare_images(x_test, flatten=flatten)
    model = build_cnn(args.norm) if args.model == "cnn" else build_mlp(args.norm)
    # The model lives on the backend's device; fit uploads the data once.
    model.to(backends.get_backend().DEVICE)
    model.summary(input_shape=(1,) + x_train.shape[1:])

    augment = data.RandomShift(args.shift) if args.shift else None
    loader = data.DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                             seed=args.seed, augment=augment)
    optimizer = _make_optimizer(args, model.parameters())
    scheduler = None
    if args.schedule == "cosine":
        total = args.epochs * len(loader)
        scheduler = optim.CosineWarmup(optimizer, warmup_steps=min(200, total // 10),
                                       total_steps=total)
    elif args.schedule == "step":
        scheduler = optim.StepLR(optimizer, step_size=len(loader), gamma=0.5)

    out = args.out or os.path.join("runs", f"{args.dataset}-{args.model}-{args.norm}")
    os.makedirs(out, exist_ok=True)
    checkpoint = os.path.join(out, "checkpoint.npz")
    if os.path.exists(checkpoint) and not args.resume:
        print(f"note: overwriting {checkpoint} (use --resume to continue it)", file=sys.stderr)

    def write_outputs(history):
        history.save(os.path.join(out, "history.json"))
        from .plots import plot_history
        plot_history(history, os.path.join(out, "curves.png"),
                     title=f"{args.dataset} {args.model} norm={args.norm}")

    from .train import fit
    t0 = time.perf_counter()
    history = fit(model, losses.SoftmaxCrossEntropy(label_smoothing=args.label_smoothing),
                  optimizer, loader, epochs=args.epochs, val_data=(x_test, y_test),
                  scheduler=scheduler, checkpoint=checkpoint, resume=args.resume,
                  progress=not args.quiet, on_epoch_end=write_outputs)
    wall = time.perf_counter() - t0
    final = history.records[-1]
    print(json.dumps({"test_acc": final["val_acc"], "test_loss": final["val_loss"],
                      "epochs": len(history), "wall_s": round(wall, 1),
                      "backend": backends.backend_name(), "out": out}))
    return 0


def _gradcheck_cases():
    """name -> (layer factory, input shape), tiny odd shapes as in the tests."""
    return {
        "Dense": (lambda: Dense(7, 5), (3, 7)),
        "Conv2D": (lambda: Conv2D(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
        "MaxPool2D": (lambda: MaxPool2D(2), (2, 3, 6, 6)),
        "AvgPool2D": (lambda: AvgPool2D(3, stride=2), (2, 3, 7, 7)),
        "GlobalAvgPool2D": (GlobalAvgPool2D, (2, 3, 5, 5)),
        "Flatten": (Flatten, (2, 3, 4)),
        "ReLU": (ReLU, (3, 7)),
        "LeakyReLU": (lambda: LeakyReLU(0.1), (3, 7)),
        "Sigmoid": (Sigmoid, (3, 7)),
        "Tanh": (Tanh, (3, 7)),
        "GELU": (GELU, (3, 7)),
        "Softmax": (Softmax, (3, 7)),
        "Dropout": (lambda: Dropout(0.3, seed=1), (3, 7)),
        "BatchNorm": (lambda: BatchNorm(6), (3, 6, 5, 5)),
        "LayerNorm": (lambda: LayerNorm((6, 5, 5)), (3, 6, 5, 5)),
        "InstanceNorm": (lambda: InstanceNorm(6), (3, 6, 5, 5)),
        "GroupNorm": (lambda: GroupNorm(3, 6), (3, 6, 5, 5)),
    }


def _gradcheck_input(name, shape, rng):
    """A random input; for max-pool, distinct values so each window has one max;
    for ReLU-like layers, values away from the kink at 0."""
    if name == "MaxPool2D":
        return rng.permutation(np.prod(shape)).reshape(shape) / 10.0
    x = rng.standard_normal(shape)
    if name in ("ReLU", "LeakyReLU"):
        x += np.sign(x) * 0.1
    return x


def cmd_gradcheck(args):
    from .gradcheck import gradcheck
    cases = _gradcheck_cases()
    names = list(cases)
    if args.layer:
        if args.layer not in cases:
            print(f"unknown layer {args.layer!r}; choose one of: {', '.join(names)}",
                  file=sys.stderr)
            return 2
        names = [args.layer]
    rng = np.random.default_rng(0)
    header = f"{'layer':<16}{'tensor':<10}{'shape':<16}{'max rel err':>12}  result"
    print(header)
    print("-" * len(header))
    failed = 0
    for name in names:
        factory, shape = cases[name]
        result = gradcheck(factory(), _gradcheck_input(name, shape, rng), tol=args.tol)
        for row in result.rows:
            print(f"{name:<16}{row['name']:<10}{str(row['shape']):<16}"
                  f"{row['max_rel_err']:>12.2e}  {'ok' if row['passed'] else 'FAIL'}")
        failed += not result.passed
    print(f"{len(names) - failed}/{len(names)} layers passed (tol {args.tol:g}, float64, "
          f"backend {backends.backend_name()})")
    return 1 if failed else 0


def cmd_warmup(args):
    """Compile the kernels of ``tinynet train``'s models into the cache (tinynet.warmup)."""
    from .warmup import warmup
    backends.set_backend("cpu")
    norms = NORMS if args.norm == "all" else (args.norm,)
    builders = {"cnn": (build_cnn, (1, 28, 28)), "mlp": (build_mlp, (28 * 28,))}
    models = ("cnn", "mlp") if args.model == "all" else (args.model,)
    total = 0.0
    for name in models:
        build, shape = builders[name]
        for norm in norms:
            x = np.zeros((args.batch_size,) + shape, dtype=np.float32)
            report = warmup(build(norm), x, losses.SoftmaxCrossEntropy(), optim.Adam,
                            workers=args.workers)
            total += report["seconds"]
            print(f"{name} norm={norm}: {report['seconds']:.1f} s ({report['workers']} processes)")
    print(f"kernels cached in {total:.1f} s")
    return 0


def make_parser():
    parser = argparse.ArgumentParser(prog="tinynet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on MNIST or Fashion-MNIST")
    t.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    t.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    t.add_argument("--norm", choices=NORMS, default="batch")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--schedule", choices=("cosine", "step", "none"), default="cosine")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--shift", type=int, default=0,
                   help="augment: shift images by up to this many pixels")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="train on the first N images only")
    t.add_argument("--val-limit", type=int, default=0,
                   help="evaluate on the first N test images only")
    t.add_argument("--data-dir", default=None,
                   help="dataset root (default: $TINYNET_DATA_DIR, then ~/.cache/tinynet)")
    t.add_argument("--out", default=None, help="output directory")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    t.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto",
                   help="kernel backend (default: the fastest available)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("gradcheck", help="check every layer's backward numerically")
    g.add_argument("--layer", default=None, help="check only this layer (class name)")
    g.add_argument("--tol", type=float, default=1e-6)
    g.set_defaults(func=cmd_gradcheck)

    w = sub.add_parser("warmup", help="compile the cpu kernels of the train models into the cache")
    w.add_argument("--model", choices=("cnn", "mlp", "all"), default="all")
    w.add_argument("--norm", choices=NORMS + ("all",), default="all")
    w.add_argument("--batch-size", type=int, default=64)
    w.add_argument("--workers", type=int, default=None,
                   help="processes compiling at once (default: one per CPU)")
    w.set_defaults(func=cmd_warmup)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"tinynet: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
