"""Fill Numba's compile cache for a model before its first training step.

The cpu backend's kernels compile on first use and are cached on disk
(tinynet/backends/cpu_jit.py). With an empty cache, the first training step
of the reference CNN spends seconds compiling, one kernel after another.
Kernels of different layers do not depend on each other, so ``warmup``
compiles them in several processes at once:

1. the model's layer input shapes come from one forward pass of a copy of
   the model on the ref backend (NumPy, nothing to compile), on two samples;
2. the layers are grouped by type (layers of one type share their kernels;
   Conv2D layers also by weight shape, which picks their schedule); the
   loss and the optimizers are one more group;
3. each group first runs in this process under ``cpu_jit.cache_only()``:
   a group whose kernels are all in the cache is done then, having only
   loaded them; the first kernel that is not stops its group;
4. the stopped groups are dealt to at most ``workers`` bins by their
   estimated compile cost (HEAVY), the heaviest first; the first bin runs in
   this process, the others each in a new Python process (``python -m
   tinynet.warmup``, its groups on its stdin).

Running a group means what training does with its layers: forward and
backward in training mode at the training batch, then the forward in eval
mode at the evaluation batch (``tinynet.train.fit`` evaluates every epoch,
in batches of ``EVAL_BATCH_SIZE``), on random inputs of the recorded shapes;
then a loss forward and backward, and two steps of each optimizer on
parameters of the model's shapes. The next training step then loads every
kernel from the cache. The model itself is not changed: every group works on
its own copy.

A warmup over a warm cache thus starts no process and compiles nothing: it
loads each kernel once, in this process. A worker process starts only when
two or more groups must compile.

Each warmup records the signatures it used, per kernel, in a file
``RECORD_NAME`` in the kernels' cache directories; ``tinynet info`` checks
them against the cache (``recorded_signatures``). ``warmup_models`` runs
warmup for the models of ``tinynet train`` (tinynet.zoo), each
normalization, so that a fresh install's first training starts warm.

    python -m kernels.system.latency      # cold, warm and cold-after-warmup first steps
"""
import contextlib
import copy
import functools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from . import optim
from .zoo import MODELS, NORMS

__all__ = ["warmup", "warmup_models", "recorded_signatures", "EVAL_BATCH_SIZE",
           "TRAIN_OPTIMIZERS", "RECORD_NAME"]

# The batch of tinynet.train.fit's evaluation after every epoch.
EVAL_BATCH_SIZE = 256

# The record of what warmup compiled, one file in each kernel cache directory.
RECORD_NAME = "tinynet-warmup.json"


# The optimizers of ``tinynet train --optimizer adam|adamw|sgd`` (tinynet/cli.py),
# as picklable callables ``make(params)``.
TRAIN_OPTIMIZERS = (optim.Adam, optim.AdamW,
                    functools.partial(optim.SGD, lr=0.01, momentum=0.9, nesterov=True))


def _layer_inputs(model, x):
    """The input (shape, dtype) of each layer of ``model`` for input x, and the output's.

    They come from a ref-backend forward pass of a copy of the model on the
    first two samples of x (NumPy's convolutions of a whole batch would take
    seconds), with the batch axis then set to x's: every layer keeps the
    batch axis first.
    """
    from .backends import use_backend
    shadow = copy.deepcopy(model)
    x = np.asarray(x)
    batch = x.shape[0]
    inputs = []
    with use_backend("ref"):
        h = x[:2]
        for layer in shadow.layers:
            inputs.append(((batch,) + h.shape[1:], h.dtype.str))
            h = layer.forward(h)
    return inputs, ((batch,) + h.shape[1:], h.dtype.str)


# Relative compile cost of a layer group (kernels/system/latency.py lists the
# compile time per kernel: a Conv2D schedule or a normalization is several
# seconds, an activation or a pool under one).
HEAVY = {"Conv2D": 5, "BatchNorm": 5, "LayerNorm": 5, "InstanceNorm": 5, "GroupNorm": 5}
LOSS_WEIGHT = 2
BY_SHAPE = ("Conv2D",)


