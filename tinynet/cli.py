"""The ``tinynet`` command.

    tinynet train [--dataset mnist] [--model cnn] [--norm batch] [--epochs 5] ... [--out DIR]
    tinynet eval RUN_DIR_OR_FILE [--dataset D] [--data-dir DIR] [--tta] [--no-plots]
    tinynet models
    tinynet info [--json]
    tinynet gradcheck [--layer NAME]
    tinynet warmup [--model all] [--norm all]   (fill the kernel cache after installing)
    tinynet speedrun [--seeds 0 1 ...] [--json]  (the public MNIST speedrun recipe, timed)
    tinynet study NAME ...
    tinynet --version

``train`` writes one run into ``--out`` (default ./runs/<dataset>-<model>-<norm>;
tinynet/run.py says what the directory holds and guarantees). It holds out
``--val-split`` training images as the validation set, reports them every
epoch, and measures the test set once, at the end.

Exit codes: 0 done; 1 a user error (a file, setting or value; one line
``tinynet: error: ...``); 2 a bad command line (argparse's usage message);
3 refused: the run directory is in use, holds another run, or a resume
differs from its run (nothing was written); 70 a bug in tinynet (with a
traceback); 130 interrupted (Ctrl-C); 141 the output pipe was closed.
"""
import argparse
import functools
import json
import math
import os
import shlex
import sys
import time
import traceback

import numpy as np

from . import backends, data, init, losses, optim, zoo
from .checkpoint import find_checkpoint, load_model, read_checkpoint
from .layers import Conv2D, Dense, LeakyReLU, ReLU, Sigmoid, Tanh
from .layers.base import layer_to_config
from .run import (LATER_SETTINGS, RUN_FILES, RunDir, RunRefused, check_settings, read_config,
                  resume_differences, write_json)
from .serialization import CheckpointError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
EXIT_BUG, EXIT_INTERRUPTED, EXIT_PIPE = 70, 130, 141
# The validation set is the same for every run of a data set: drawn with this seed,
# not --seed, so that runs of different seeds are compared on the same images.
SPLIT_SEED = 0

__all__ = ["main", "make_parser", "RUN_FILES", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE",
           "EXIT_REFUSED", "EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_PIPE"]


# -- argument values --------------------------------------------------------------
def _int_in(low, high=None):
    """An argparse type: an int in [low, high]."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value
    return parse


def _float_in(low, high, low_open=False, high_open=False):
    """An argparse type: a finite float in the interval."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        ok = (math.isfinite(value) and (value > low if low_open else value >= low)
              and (value < high if high_open else value <= high))
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text}")
        return value
    return parse


# -- train ----------------------------------------------------------------------------
def _load_dataset(name, data_dir):
    loader = data.load_mnist if name == "mnist" else data.load_fashion_mnist
    return loader("train", root=data_dir), loader("test", root=data_dir)


def _settings(args):
    """Every setting of ``tinynet train`` that affects its result (config.json)."""
    weight_decay = args.weight_decay
    if weight_decay is None:
        weight_decay = 1e-2 if args.optimizer == "adamw" else 0.0
    return {"dataset": args.dataset, "model": args.model, "norm": args.norm, "num_classes": 10,
            "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "optimizer": args.optimizer, "weight_decay": weight_decay,
            "schedule": args.schedule, "label_smoothing": args.label_smoothing,
            "shift": args.shift, "flip": args.flip, "limit": args.limit, "val_split": args.val_split,
            "split_seed": SPLIT_SEED, "test_limit": args.test_limit,
            "normalization": [float(v) for v in data.NORMALIZATION[args.dataset]]}


def _make_optimizer(settings, params):
    lr, wd = settings["lr"], settings["weight_decay"]
    if settings["optimizer"] == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if settings["optimizer"] == "adam":
        return optim.Adam(params, lr=lr, weight_decay=wd)
    return optim.AdamW(params, lr=lr, weight_decay=wd)


