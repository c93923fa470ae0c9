"""Training loop: fit, evaluate, predict, History, checkpoints and a progress bar.

One training step is the whole of backprop, written out:

    logits = model.forward(x)          # every layer caches what it needs
    loss   = loss_fn.forward(logits, y)
    model.zero_grad()
    model.backward(loss_fn.backward()) # every layer adds into its .grad
    optimizer.step()                   # p.data -= update(p.grad)

``fit`` runs that step over a DataLoader for some epochs, evaluates on the
validation data after each, and (with ``checkpoint=PATH``) writes the model,
optimizer, scheduler, history and counters to one .safetensors or .npz file at
the end of every epoch, atomically, so a crash loses at most the epoch in
progress. ``resume=True`` continues from that file, exactly: the data order
and augmentation of epoch e come from a generator seeded by (seed, e), and
Dropout's mask counters are saved, so a resumed run computes the same weights
as an uninterrupted one.

Test-time augmentation (``evaluate(..., tta=views)``) averages the class
probabilities over deterministic views of each input, e.g. the identity and
the four one-pixel shifts (``tta_views``):

    p(k | x) = (1 / V) sum_v softmax(model(view_v(x)))_k
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .backends import array_module_of, get_backend, to_host
from .checkpoint import (apply_checkpoint, check_resume, describe_run, read_checkpoint,
                         save_checkpoint)
from .data.device import DeviceLoader
from .data.loader import DataLoader
from .history import History
from .layers.base import Layer
from .losses import Loss, count_correct
from .parameter import Array
from .progress import progress_bar
from .serialization import remove_stale_temps

if TYPE_CHECKING:
    from .checkpoint import Scheduler
    from .optim import Optimizer

__all__ = ["fit", "evaluate", "predict", "tta_views", "History"]

# A test-time view: a batch in, the transformed batch (same shape and dtype) out.
View: TypeAlias = Callable[[NDArray[Any]], NDArray[Any]]
# What fit and evaluate take as data: a loader, or the arrays (x, y).
Data: TypeAlias = Union[DataLoader, DeviceLoader, tuple[ArrayLike, ArrayLike]]


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A bar over ``total`` samples (images/s and ETA); see tinynet.progress."""
    return progress_bar(total, desc, enabled, unit="img", unit_scale=True)


def _floats(values: Sequence[float | Array]) -> list[float]:
    """Python floats of host floats or 0-d device arrays, read back in one copy."""
    if not values:
        return []
    xp = array_module_of(values[0])
    return [float(v) for v in to_host(xp.stack([xp.asarray(v) for v in values]))]


def _num_samples(loader: DataLoader | DeviceLoader) -> int:
    """Samples per epoch of a DataLoader or DeviceLoader (its x may stay on the host)."""
    return len((loader.loader if isinstance(loader, DeviceLoader) else loader).x)