def _groups(model, x, loss_fn, optimizers, eval_batch):
    """The model's warmup groups: its layers grouped by type (Conv2D also by
    weight shape), each with its input shape, then the loss and optimizers."""
    inputs, out = _layer_inputs(model, x)
    groups = {}
    for layer, shape in zip(model.layers, inputs):
        # Layers of one type share their kernels, except Conv2D, whose
        # schedule (and so its kernels) depends on C*KH*KW: there the
        # weight's shape is part of the key.
        name = type(layer).__name__
        key = (name, layer.weight.data.shape if name in BY_SHAPE else None)
        group = groups.setdefault(key, {"layers": [], "loss": None, "optimizers": (),
                                        "params": [], "eval_batch": eval_batch,
                                        "weight": HEAVY.get(name, 1)})
        group["layers"].append((layer, shape))
    out_groups = list(groups.values())
    if loss_fn is not None or optimizers:
        out_groups.append({"layers": [], "loss": (loss_fn, out) if loss_fn is not None else None,
                           "optimizers": tuple(optimizers),
                           "params": [(p.data.shape, p.data.dtype.str)
                                      for p in model.parameters()],
                           "eval_batch": eval_batch, "weight": LOSS_WEIGHT})
    return out_groups


def _deal(groups, workers):
    """At most ``workers`` bins of groups, balanced by weight, heaviest first."""
    bins = [{"groups": [], "weight": 0} for _ in range(min(workers, len(groups)))]
    for group in sorted(groups, key=lambda g: -g["weight"]):
        target = min(bins, key=lambda b: b["weight"])
        target["groups"].append(group)
        target["weight"] += group["weight"]
    return [b["groups"] for b in bins]


def _run_group(group, seed=0):
    """What a training run does with the group: forward and backward of its
    layers, their eval-mode forward at the eval batch, the loss forward and
    backward, two steps of each optimizer. The values are uniform in [0, 1):
    only shapes and dtypes choose the kernels, and these are fast to draw."""
    from .parameter import Parameter
    rng = np.random.default_rng(seed)
    for layer, (shape, dtype) in group["layers"]:
        layer.train()
        y = layer.forward(rng.random(shape, dtype=dtype))
        layer.backward(rng.random(y.shape, dtype=y.dtype))
        layer.eval()
        layer.forward(rng.random((group["eval_batch"],) + shape[1:], dtype=dtype))
    if group["loss"] is not None:
        loss_fn, (shape, dtype) = group["loss"]
        loss_fn.forward(rng.random(shape, dtype=dtype), rng.integers(0, shape[-1], shape[0]))
        loss_fn.backward()
    for make in group["optimizers"]:
        params = [Parameter(rng.random(shape, dtype=dtype)) for shape, dtype in group["params"]]
        optimizer = make(params)
        for _ in range(2):  # the first step creates the state (momentum, moments)
            for p in params:
                p.grad[...] = 0.5
            optimizer.step()


def _from_cache(group):
    """Run a copy of ``group`` with cached kernels only: True when it ran to the
    end, False when a kernel it needs is not in the cache."""
    from .backends.cpu_jit import CacheMiss, cache_only
    try:
        with cache_only():
            _run_group(copy.deepcopy(group))
    except CacheMiss:
        return False
    return True


def _union(a, b):
    """Two {kernel name: set of signatures} merged; kernels without signatures left out."""
    merged = {name: a.get(name, set()) | b.get(name, set()) for name in a.keys() | b.keys()}
    return {name: sigs for name, sigs in merged.items() if sigs}


def _record_files():
    """{cache directory: [kernel, ...]} of the cpu kernels that are cached."""
    from .backends.cpu_jit import kernels
    dirs = {}
    for kernel in kernels():
        if kernel.stats.cache_path:
            dirs.setdefault(kernel.stats.cache_path, []).append(kernel)
    return dirs