def _make_scheduler(settings, optimizer, steps_per_epoch):
    """cosine: warm-up then cosine decay over the whole run; step: lr halves every epoch."""
    if settings["schedule"] == "cosine":
        total = settings["epochs"] * steps_per_epoch
        return optim.CosineWarmup(optimizer, warmup_steps=min(200, total // 10),
                                  total_steps=total)
    if settings["schedule"] == "step":
        return optim.StepLR(optimizer, step_size=steps_per_epoch, gamma=0.5)
    return None


def _augment(settings, flatten):
    """The training augmentation of ``settings`` (None without one); ``flatten``: the
    inputs are (N, 784) rows of 28 x 28 images."""
    augments = ([data.RandomShift(settings["shift"])] if settings["shift"] else []) + \
        ([data.HorizontalFlip(0.5)] if settings["flip"] else [])
    if not augments:
        return None
    augment = data.Compose(*augments)
    return _OnImages(augment, (28, 28)) if flatten else augment


class _OnImages:
    """An augmentation of (N, H*W) inputs: ``augment`` applied to them as (N, H, W) images."""

    def __init__(self, augment, image_shape):
        self.augment, self.image_shape = augment, tuple(image_shape)

    def __call__(self, xb, rng):
        return self.augment(xb.reshape((len(xb),) + self.image_shape), rng).reshape(xb.shape)

    def __repr__(self):
        return f"OnImages({self.augment!r}, {self.image_shape})"


def _split(x, y, size):
    """(train, validation): ``size`` images drawn with SPLIT_SEED, both kept in file order."""
    if size >= len(x):
        raise ValueError(f"--val-split {size} leaves no training images (the training set "
                         f"has {len(x)})")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    val, train = np.sort(order[:size]), np.sort(order[size:])
    return (x[train], y[train]), (x[val], y[val])


def _prepare_data(settings, data_dir):
    """Train, validation and test sets as model inputs, split and limited as settings say."""
    (x_train, y_train), (x_test, y_test) = _load_dataset(settings["dataset"], data_dir)
    (x_train, y_train), (x_val, y_val) = _split(x_train, y_train, settings["val_split"])
    if settings["limit"]:
        if settings["limit"] > len(x_train):
            raise ValueError(f"--limit {settings['limit']} exceeds the {len(x_train)} training "
                             f"images left after --val-split {settings['val_split']}")
        x_train, y_train = x_train[:settings["limit"]], y_train[:settings["limit"]]
    if settings["test_limit"]:
        x_test, y_test = x_test[:settings["test_limit"]], y_test[:settings["test_limit"]]
    mean, std = settings["normalization"]
    flatten = zoo.MODELS[settings["model"]][1] == (28 * 28,)

    def prepare(images):
        return data.prepare_images(images, mean=mean, std=std, flatten=flatten)
    val = (prepare(x_val), y_val) if settings["val_split"] else None
    return (prepare(x_train), y_train), val, (prepare(x_test), y_test), flatten


def _check_run_dir(run, settings, args):
    """What ``train`` does with the run directory: "new" or "resume"; raises RunRefused.

    Reads only; called once before the data is loaded and again under the lock.
    """
    run.check_usable()
    contents = run.contents()
    checkpoint = find_checkpoint(run.path) if contents else None
    if args.resume:
        config_path = run.file("config.json")
        if checkpoint is None:
            # a run stopped before its first checkpoint holds only its config.json, and
            # the temp file of a checkpoint write it was killed in (removed below)
            temps = run.temp_files()
            left = [n for n in contents if n not in temps]
            if left and left != ["config.json"]:
                raise RunRefused(f"--resume: {run.path} has no checkpoint to continue (it holds "
                                 f"{', '.join(contents[:5])}); start a new run with --overwrite")
            if not contents:
                return "new"
        elif not os.path.isfile(config_path):
            raise RunRefused(f"--resume: {run.path} has a checkpoint but no config.json")
        saved = read_config(config_path)
        check_settings(saved, config_path)
        stored = read_checkpoint(checkpoint)["config"] if checkpoint else {}
        stored = {**LATER_SETTINGS, **stored} if stored else stored
        changed = [k for k in settings if stored.get(k) != saved.get(k)]
        if changed and stored:
            raise ValueError(f"{config_path} disagrees with {checkpoint} on "
                             f"{', '.join(changed)}; was config.json edited?")
        diffs = resume_differences(saved, settings)
        if diffs:
            raise RunRefused(f"cannot resume {run.path}: " + "; ".join(diffs)
                             + " (resume with the run's settings, or start a new run with "
                               "--overwrite or another --out)")
        return "resume" if checkpoint else "new"
    if contents and not args.overwrite:
        raise RunRefused(f"{run.path} already holds a run ({', '.join(contents[:5])}); continue "
                         f"it with --resume, or replace it with --overwrite")
    return "new"


def _warm_kernels(args, settings, model, loss_fn, x_train):
    """Before the first step on the cpu backend: load the run's kernels from numba's
    cache, and compile the missing ones in parallel processes (tinynet.warmup),
    saying so first. A warm cache costs about one step and prints nothing."""
    if backends.backend_name() != "cpu":
        return
    from .warmup import EVAL_BATCH_SIZE, warmup

    def announce(missed, groups, workers):
        _say(args, f"compiling kernels (first run only): {missed} of {groups} kernel groups "
                   f"in {workers} process{'es' if workers > 1 else ''}; `tinynet warmup` "
                   f"does it ahead of time")
    x = x_train[:settings["batch_size"]]
    t0 = time.perf_counter()
    try:
        report = warmup(model, x, loss_fn, functools.partial(_make_optimizer, settings),
                        eval_batch_size=EVAL_BATCH_SIZE, announce=announce)
    except RuntimeError as e:  # no writable cache: the first steps compile as they go
        _say(args, f"kernels compile during the first step ({e})")
        return
    if report["compiled"]:
        _say(args, f"kernels compiled in {time.perf_counter() - t0:.1f} s")


def _say(args, *message):
    if not args.quiet:
        print(*message, file=sys.stderr)


def cmd_train(args):
    settings = _settings(args)
    out = args.out or os.path.join("runs", f"{args.dataset}-{args.model}-{args.norm}")
    run = RunDir(out)
    _check_run_dir(run, settings, args)  # refuse early: before the data is loaded
    if args.backend != "auto":
        backends.set_backend(args.backend)
    train, val, test, flatten = _prepare_data(settings, args.data_dir)
    _say(args, f"backend: {backends.backend_name()}")

    init.seed(settings["seed"])
    model = zoo.build(settings["model"], settings["norm"], settings["num_classes"])
    model.to(backends.get_backend().DEVICE)  # fit uploads the data once
    augment = _augment(settings, flatten)
    loader = data.DataLoader(*train, batch_size=settings["batch_size"], shuffle=True,
                             seed=settings["seed"], augment=augment)
    optimizer = _make_optimizer(settings, model.parameters())
    scheduler = _make_scheduler(settings, optimizer, len(loader))
    loss_fn = losses.SoftmaxCrossEntropy(label_smoothing=settings["label_smoothing"])
    config = dict(settings, format="tinynet-run", architecture=layer_to_config(model))

    with run:
        mode = _check_run_dir(run, settings, args)  # again, now that no one else can write
        if args.resume:
            run.remove_temps()  # what writes killed in an earlier process left
        if args.overwrite:
            for path in run.clear():
                _say(args, f"removed {path}")
        run.mark_holder(getattr(args, "argv", None))
        write_json(run.file("config.json"), config)
        if not args.quiet:
            model.summary(input_shape=(1,) + train[0].shape[1:], file=sys.stderr)
        written = []

        def write_outputs(history):
            history.save(run.file("history.json"))
            from .plots import plot_history
            plot_history(history, run.file("curves.png"),
                         title=f"{args.dataset} {args.model} norm={args.norm}")
            written.append(len(history))

        _warm_kernels(args, settings, model, loss_fn, train[0])
        from .train import evaluate, fit
        t0 = time.perf_counter()
        checkpoint = (find_checkpoint(run.path) if mode == "resume" else None) or \
            run.file("checkpoint.safetensors")
        history = fit(model, loss_fn, optimizer, loader, epochs=settings["epochs"],
                      val_data=val, scheduler=scheduler, checkpoint=checkpoint,
                      resume=mode == "resume",
                      progress=not args.quiet, on_epoch_end=write_outputs, config=settings)
        wall = time.perf_counter() - t0
        if not written:  # a resumed run that was already complete: outputs from its checkpoint
            write_outputs(history)
        test_loss, test_acc = evaluate(model, loss_fn, test)
        final = history.records[-1]
        result = {"val_acc": final["val_acc"], "val_loss": final["val_loss"],
                  "test_acc": test_acc, "test_loss": test_loss, "test_images": len(test[1]),
                  "epochs": len(history), "wall_s": round(wall, 1),
                  "train_s": round(sum(r["seconds"] for r in history.records), 1),
                  "backend": backends.backend_name(), "out": out}
        write_json(run.file("result.json"), result)
    print(json.dumps(result))
    return EXIT_OK


# -- eval -----------------------------------------------------------------------------
def _eval_source(target):
    """(path, settings) of what ``tinynet eval`` evaluates: a run dir, a checkpoint or a model file.

    ``settings`` are the run's (the checkpoint's own, else config.json beside
    the file), or {} for a model file saved on its own.
    """
    path = target
    if os.path.isdir(target):
        path = find_checkpoint(target)
        if path is None:
            raise FileNotFoundError(f"{target}: no checkpoint.safetensors or checkpoint.npz "
                                    f"(is it the --out directory of `tinynet train`?)")
    elif not os.path.exists(target):
        raise FileNotFoundError(f"{target}: no such run directory or file")
    settings = {}
    try:
        settings = read_checkpoint(path)["config"]
    except CheckpointError as e:
        if "not a training checkpoint" not in str(e):
            raise
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not settings and os.path.isfile(beside):
        settings = read_config(beside)
    if settings:
        check_settings(settings, beside)
    return path, settings


def _load_for_eval(path, settings):
    """The model of ``path``: rebuilt from its architecture, or (a file of an earlier
    version, which has none) from the zoo model its settings name."""
    try:
        return load_model(path)
    except CheckpointError as e:
        if "holds no architecture" not in str(e) or settings.get("model") not in zoo.MODELS:
            raise
    from .checkpoint import load_checkpoint
    model = zoo.build(settings["model"], settings["norm"], settings["num_classes"])
    try:
        load_checkpoint(path, model)
    except CheckpointError as e:
        if "not a training checkpoint" not in str(e):
            raise
        model.load(path)
    return model


def _first_weighted(model):
    """The first Dense or Conv2D of a model, depth first, or None."""
    stack = [model]
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, (Dense, Conv2D)):
            return layer
        if hasattr(layer, "_op"):  # WeightNorm, DropConnect: the layer they wrap
            return Dense if layer._op.kind == "dense" else Conv2D
        stack[:0] = [child for _, child in layer.children()]
    return None


