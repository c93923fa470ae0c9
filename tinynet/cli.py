"""The ``tinynet`` command.

    tinynet train [--dataset mnist] [--model cnn] [--norm batch] [--epochs 5] ...
    tinynet eval RUN_DIR_OR_CHECKPOINT [--dataset D] [--data-dir DIR] [--tta]
    tinynet info
    tinynet gradcheck [--layer NAME]
    tinynet warmup [--model all] [--norm all]   (fill the kernel cache after installing)

``train`` writes to ``--out`` (default ./runs/<dataset>-<model>-<norm>):
config.json (the model and training settings), checkpoint.safetensors (every
epoch, atomically), history.json and curves.png. ``--resume`` continues from
that checkpoint (or an older checkpoint.npz) with the optimizer's state.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import backends, data, init, losses, optim
from .layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GELU,
                     GlobalAvgPool2D, GroupNorm, InstanceNorm, LayerNorm, LeakyReLU, MaxPool2D,
                     ReLU, Sigmoid, Softmax, Tanh)
from .serialization import atomic_write, remove_stale_temps
from .zoo import NORMS, build_cnn, build_mlp

# the files `tinynet train` writes into its --out directory, each atomically
RUN_FILES = ("config.json", "checkpoint.safetensors", "checkpoint.npz", "history.json",
             "curves.png")


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


def _on_images(augment, image_shape):
    """An augmentation of (N, H*W) inputs: ``augment`` applied to them as (N, H, W) images."""
    def flat(xb, rng):
        return augment(xb.reshape((len(xb),) + image_shape), rng).reshape(xb.shape)
    return flat


def _run_checkpoint(out, resume):
    """OUT/checkpoint.safetensors; OUT/checkpoint.npz when resuming a run that has only that."""
    path = os.path.join(out, "checkpoint.safetensors")
    legacy = os.path.join(out, "checkpoint.npz")
    if resume and not os.path.exists(path) and os.path.exists(legacy):
        return legacy
    return path


def _run_config(args):
    """What ``tinynet eval`` needs to rebuild the model and its inputs (config.json)."""
    return {"dataset": args.dataset, "model": args.model, "norm": args.norm,
            "num_classes": 10, "seed": args.seed, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
            "schedule": args.schedule, "shift": args.shift, "limit": args.limit}


def _write_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def build_model(config):
    """The model a run's config.json describes (``model``: cnn or mlp, ``norm``)."""
    if config.get("model") not in ("cnn", "mlp") or config.get("norm", "batch") not in NORMS:
        raise ValueError(f"config: model must be 'cnn' or 'mlp' and norm one of {NORMS}, "
                         f"got model={config.get('model')!r} norm={config.get('norm')!r}")
    build = build_cnn if config["model"] == "cnn" else build_mlp
    return build(config.get("norm", "batch"), num_classes=int(config.get("num_classes", 10)))


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
    model = build_model(_run_config(args))
    # The model lives on the backend's device; fit uploads the data once.
    model.to(backends.get_backend().DEVICE)
    model.summary(input_shape=(1,) + x_train.shape[1:])

    augment = data.RandomShift(args.shift) if args.shift else None
    if augment is not None and flatten:
        augment = _on_images(augment, (28, 28))
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
    checkpoint = _run_checkpoint(out, args.resume)
    if os.path.exists(checkpoint) and not args.resume:
        print(f"note: overwriting {checkpoint} (use --resume to continue it)", file=sys.stderr)
    for name in RUN_FILES:  # what an earlier run killed mid-write left behind
        remove_stale_temps(os.path.join(out, name))
    config = _run_config(args)
    _write_json(os.path.join(out, "config.json"), config)

    written = []

    def write_outputs(history):
        history.save(os.path.join(out, "history.json"))
        from .plots import plot_history
        plot_history(history, os.path.join(out, "curves.png"),
                     title=f"{args.dataset} {args.model} norm={args.norm}")
        written.append(len(history))

    from .train import fit
    t0 = time.perf_counter()
    history = fit(model, losses.SoftmaxCrossEntropy(label_smoothing=args.label_smoothing),
                  optimizer, loader, epochs=args.epochs, val_data=(x_test, y_test),
                  scheduler=scheduler, checkpoint=checkpoint, resume=args.resume,
                  progress=not args.quiet, on_epoch_end=write_outputs, config=config)
    wall = time.perf_counter() - t0
    if not written:  # a resumed run that was already complete: outputs from its checkpoint
        write_outputs(history)
    final = history.records[-1]
    print(json.dumps({"test_acc": final["val_acc"], "test_loss": final["val_loss"],
                      "epochs": len(history), "wall_s": round(wall, 1),
                      "backend": backends.backend_name(), "out": out}))
    return 0


