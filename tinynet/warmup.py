"""Fill Numba's compile cache for a model before its first training step.

The cpu backend's kernels compile on first use and are cached on disk
(tinynet/backends/cpu_jit.py). With an empty cache, the first training step
of the reference CNN spends seconds compiling, one kernel after another.
Kernels of different layers do not depend on each other, so ``warmup``
compiles them in several processes at once:

1. the model's layer input shapes come from one forward pass of a copy of
   the model on the ref backend (NumPy, nothing to compile);
2. the layers are grouped by type (layers of one type share their kernels;
   Conv2D layers also by weight shape, which picks their schedule) and the groups, plus one task for the loss and the
   optimizer, are dealt to ``workers`` bins by their estimated compile cost
   (HEAVY), the heaviest first;
3. the first bin runs in this process, the others each in a new Python
   process (``python -m tinynet.warmup``, the task on its stdin); each runs
   forward and backward of its layers on random inputs of the recorded
   shapes, which compiles their kernels into the shared cache.

The next training step then loads every kernel from the cache. The model
itself is not changed: every bin works on its own copy. ``tinynet warmup``
runs this for the CNN and MLP of ``tinynet train``, each normalization, so
that a fresh install's first training starts warm.

    python -m kernels.system.latency      # cold, warm and cold-after-warmup first steps
"""
import copy
import os
import pickle
import subprocess
import sys
import time

import numpy as np

__all__ = ["warmup"]


def _layer_inputs(model, x):
    """The input of each layer of ``model`` for input x, from a ref-backend
    forward pass of a copy of the model."""
    from .backends import use_backend
    shadow = copy.deepcopy(model)
    inputs = []
    with use_backend("ref"):
        h = np.asarray(x)
        for layer in shadow.layers:
            inputs.append((h.shape, h.dtype.str))
            h = layer.forward(h)
    return inputs, (h.shape, h.dtype.str)


# Relative compile cost of a layer group (kernels/system/latency.py lists the
# compile time per kernel: a Conv2D schedule or a normalization is several
# seconds, an activation or a pool under one).
HEAVY = {"Conv2D": 5, "BatchNorm": 5, "LayerNorm": 5, "InstanceNorm": 5, "GroupNorm": 5}
LOSS_WEIGHT = 2
BY_SHAPE = ("Conv2D",)


def _tasks(model, x, loss_fn, optimizer, workers):
    """Deal the layer groups (and the loss + optimizer task) into ``workers`` bins."""
    inputs, out = _layer_inputs(model, x)
    groups = {}
    for layer, shape in zip(model.layers, inputs):
        # Layers of one type share their kernels, except Conv2D, whose
        # schedule (and so its kernels) depends on C*KH*KW: there the
        # weight's shape is part of the key.
        name = type(layer).__name__
        key = (name, layer.weight.data.shape if name in BY_SHAPE else None)
        groups.setdefault(key, []).append((layer, shape))
    bins = [{"layers": [], "loss": None, "weight": 0} for _ in range(workers)]
    if loss_fn is not None or optimizer is not None:
        bins[-1]["loss"] = (loss_fn, optimizer, out)
        bins[-1]["weight"] = LOSS_WEIGHT
    # Heaviest groups first, each into the bin with the least weight so far.
    weighted = [(HEAVY.get(key[0], 1), group) for key, group in groups.items()]
    for weight, group in sorted(weighted, key=lambda wg: -wg[0]):
        target = min(bins, key=lambda b: b["weight"])
        target["layers"].extend(group)
        target["weight"] += weight
    return [b for b in bins if b["layers"] or b["loss"]]


def _run_task(task, seed=0):
    """Forward + backward of the task's layers (and its loss and optimizer step)."""
    rng = np.random.default_rng(seed)
    params = []
    for layer, (shape, dtype) in task["layers"]:
        x = rng.standard_normal(shape).astype(dtype)
        y = layer.forward(x)
        layer.backward(rng.standard_normal(y.shape).astype(y.dtype))
        params.extend(layer.parameters())
    if task["loss"] is not None:
        loss_fn, optimizer, (shape, dtype) = task["loss"]
        if loss_fn is not None:
            pred = rng.standard_normal(shape).astype(dtype)
            loss_fn.forward(pred, rng.integers(0, shape[-1], shape[0]))
            loss_fn.backward()
        if optimizer is not None and params:
            optimizer(params).step()


def warmup(model, x, loss_fn=None, optimizer=None, workers=None):
    """Compile every cpu kernel that a training step of ``model`` on ``x`` uses.

    Parameters
    ----------
    model : Sequential
        The model; not changed (each worker uses a copy).
    x : ndarray
        An input batch, e.g. (N, 1, 28, 28) float32; only its shape and
        dtype matter. Use the batch size of training: some kernels are
        chosen by size.
    loss_fn : loss, optional
        A loss with ``forward(pred, labels)`` and ``backward()`` (e.g.
        SoftmaxCrossEntropy) to compile too, on random logits of the model's
        output shape and integer labels.
    optimizer : callable, optional
        ``optimizer(params)`` returns an optimizer, e.g. ``tinynet.optim.Adam``;
        one step of it is compiled too.
    workers : int, optional
        Processes compiling at once, this one included; default: the number
        of CPUs this process may use.

    Returns
    -------
    dict
        ``seconds`` (wall time), ``workers`` (processes used), ``backend``.
        Nothing is compiled unless the active backend is "cpu".
    """
    from .backends import backend_name
    t0 = time.perf_counter()
    name = backend_name()
    if name != "cpu":
        return {"seconds": 0.0, "workers": 0, "backend": name}
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"warmup: workers must be an int >= 1, got {workers!r}")
    tasks = _tasks(model, x, loss_fn, optimizer, workers)
    children = []
    for task in tasks[1:]:
        child = subprocess.Popen([sys.executable, "-m", "tinynet.warmup"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        child.stdin.write(pickle.dumps(copy.deepcopy(task)))
        child.stdin.close()
        children.append(child)
    if tasks:
        _run_task(copy.deepcopy(tasks[0]))
    for child in children:
        err = child.stderr.read().decode(errors="replace")
        if child.wait() != 0:
            raise RuntimeError(f"warmup: a worker process failed:\n{err.strip()}")
    return {"seconds": time.perf_counter() - t0, "workers": len(tasks), "backend": name}


def _worker():
    """Entry of a worker process: run the pickled task read from stdin.

    The task comes from ``warmup`` in the parent process, through a pipe
    that only it writes; it is never read from a file.
    """
    from .backends import set_backend
    set_backend("cpu")
    task = pickle.loads(sys.stdin.buffer.read())
    _run_task(task)


if __name__ == "__main__":
    _worker()