def _flat_input(model, path):
    """True when the model takes flattened (N, 784) images, False for (N, 1, 28, 28)."""
    first = _first_weighted(model)
    if first is Dense or isinstance(first, Dense):
        if isinstance(first, Dense) and first.in_features != 28 * 28:
            raise ValueError(f"{path}: the model's first layer takes {first.in_features} "
                             f"features; tinynet eval feeds 28x28 images (784)")
        return True
    if first is Conv2D or isinstance(first, Conv2D):
        return False
    raise ValueError(f"{path}: cannot tell the model's input layout (its first layer with "
                     f"weights is neither Dense nor Conv2D)")


def _conv_feature_maps(model, x):
    """Activations of one input x (1, C, H, W) after each Conv2D block.

    A block is the Conv2D and the normalizations and activations that follow
    it, up to the next pooling, conv or reshape layer. x is on the model's
    device. Returns a list of host (C_l, H_l, W_l) arrays and a list of the
    blocks' layer names.
    """
    from .layers import BatchNorm, GELU, GroupNorm, InstanceNorm, LayerNorm
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


def _eval_figures(model, x, images, labels, probs, confusion, names, label, suffix, out):
    """Draw the eval figures into ``out``; returns {what: path}."""
    from .plots import plot_confusion, plot_feature_maps, plot_filters, plot_misclassified
    from .train import _EvalMode
    figures = {"confusion": plot_confusion(confusion, os.path.join(out, f"confusion{suffix}.png"),
                                           names, title=f"{label}: confusion matrix"),
               "misclassified": os.path.join(out, f"misclassified{suffix}.png")}
    plot_misclassified(images, labels, probs, figures["misclassified"], names,
                       title=f"{label}: most confidently misclassified")
    layers = getattr(model, "layers", [])
    convs = [layer for layer in layers if isinstance(layer, Conv2D)]
    if convs:
        figures["filters"] = plot_filters(backends.to_host(convs[0].weight.data),
                                          os.path.join(out, "filters.png"))
        with _EvalMode(model):
            maps, block_names = _conv_feature_maps(model, backends.get_backend().asarray(x[:1]))
        figures["feature_maps"] = plot_feature_maps(
            images[0], maps, os.path.join(out, "feature_maps.png"), names=block_names,
            title=f"feature maps of test image 0 (a {names[labels[0]]})")
    return figures