def _read_record(path):
    """{kernel name: set of signatures} of one record file; empty when missing or unreadable."""
    try:
        with open(path) as f:
            return {name: set(sigs) for name, sigs in json.load(f)["signatures"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def recorded_signatures():
    """What warmup has compiled into the present cache directories.

    Returns
    -------
    dict
        kernel name (``module.qualname``) -> set of signatures (as
        ``tinynet.backends.cpu_jit.signature_text`` writes them), for the
        kernels that exist now; empty when no warmup has run on these
        directories.
    """
    from .backends.cpu_jit import kernel_name
    out = {}
    for directory, kernels in _record_files().items():
        names = {kernel_name(k) for k in kernels}
        record = _read_record(os.path.join(directory, RECORD_NAME))
        out = _union(out, {name: sigs for name, sigs in record.items() if name in names})
    return out


def _record(signatures):
    """Add ``signatures`` ({kernel name: set}) to the record file of each kernel's
    cache directory, written atomically. Recorded signatures that the cache no
    longer holds (the source changed, another CPU, a cleared cache) are dropped:
    a warmup of their model records them again."""
    from .backends.cpu_jit import cached_signatures, kernel_name
    from .serialization import atomic_write
    for directory, kernels in _record_files().items():
        cached = {kernel_name(k): cached_signatures(k) for k in kernels}
        path = os.path.join(directory, RECORD_NAME)
        record = _read_record(path)
        kept = {name: sigs & cached[name] for name, sigs in record.items() if name in cached}
        new = _union(kept, {name: sigs for name, sigs in signatures.items() if name in cached})
        if new == record:
            continue
        text = json.dumps({"signatures": {k: sorted(v) for k, v in sorted(new.items())}},
                          indent=1)
        try:
            atomic_write(path, lambda f: f.write(text.encode()))
        except OSError as error:
            warnings.warn(f"warmup: cannot write {path} ({error}); tinynet info will not "
                          f"know what warmup compiled there", RuntimeWarning)


def _stop(children):
    """Kill and reap the worker processes of ``children`` that still run."""
    for child, _, _ in children:
        if child.poll() is None:
            child.kill()
            child.wait()


def warmup(model, x, loss_fn=None, optimizer=None, workers=None, eval_batch_size=None,
           announce=None):
    """Compile every cpu kernel that training ``model`` on ``x`` uses.

    Parameters
    ----------
    model : Sequential
        The model; not changed (each group of layers runs on a copy).
    x : ndarray
        An input batch, e.g. (N, 1, 28, 28) float32; only its shape and
        dtype matter. Use the batch size of training: some kernels are
        chosen by size.
    loss_fn : loss, optional
        A loss with ``forward(pred, labels)`` and ``backward()`` (e.g.
        SoftmaxCrossEntropy) to compile too, on random logits of the model's
        output shape and integer labels.
    optimizer : callable or sequence of callables, optional
        ``optimizer(params)`` returns an optimizer, e.g. ``tinynet.optim.Adam``;
        two steps of each are compiled too. Worker processes receive them
        pickled: pass classes or ``functools.partial``, not lambdas.
    workers : int, optional
        Processes compiling at once, this one included; default: the number
        of CPUs this process may use.
    eval_batch_size : int, optional
        Batch of the eval-mode forward of each layer; default: x's batch.
    announce : callable, optional
        ``announce(missed, groups, workers)`` before anything compiles, when
        ``missed`` of the ``groups`` kernel groups are not in the cache and
        will compile in ``workers`` processes (not called on a warm cache).

    Returns
    -------
    dict
        ``seconds`` (wall time), ``workers`` (processes that ran groups, this
        one included), ``backend``, ``groups`` (layer groups, plus one for the
        loss and optimizers) and ``compiled`` (the groups that missed the
        cache). Nothing is compiled unless the active backend is "cpu".

    Raises
    ------
    RuntimeError
        No directory is writable for the compile cache (numba's
        ``NUMBA_CACHE_DIR``), so a warmup could keep nothing.
    """
    from .backends import backend_name
    from .backends.cpu_jit import held_signatures
    t0 = time.perf_counter()
    name = backend_name()
    if name != "cpu":
        return {"seconds": 0.0, "workers": 0, "backend": name, "groups": 0, "compiled": 0}
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"warmup: workers must be an int >= 1, got {workers!r}")
    if not _record_files():
        raise RuntimeError("warmup: no directory is writable for the kernel cache, so every "
                           "process compiles anew; set NUMBA_CACHE_DIR to a writable directory")
    optimizers = () if optimizer is None else (
        tuple(optimizer) if isinstance(optimizer, (list, tuple)) else (optimizer,))
    eval_batch = int(eval_batch_size or np.shape(x)[0])
    groups = _groups(model, x, loss_fn, optimizers, eval_batch)
    before = held_signatures()
    missed = [group for group in groups if not _from_cache(group)]
    bins = _deal(missed, workers)
    if missed and announce is not None:
        announce(len(missed), len(groups), len(bins))
    with contextlib.ExitStack() as stack:
        children = []
        stack.callback(_stop, children)  # on an error, no worker keeps running
        for task in bins[1:]:
            # The child's output goes to files: a pipe that fills up would block it.
            out, err = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))
            child = subprocess.Popen([sys.executable, "-m", "tinynet.warmup"],
                                     stdin=subprocess.PIPE, stdout=out, stderr=err)
            children.append((child, out, err))
            child.stdin.write(pickle.dumps(copy.deepcopy(task)))
            child.stdin.close()
        for group in bins[0] if bins else ():
            _run_group(copy.deepcopy(group))
        held = held_signatures()
        used = {k: held[k] - before.get(k, set()) for k in held}
        for child, out, err in children:
            returncode = child.wait()
            if returncode != 0:
                err.seek(0)
                raise RuntimeError(f"warmup: a worker process failed:\n"
                                   f"{err.read().decode(errors='replace').strip()}")
            out.seek(0)
            compiled = json.loads(out.read().decode().splitlines()[-1])
            used = _union(used, {k: set(v) for k, v in compiled.items()})
    _record(used)
    return {"seconds": time.perf_counter() - t0, "workers": max(1, len(bins)), "backend": name,
            "groups": len(groups), "compiled": len(missed)}