def _as_loader(data: Data, batch_size: int, shuffle: bool,
               seed: int | None) -> DataLoader | DeviceLoader:
    """A DataLoader of ``data``; on a device backend a DeviceLoader (data uploaded once)."""
    if isinstance(data, DeviceLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = DataLoader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    if not isinstance(data, DataLoader):
        raise TypeError("data must be a DataLoader or an (x, y) tuple of arrays")
    backend = get_backend()
    return data if backend.DEVICE == "cpu" else DeviceLoader(data, backend)


class _EvalMode:
    """Context manager: put a model in eval mode, then restore every layer's mode
    (the layers inside containers too)."""

    def __init__(self, model: Layer) -> None:
        self.model = model

    def _layers(self) -> list[Layer]:
        stack, out = [self.model], []
        while stack:
            layer = stack.pop()
            out.append(layer)
            stack.extend(child for _, child in layer.children())
        return out

    def __enter__(self) -> Layer:
        self.modes = [(layer, layer.training) for layer in self._layers()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for layer, mode in self.modes:
            layer.training = mode


def _softmax(logits: ArrayLike) -> NDArray[np.float64]:
    """Row-wise softmax of (N, K) logits, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_views(name: str, tta: Iterable[View] | None) -> list[View] | None:
    if tta is None:
        return None
    views = list(tta)
    if not views or not all(callable(v) for v in views):
        raise TypeError(f"{name}: tta must be a non-empty sequence of callables "
                        f"view(x) -> x, e.g. tinynet.train.tta_views()")
    return views


def predict(model: Layer, x: Array, batch_size: int = 256,
            tta: Sequence[View] | None = None) -> NDArray[np.float64]:
    """Class probabilities of ``model`` on ``x``, in eval mode.

    The model's mode (and each layer's) is restored afterwards.

    Parameters
    ----------
    model : Sequential
        Its output is logits (N, K); a softmax is applied here.
    x : numpy.ndarray
        Inputs in the model's input shape, e.g. (N, 1, 28, 28) or (N, 784).
    batch_size : int
        Samples per forward pass.
    tta : sequence of callables, optional
        Views ``view(x) -> x'`` of a batch (same shape); the probabilities
        are averaged over them (see ``tta_views``).

    Returns
    -------
    numpy.ndarray
        float64 (N, K), each row sums to 1.
    """
    x = to_host(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"predict: x must be a non-empty batch (N, ...), got shape {x.shape}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be an int >= 1, got {batch_size!r}")
    views: Sequence[View | None] = _check_views("predict", tta) or [None]
    backend = get_backend()
    chunks = []
    with _EvalMode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            p = sum(_softmax(to_host(model.forward(backend.asarray(xb if v is None else v(xb)))))
                    for v in views)
            chunks.append(p / len(views))
    return np.concatenate(chunks)


def tta_views(image_shape: tuple[int, int] = (28, 28), shift: int = 1,
              hflip: bool = False) -> list[View]:
    """Deterministic test-time views: the identity, one-pixel shifts, optional flips.

    Parameters
    ----------
    image_shape : (H, W)
        The image size; inputs may be (N, C, H, W) or flattened (N, C*H*W).
    shift : int
        Shift by this many pixels up, down, left and right (zero fill);
        0 gives no shifted views.
    hflip : bool
        Add the left-right mirror image (for data whose classes are mirror
        symmetric, e.g. Fashion-MNIST; never for digits).

    Returns
    -------
    list of callables
        ``view(x) -> x'`` with x's shape and dtype; 1 + 4 (shift > 0) + 1
        (hflip) views.
    """
    H, W = image_shape

    def as_images(x: NDArray[Any]) -> NDArray[Any]:
        return x.reshape(len(x), -1, H, W)

    def shifted(dy: int, dx: int) -> View:
        def view(x: NDArray[Any]) -> NDArray[Any]:
            img = as_images(x)
            out = np.zeros_like(img)
            # out[r, c] = img[r - dy, c - dx], zero where that falls outside
            out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
                img[..., max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
            return out.reshape(x.shape)
        view.__name__ = f"shift({dy},{dx})"
        return view

    def identity(x: NDArray[Any]) -> NDArray[Any]:
        return x

    def flip(x: NDArray[Any]) -> NDArray[Any]:
        return np.ascontiguousarray(as_images(x)[..., ::-1]).reshape(x.shape)

    views: list[View] = [identity]
    if shift:
        views += [shifted(dy, dx) for dy, dx in
                  ((-shift, 0), (shift, 0), (0, -shift), (0, shift))]
    if hflip:
        views.append(flip)
    return views


def evaluate(model: Layer, loss_fn: Loss, data: Data, batch_size: int = 256,
             tta: Sequence[View] | None = None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``data``, in eval mode.

    Parameters
    ----------
    model : Sequential
    loss_fn : SoftmaxCrossEntropy or another loss with ``forward(pred, y)``
    data : DataLoader or (x, y)
        x in the model's input shape, y labels (N,).
    tta : sequence of callables, optional
        Test-time views (``tta_views``): the class probabilities are averaged
        over them, and the loss is then the cross-entropy of the averaged
        probabilities, -mean(log p(y | x)) (``loss_fn`` is not used).

    Returns
    -------
    (loss, accuracy) : (float, float)
        Sample-weighted means over the whole data; accuracy in [0, 1].
    """
    loader = _as_loader(data, batch_size, False, None)
    views = _check_views("evaluate", tta)
    # Running sums: floats on the host, 0-d arrays on a device backend.
    total_loss: float | Array = 0.0
    total_correct: float | Array = 0.0
    count = 0.0
    with _EvalMode(model):
        for xb, yb in loader:
            n = len(yb)
            if views is None:
                logits = model.forward(xb)
                total_loss += loss_fn.forward(logits, yb) * n
                total_correct += count_correct(logits, yb)
            else:
                p = predict(model, xb, batch_size=max(n, 1), tta=views)
                yb = to_host(yb)
                total_loss += -np.log(np.maximum(p[np.arange(n), yb], 1e-300)).sum()
                total_correct += (p.argmax(axis=1) == yb).sum()
            count += n
    if count == 0:
        raise ValueError("evaluate: the data is empty")
    return float(total_loss) / count, float(total_correct) / count


def fit(model: Layer, loss_fn: Loss, optimizer: Optimizer, train_data: Data, epochs: int = 1,
        val_data: Data | None = None, batch_size: int = 64, scheduler: Scheduler | None = None,
        checkpoint: str | os.PathLike[str] | None = None, resume: bool = False,
        progress: bool = True, seed: int = 0,
        on_epoch_end: Callable[[History], object] | None = None,
        config: Mapping[str, Any] | None = None) -> History:
    """Train ``model`` and return its History.

    Parameters
    ----------
    model : Sequential
    loss_fn : SoftmaxCrossEntropy or MSELoss
    optimizer : tinynet.optim.Optimizer
    train_data : DataLoader or (x, y)
        A tuple becomes a shuffled DataLoader with ``batch_size`` and ``seed``.
    epochs : int
        The total number of epochs (a resumed run counts the ones already done).
    val_data : DataLoader or (x, y), optional
        Evaluated after every epoch.
    scheduler : StepLR or CosineWarmup, optional
        Stepped after every batch.
    checkpoint : str or path, optional
        A .safetensors or .npz file written atomically at the end of every
        epoch. Temp files that a killed earlier write left beside it are
        removed first.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    progress : bool
        Show a tqdm progress bar (images/s, ETA) on stderr when it is a
        terminal, and one summary line per epoch.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(history)`` after each epoch's record.
    config : dict, optional
        JSON-serializable description of the run, stored in the checkpoint.

    Returns
    -------
    History
    """
    if epochs < 1:
        raise ValueError(f"fit: epochs must be >= 1, got {epochs}")
    loader = _as_loader(train_data, batch_size, True, seed)
    if val_data is not None:
        val_data = _as_loader(val_data, 256, False, None)
    # On a device the running sums stay there; the bar reads them ~20 times an epoch.
    every = 1 if get_backend().DEVICE == "cpu" else max(1, len(loader) // 20)
    history, start = History(), 0
    run = describe_run(model, optimizer, scheduler, loss_fn, loader, epochs)
    if checkpoint is not None:
        remove_stale_temps(checkpoint)
        if resume and os.path.exists(checkpoint):
            ckpt = read_checkpoint(checkpoint)
            check_resume(checkpoint, ckpt["run"], run)
            apply_checkpoint(os.fspath(checkpoint), ckpt, model, optimizer, scheduler)
            start, history, loader.epoch = ckpt["epoch"], ckpt["history"], ckpt["loader_epoch"]
    for epoch in range(start, epochs):
        model.train()
        t0 = time.perf_counter()
        # Running sums: floats on the host, 0-d arrays on a device backend.
        total_loss: float | Array = 0.0
        total_correct: float | Array = 0.0
        seen = 0.0
        step_loss: list[float | Array] = []
        step_lr: list[float] = []
        with _progress_bar(_num_samples(loader), f"epoch {epoch + 1}/{epochs}", progress) as bar:
            for step, (xb, yb) in enumerate(loader, 1):
                step_lr.append(float(optimizer.lr))
                logits = model.forward(xb)
                loss = loss_fn.forward(logits, yb)
                model.zero_grad()
                model.backward(loss_fn.backward())
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                n = len(yb)
                step_loss.append(loss)
                total_loss += loss * n
                total_correct += count_correct(logits, yb)
                seen += n
                bar.update(n)
                if step % every == 0 or step == len(loader):
                    bar.set_postfix(loss=f"{float(total_loss) / seen:.4f}",
                                    acc=f"{float(total_correct) / seen:.4f}", refresh=False)
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(total_loss) / seen,
                  "train_acc": float(total_correct) / seen, "val_loss": None, "val_acc": None,
                  "seconds": seconds, "samples_per_s": seen / seconds, "lr": optimizer.lr,
                  "step_loss": _floats(step_loss), "step_lr": step_lr}
        if val_data is not None:
            record["val_loss"], record["val_acc"] = evaluate(model, loss_fn, val_data)
        history.append(record)
        if progress:
            val = ("" if record["val_acc"] is None else
                   f", val loss {record['val_loss']:.4f} acc {100 * record['val_acc']:.2f}%")
            print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} "
                  f"acc {100 * record['train_acc']:.2f}%{val}, {seconds:.1f}s, "
                  f"{record['samples_per_s']:,.0f} samples/s", file=sys.stderr)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, history, scheduler,
                            loader.epoch, config=config, run=run)
        if on_epoch_end is not None:
            on_epoch_end(history)
    return history