def cmd_eval(args):
    from .train import predict, tta_views
    if args.backend != "auto":
        backends.set_backend(args.backend)
    path, settings = _eval_source(args.target)
    model = _load_for_eval(path, settings)
    if model.dtype not in (None, np.float32):
        model.to(np.float32)  # the test images are float32
    dataset = args.dataset or settings.get("dataset", "mnist")
    mean, std = (settings["normalization"] if args.dataset in (None, settings.get("dataset"))
                 and settings else data.NORMALIZATION[dataset])
    backend = backends.get_backend()
    model.to(backend.DEVICE)
    flatten = _flat_input(model, path)
    images, labels = (data.load_mnist if dataset == "mnist" else data.load_fashion_mnist)(
        "test", root=args.data_dir)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    x = data.prepare_images(images, mean=mean, std=std, flatten=flatten)
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
    label = f"{dataset} test{' with TTA' if args.tta else ''}"
    what = settings.get("model", type(model).__name__)
    norm = f" norm={settings['norm']}" if "norm" in settings else ""

    # the metrics first: writing figures may fail (a read-only directory) or be skipped
    print(f"{path}: {what}{norm} on {label}, {n} images, backend {backends.backend_name()}")
    print(f"test loss {loss:.4f}  accuracy {100 * acc:.2f}%")
    width = max(len(name) for name in names)
    for k, name in enumerate(names):
        print(f"  {name:<{width}}  {100 * per_class[k]:6.2f}%  "
              f"({confusion[k, k]}/{confusion[k].sum()})")
    sys.stdout.flush()
    summary = {"test_loss": round(loss, 6), "test_acc": acc, "tta": bool(args.tta)}
    if args.no_plots:
        print(json.dumps(summary))
        return EXIT_OK
    out = args.plots_dir or os.path.dirname(os.path.abspath(path))
    suffix = "-tta" if args.tta else ""
    figures = _eval_figures(model, x, images, labels, probs, confusion, names, label, suffix, out)
    for what, fig in figures.items():
        print(f"{what}: {fig}")
    result = {"test_loss": loss, "test_acc": acc, "tta": bool(args.tta), "dataset": dataset,
              "images": n, "per_class_acc": {name: float(a) for name, a in zip(names, per_class)},
              "confusion": confusion.tolist(), "figures": figures}
    write_json(os.path.join(out, f"eval{suffix}.json"), result)
    print(json.dumps(summary))
    return EXIT_OK