def warmup_models(models=("cnn", "mlp"), norms=NORMS, batch_size=64, workers=None, out=None):
    """Compile the kernels of ``tinynet train``'s models, one ``warmup`` per model and norm.

    Each model of ``tinynet.zoo.MODELS`` is built with each normalization
    (10 classes) and warmed up as ``tinynet train`` runs it: float32 batches
    of ``batch_size``, the eval-mode forward at ``EVAL_BATCH_SIZE``,
    SoftmaxCrossEntropy and each of ``TRAIN_OPTIMIZERS``. Later models find
    the kernels they share with earlier ones in the cache.

    Parameters
    ----------
    models : sequence of str
        Names in ``tinynet.zoo.MODELS``.
    norms : sequence of str
        Names in ``tinynet.zoo.NORMS``.
    batch_size : int
        The training batch.
    workers : int, optional
        Processes compiling at once (see ``warmup``).
    out : file, optional
        Where the line of each model and norm goes; default sys.stdout.

    Returns
    -------
    float
        Total seconds.
    """
    from .backends import use_backend
    from .losses import SoftmaxCrossEntropy
    out = sys.stdout if out is None else out
    for name in models:
        if name not in MODELS:
            raise ValueError(f"warmup: unknown model {name!r}; choose one of: "
                             f"{', '.join(MODELS)}")
    for norm in norms:
        if norm not in NORMS:
            raise ValueError(f"warmup: unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    total = 0.0
    with use_backend("cpu"):
        for name in models:
            build, shape = MODELS[name]
            for norm in norms:
                x = np.zeros((batch_size,) + shape, dtype=np.float32)
                report = warmup(build(norm, num_classes=10), x, SoftmaxCrossEntropy(),
                                TRAIN_OPTIMIZERS, workers=workers,
                                eval_batch_size=EVAL_BATCH_SIZE)
                total += report["seconds"]
                print(f"{name} norm={norm}: {report['seconds']:.1f} s; {report['groups']} "
                      f"kernel groups: {report['compiled']} compiled in {report['workers']} "
                      f"processes, {report['groups'] - report['compiled']} from the cache",
                      file=out, flush=True)
    return total


def _worker():
    """Entry of a worker process: run the pickled groups read from stdin, then
    print the signatures it compiled (JSON, one line).

    The groups come from ``warmup`` in the parent process, through a pipe
    that only it writes; they are never read from a file.
    """
    from .backends import set_backend
    from .backends.cpu_jit import held_signatures
    set_backend("cpu")
    for group in pickle.loads(sys.stdin.buffer.read()):
        _run_group(group)
    print(json.dumps({k: sorted(v) for k, v in held_signatures().items()}))


if __name__ == "__main__":
    _worker()