def _resolve_run(target):
    """(checkpoint path, config dict) of a run directory or a checkpoint file.

    A directory holds config.json and checkpoint.safetensors (or an older
    checkpoint.npz). A file is a training checkpoint (its config is inside,
    or in config.json beside it) or a model file from ``model.save`` with a
    config.json beside it.
    """
    from .serialization import read_tensors
    from .train import read_checkpoint
    if os.path.isdir(target):
        candidates = [os.path.join(target, f"checkpoint{ext}") for ext in (".safetensors", ".npz")]
        found = [c for c in candidates if os.path.isfile(c)]
        if not found:
            raise FileNotFoundError(f"{target}: no checkpoint.safetensors or checkpoint.npz "
                                    f"(is it the --out directory of `tinynet train`?)")
        path = found[0]
    elif os.path.isfile(target):
        path = target
    else:
        raise FileNotFoundError(f"{target}: no such run directory or checkpoint file")
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    config = {}
    if os.path.isfile(config_path):
        with open(config_path) as f:
            try:
                config = json.load(f)
            except ValueError as e:
                raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    _, metadata = read_tensors(path)
    is_checkpoint = metadata.get("format") == "tinynet-checkpoint" or "history" in metadata
    if is_checkpoint and not config:
        config = read_checkpoint(path)["config"]
    if not config:
        raise ValueError(f"{path}: no model config; expected {config_path} as `tinynet train` "
                         f"writes it")
    return path, config, is_checkpoint


def _conv_feature_maps(model, x):
    """Activations of one input x (1, C, H, W) after each Conv2D block.

    A block is the Conv2D and the normalizations and activations that follow
    it, up to the next pooling, conv or reshape layer. x is on the model's
    device. Returns a list of host (C_l, H_l, W_l) arrays and a list of the
    blocks' layer names.
    """
    from .layers import GELU, BatchNorm, GroupNorm, InstanceNorm, LayerNorm, LeakyReLU
    pointwise = (BatchNorm, GroupNorm, InstanceNorm, LayerNorm, ReLU, LeakyReLU, GELU,
                 Sigmoid, Tanh)
    maps, names = [], []
    in_block = False
    for layer in model.layers:
        x = layer.forward(x)
        if isinstance(layer, Conv2D):
            maps.append(backends.to_host(x[0]))
            names.append(layer.name)
            in_block = True
        elif in_block and isinstance(layer, pointwise):
            maps[-1] = backends.to_host(x[0])
            names[-1] += "-" + layer.name
        else:
            in_block = False
    return maps, names