# -- models, info, gradcheck, warmup ---------------------------------------------------
def cmd_models(args):
    """The zoo's models with their input shapes and parameter counts (batch norm)."""
    rows = [("model", "input", "parameters")]
    for name, (build, shape) in zoo.MODELS.items():
        model = build("batch", num_classes=10)
        rows.append((name, "x".join(map(str, shape)),
                     f"{sum(p.size for p in model.parameters()):,}"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}")
    return EXIT_OK


def cmd_info(args):
    from .info import collect, format_info
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return EXIT_OK


def cmd_gradcheck(args):
    from .gradcheck import check_layers
    return EXIT_OK if check_layers(args.layer, tol=args.tol) else EXIT_ERROR


def cmd_speedrun(args):
    """Train the public MNIST speedrun recipe (tinynet/speedrun.py) once per seed."""
    from .progress import progress_bar
    from .speedrun import load_data, train_speedrun
    if args.backend != "auto":
        backends.set_backend(args.backend)
    train, test = load_data(args.data_dir)  # preloaded: loading is not timed
    results = []
    for seed in args.seeds:
        with progress_bar(None, f"speedrun seed {seed}", enabled=not args.json,
                          unit="step") as bar:
            def advance(step, total):
                bar.total = total
                bar.update(1)
            result = train_speedrun(seed, train, test, progress=advance)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"seed {seed}: test accuracy {100 * result['test_acc']:.2f}%, trained in "
                  f"{result['train_s']:.2f} s ({result['steps']} steps, {result['backend']})",
                  flush=True)
    if len(results) > 1 and not args.json:
        times = sorted(r["train_s"] for r in results)
        print(f"{len(results)} seeds: mean test accuracy "
              f"{100 * np.mean([r['test_acc'] for r in results]):.2f}%, median train time "
              f"{np.median(times):.2f} s")
    return EXIT_OK


def cmd_warmup(args):
    """Compile the kernels of ``tinynet train``'s models into the cache (tinynet.warmup)."""
    from .warmup import warmup_models
    backends.set_backend("cpu")
    models = tuple(zoo.MODELS) if args.model == "all" else (args.model,)
    norms = zoo.NORMS if args.norm == "all" else (args.norm,)
    total = warmup_models(models, norms, batch_size=args.batch_size, workers=args.workers)
    print(f"kernels cached in {total:.1f} s")
    return EXIT_OK


# -- the parser -----------------------------------------------------------------------
class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default and keeps the descriptions' line breaks."""


def make_parser():
    from . import __version__
    parser = argparse.ArgumentParser(prog="tinynet", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("Exit codes"):],
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"tinynet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    backend_help = "kernel backend (auto: the fastest available)"
    data_help = "dataset root (None: $TINYNET_DATA_DIR, then ~/.cache/tinynet)"

    t = sub.add_parser("train", help="train a model on MNIST or Fashion-MNIST",
                       formatter_class=_Formatter,
                       description="Train a zoo model into a run directory (--out).")
    t.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                   help="the data set")
    t.add_argument("--model", choices=tuple(zoo.MODELS), default="cnn",
                   help="the zoo model (tinynet models lists them)")
    t.add_argument("--norm", choices=zoo.NORMS, default="batch", help="the normalization layers")
    t.add_argument("--epochs", type=_int_in(1, 10_000), default=5, help="epochs to train")
    t.add_argument("--batch-size", type=_int_in(1, 65_536), default=64, help="images per step")
    t.add_argument("--lr", type=_float_in(0, 10, low_open=True), default=2e-3,
                   help="the learning rate (the peak of the cosine schedule)")
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam",
                   help="sgd is Nesterov momentum 0.9")
    t.add_argument("--weight-decay", type=_float_in(0, 1), default=None,
                   help="L2 weight decay (None: 0 for sgd and adam, 0.01 for adamw)")
    t.add_argument("--schedule", choices=("cosine", "step", "none"), default="cosine",
                   help="cosine: warm-up then cosine decay over the run; step: lr halves "
                        "every epoch; none: constant")
    t.add_argument("--label-smoothing", type=_float_in(0, 1, high_open=True), default=0.0,
                   help="label smoothing of the cross-entropy")
    t.add_argument("--shift", type=_int_in(0, 13), default=0,
                   help="augment: shift images by up to this many pixels")
    t.add_argument("--flip", action="store_true",
                   help="augment: mirror each image left to right with probability 0.5 "
                        "(for fashion-mnist; digits are not mirror symmetric)")
    t.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                   help="seeds the weights, dropout and the data order")
    t.add_argument("--limit", type=_int_in(0), default=0,
                   help="train on the first N training images only (0: all)")
    t.add_argument("--val-split", type=_int_in(0), default=5000,
                   help="training images held out as the validation set, the same images for "
                        "every run (0: no validation)")
    t.add_argument("--test-limit", type=_int_in(0), default=0,
                   help="measure the test set on its first N images only (0: all)")
    t.add_argument("--data-dir", default=None, help=data_help)
    t.add_argument("--out", default=None,
                   help="the run directory (None: runs/<dataset>-<model>-<norm>)")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out; refused when a setting differs, except "
                            "a larger --epochs with --schedule step or none (the longer run's "
                            "first epochs are the same computation)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run in --out (its files and eval outputs are removed)")
    t.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto",
                   help=backend_help)
    t.add_argument("--quiet", action="store_true",
                   help="print only the final result line (no progress bar, no model summary, "
                        "no per-epoch lines) and errors")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained model and draw what it gets wrong",
                       formatter_class=_Formatter)
    e.add_argument("target", metavar="RUN_DIR_OR_FILE",
                   help="a `tinynet train` --out directory, a checkpoint, or a model file "
                        "saved with model.save")
    e.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default=None,
                   help="test set (None: the one the run trained on, else mnist)")
    e.add_argument("--data-dir", default=None, help=data_help)
    e.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto",
                   help=backend_help)
    e.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over the identity and 1-pixel "
                        "shifts (and the mirror image on fashion-mnist)")
    e.add_argument("--limit", type=_int_in(0), default=0,
                   help="evaluate the first N test images only (0: all)")
    e.add_argument("--plots-dir", default=None,
                   help="where eval.json and the figures go (None: beside the checkpoint)")
    e.add_argument("--no-plots", action="store_true",
                   help="print the metrics only; write no figures and no eval.json")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="list the zoo's models with their parameter counts",
                       formatter_class=_Formatter)
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("info", help="versions, backends, threads, BLAS, kernel cache, data sets",
                       formatter_class=_Formatter)
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(func=cmd_info)

    g = sub.add_parser("gradcheck", help="check every layer's backward numerically",
                       formatter_class=_Formatter)
    g.add_argument("--layer", default=None,
                   help="check only this layer (its class name, any case)")
    g.add_argument("--tol", type=_float_in(0, 1, low_open=True), default=1e-6,
                   help="the largest relative error that passes")
    g.set_defaults(func=cmd_gradcheck)

    w = sub.add_parser("warmup", help="compile the cpu kernels of the train models into the cache",
                       formatter_class=_Formatter)
    w.add_argument("--model", choices=tuple(zoo.MODELS) + ("all",), default="all",
                   help="the zoo model(s)")
    w.add_argument("--norm", choices=zoo.NORMS + ("all",), default="all",
                   help="the normalization(s)")
    w.add_argument("--batch-size", type=_int_in(1, 65_536), default=64,
                   help="the training batch size to compile for")
    w.add_argument("--workers", type=_int_in(1, 256), default=None,
                   help="processes compiling at once (None: one per CPU)")
    w.set_defaults(func=cmd_warmup)

    r = sub.add_parser("speedrun", help="train the public MNIST speedrun recipe and time it",
                       formatter_class=_Formatter,
                       description="The recipe of tinynet/speedrun.py: a two-conv net, Adam "
                                   "(0.01, betas 0.7 and 0.9), a one-cycle schedule over one "
                                   "epoch at batch 256, the data preloaded (not timed). Prints "
                                   "each seed's test accuracy and training time.")
    r.add_argument("--seeds", type=_int_in(0, 2**32 - 1), nargs="+", default=[0],
                   help="train once per seed")
    r.add_argument("--data-dir", default=None, help=data_help)
    r.add_argument("--backend", choices=("auto", "ref", "cpu", "cuda"), default="auto",
                   help=backend_help)
    r.add_argument("--json", action="store_true",
                   help="print each seed's result as one JSON line, and no progress bar")
    r.set_defaults(func=cmd_speedrun)

    from .study.cli import add_parser as add_study_parser
    add_study_parser(sub)
    return parser