def cmd_eval(args):
    from .plots import (
        plot_confusion,
        plot_feature_maps,
        plot_filters,
        plot_misclassified,
    )
    from .train import _EvalMode, load_checkpoint, predict, tta_views
    if args.backend != "auto":
        backends.set_backend(args.backend)
    path, config, is_checkpoint = _resolve_run(args.target)
    dataset = args.dataset or config.get("dataset", "mnist")
    model = build_model(config)
    if is_checkpoint:
        load_checkpoint(path, model)
    else:
        model.load(path)
    backend = backends.get_backend()
    model.to(backend.DEVICE)
    images, labels = (data.load_mnist if dataset == "mnist" else data.load_fashion_mnist)(
        "test", root=args.data_dir)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    x = data.prepare_images(images, flatten=config["model"] == "mlp")
    views = None
    if args.tta:  # mirror images only where the classes are mirror symmetric
        views = tta_views(images.shape[1:], shift=1, hflip=dataset == "fashion-mnist")
    probs = predict(model, x, batch_size=256, tta=views)
    n, K = probs.shape
    pred = probs.argmax(axis=1)
    loss = float(-np.mean(np.log(np.maximum(probs[np.arange(n), labels], 1e-300))))
    acc = float(np.mean(pred == labels))
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    names = data.CLASS_NAMES[dataset]

    out = os.path.dirname(os.path.abspath(path))
    label = f"{dataset} test{' with TTA' if args.tta else ''}"
    suffix = "-tta" if args.tta else ""
    figures = {"confusion": plot_confusion(confusion,
                                           os.path.join(out, f"confusion{suffix}.png"),
                                           names, title=f"{label}: confusion matrix"),
               "misclassified": os.path.join(out, f"misclassified{suffix}.png")}
    plot_misclassified(images, labels, probs, figures["misclassified"], names,
                       title=f"{label}: most confidently misclassified")
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    if convs:
        figures["filters"] = plot_filters(backends.to_host(convs[0].weight.data),
                                          os.path.join(out, "filters.png"))
        with _EvalMode(model):
            maps, block_names = _conv_feature_maps(model, backend.asarray(x[:1]))
        figures["feature_maps"] = plot_feature_maps(
            images[0], maps, os.path.join(out, "feature_maps.png"), names=block_names,
            title=f"feature maps of test image 0 (a {names[labels[0]]})")

    print(f"{path}: {config['model']} norm={config.get('norm')} on {label}, "
          f"{n} images, backend {backends.backend_name()}")
    print(f"test loss {loss:.4f}  accuracy {100 * acc:.2f}%")
    width = max(len(name) for name in names)
    for k, name in enumerate(names):
        print(f"  {name:<{width}}  {100 * per_class[k]:6.2f}%  "
              f"({confusion[k, k]}/{confusion[k].sum()})")
    for what, fig in figures.items():
        print(f"{what}: {fig}")
    result = {"test_loss": loss, "test_acc": acc, "tta": bool(args.tta), "dataset": dataset,
              "images": n, "per_class_acc": {name: float(a) for name, a in zip(names, per_class)},
              "confusion": confusion.tolist(), "figures": figures}
    _write_json(os.path.join(out, f"eval{suffix}.json"), result)
    print(json.dumps({"test_loss": round(loss, 6), "test_acc": acc, "tta": bool(args.tta)}))
    return 0


def cmd_info(args):
    from .info import collect, format_info
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
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
            print(f"{name:<16}{row['name']:<10}{row['shape']!s:<16}"
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
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.safetensors (or an older OUT/checkpoint.npz)")
    t.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto",
                   help="kernel backend (default: the fastest available)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained model and draw what it gets wrong")
    e.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a `tinynet train` --out directory, or a checkpoint file in one")
    e.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default=None,
                   help="test set (default: the one the run trained on)")
    e.add_argument("--data-dir", default=None,
                   help="dataset root (default: $TINYNET_DATA_DIR, then ~/.cache/tinynet)")
    e.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto")
    e.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over the identity and 1-pixel "
                        "shifts (and the mirror image on fashion-mnist)")
    e.add_argument("--limit", type=int, default=0, help="evaluate the first N test images only")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="versions, backends, threads, BLAS, kernel cache, data sets")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(func=cmd_info)

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

    from .study.cli import add_parser as add_study_parser
    add_study_parser(sub)
    return parser


def main(argv=None):
    """Run one command; returns its exit code.

    A command's ``--backend`` holds for that command only: the backend that
    was active before is restored afterwards, so that ``main`` called from
    Python (a notebook, a test) leaves the process's backend as it was.
    """
    args = make_parser().parse_args(argv)
    previous = backends.get_backend().NAME
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError, TypeError) as e:
        print(f"tinynet: error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:  # a checkpoint's missing or unexpected key
        print(f"tinynet: error: {e.args[0]}", file=sys.stderr)
        return 1
    finally:
        backends.set_backend(previous)


if __name__ == "__main__":
    sys.exit(main())