# -- main -----------------------------------------------------------------------------
def _error(message):
    """Print ``tinynet: error: message`` as one line on stderr."""
    print(f"tinynet: error: {' '.join(str(message).split())}", file=sys.stderr)


def _os_error(e):
    """An OSError as 'what FILE: reason' (no errno, no traceback)."""
    names = [n for n in (e.filename, e.filename2) if n is not None]
    reason = e.strerror or str(e)
    return f"{' -> '.join(map(str, names))}: {reason}" if names else reason


def _continue_command(argv):
    """The command that continues an interrupted ``tinynet train``."""
    argv = [a for a in argv if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["tinynet"] + argv)


def main(argv=None):
    """Run one command; returns its exit code (see the module docstring).

    A command's ``--backend`` holds for that command only: the backend that
    was active before is restored afterwards, so that ``main`` called from
    Python (a notebook, a test) leaves the process's backend as it was.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    args.argv = argv
    previous = backends.get_backend().NAME
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        if args.command == "train":
            print(f"interrupted; continue with: {_continue_command(argv)}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`tinynet info --json | head`): no traceback, and no
        # second error when Python flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except RunRefused as e:
        _error(e)
        return EXIT_REFUSED
    except OSError as e:  # a missing, unreadable or unwritable file or directory
        _error(_os_error(e))
        return EXIT_ERROR
    except (ValueError, RuntimeError, TypeError) as e:
        _error(e)
        return EXIT_ERROR
    except KeyError as e:  # a checkpoint's missing or unexpected key
        _error(e.args[0] if e.args else e)
        return EXIT_ERROR
    except Exception:
        traceback.print_exc()
        print("tinynet: this is a bug in tinynet; please report it with the traceback above",
              file=sys.stderr)
        return EXIT_BUG
    finally:
        backends.set_backend(previous)


if __name__ == "__main__":
    sys.exit(main())
