"""Training loop: fit, evaluate, History, checkpoints and a progress bar.

One training step is the whole of backprop, written out:

    logits = model.forward(x)          # every layer caches what it needs
    loss   = loss_fn.forward(logits, y)
    model.zero_grad()
    model.backward(loss_fn.backward()) # every layer adds into its .grad
    optimizer.step()                   # p.data -= update(p.grad)

``fit`` runs that step over a DataLoader for some epochs, evaluates on the
validation data after each, and (with ``checkpoint=PATH``) writes the model,
optimizer, scheduler and history to one .npz file at the end of every epoch,
atomically, so a crash loses at most the epoch in progress. ``resume=True``
continues from that file.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

from .backends import get_backend
from .data.device import DeviceLoader
from .data.loader import DataLoader
from .losses import count_correct

__all__ = ["fit", "evaluate", "History", "ProgressBar", "save_checkpoint", "load_checkpoint"]


class History:
    """Per-epoch records of a ``fit`` run.

    Attributes
    ----------
    records : list of dict
        One dict per epoch with keys ``epoch``, ``train_loss``, ``train_acc``,
        ``val_loss``, ``val_acc`` (None without validation data), ``seconds``,
        ``samples_per_s`` and ``lr``.
    """

    def __init__(self, records=None):
        self.records = list(records or [])

    def append(self, record):
        self.records.append(dict(record))

    def __getitem__(self, key):
        """``history["val_acc"]`` is the list of that value over epochs."""
        return [r[key] for r in self.records]

    def __len__(self):
        return len(self.records)

    def to_json(self):
        return json.dumps(self.records, indent=2)

    @classmethod
    def from_json(cls, text):
        return cls(json.loads(text))

    def save(self, path):
        """Write the records as JSON, atomically."""
        _atomic_write(path, lambda f: f.write(self.to_json().encode()))

    def __repr__(self):
        return f"History({len(self)} epochs)"


class ProgressBar:
    """A one-line progress bar with throughput, written to stderr.

    On a terminal it redraws in place; elsewhere (CI, a log file) it prints a
    line about every 10% so the log stays short.
    """

    def __init__(self, total, desc="", file=None, enabled=True, width=24):
        self.total = max(int(total), 1)
        self.desc = desc
        self.file = file or sys.stderr
        self.enabled = enabled
        self.width = width
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.start = time.perf_counter()
        self._last_decile = -1

    def update(self, done, samples, **metrics):
        """Show ``done`` of ``total`` steps, ``samples`` seen so far and metrics."""
        if not self.enabled:
            return
        decile = 10 * done // self.total
        if not self.tty and decile == self._last_decile and done < self.total:
            return
        self._last_decile = decile
        elapsed = time.perf_counter() - self.start
        rate = samples / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - done) if done else 0.0
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        extra = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        line = (f"{self.desc} [{bar}] {done}/{self.total} {extra} "
                f"{rate:,.0f} samples/s {elapsed:.0f}s<{eta:.0f}s")
        end = "" if self.tty and done < self.total else "\n"
        self.file.write(("\r" if self.tty else "") + line + end)
        self.file.flush()


def _as_loader(data, batch_size, shuffle, seed):
    """A DataLoader of ``data``; on a device backend a DeviceLoader (data uploaded once)."""
    if isinstance(data, DeviceLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = DataLoader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    if not isinstance(data, DataLoader):
        raise TypeError("data must be a DataLoader or an (x, y) tuple of arrays")
    backend = get_backend()
    return data if backend.DEVICE == "cpu" else DeviceLoader(data, backend)


def evaluate(model, loss_fn, data, batch_size=256):
    """Mean loss and accuracy of ``model`` on ``data``, in eval mode.

    Parameters
    ----------
    model : Sequential
    loss_fn : SoftmaxCrossEntropy or another loss with ``forward(pred, y)``
    data : DataLoader or (x, y)
        x in the model's input shape, y labels (N,).

    Returns
    -------
    (loss, accuracy) : (float, float)
        Sample-weighted means over the whole data; accuracy in [0, 1].
    """
    loader = _as_loader(data, batch_size, False, None)
    was_training, modes = model.training, [layer.training for layer in model.layers]
    model.eval()
    total_loss = total_correct = count = 0.0
    try:
        for xb, yb in loader:
            logits = model.forward(xb)
            n = len(yb)
            total_loss += loss_fn.forward(logits, yb) * n
            total_correct += count_correct(logits, yb)
            count += n
    finally:
        for layer, mode in zip(model.layers, modes):
            layer.train(mode)
        model.training = was_training
    if count == 0:
        raise ValueError("evaluate: the data is empty")
    return float(total_loss) / count, float(total_correct) / count


def _atomic_write(path, write):
    """Call ``write(f)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _layer_steps(model):
    """The counters of layers that have one (Dropout's mask step), by index."""
    return {f"{i}": layer.step for i, layer in enumerate(model.layers) if hasattr(layer, "step")}


def save_checkpoint(path, model, optimizer, epoch, history, scheduler=None, loader_epoch=0):
    """Write model, optimizer, scheduler, history and counters to one .npz, atomically.

    Every entry is a plain array (strings as unicode arrays), so the file loads
    with ``allow_pickle=False``.
    """
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if scheduler is not None:
        arrays.update({f"sched/{k}": v for k, v in scheduler.state_dict().items()})
    arrays.update({f"step/{k}": np.array(v) for k, v in _layer_steps(model).items()})
    arrays["epoch"] = np.array(epoch)
    arrays["loader_epoch"] = np.array(loader_epoch)
    arrays["history"] = np.array(history.to_json())
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path, model, optimizer=None, scheduler=None):
    """Restore a checkpoint written by ``save_checkpoint``.

    Returns
    -------
    (epoch, history, loader_epoch)
        The number of epochs completed, their History, and the loader's
        shuffle counter.
    """
    with np.load(os.fspath(path), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}

    def section(name):
        return {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(name + "/")}

    model.load_state_dict(section("model"))
    if optimizer is not None:
        optimizer.load_state_dict(section("optim"))
    if scheduler is not None:
        scheduler.load_state_dict(section("sched"))
    for i, step in section("step").items():
        model.layers[int(i)].step = int(step)
    history = History.from_json(str(arrays["history"]))
    return int(arrays["epoch"]), history, int(arrays["loader_epoch"])


def fit(model, loss_fn, optimizer, train_data, epochs=1, val_data=None, batch_size=64,
        scheduler=None, checkpoint=None, resume=False, progress=True, seed=0,
        on_epoch_end=None):
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
        A .npz file written atomically at the end of every epoch.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    progress : bool
        Show a progress bar with samples/s on stderr.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(history)`` after each epoch's record.

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
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        start, history, loader.epoch = load_checkpoint(checkpoint, model, optimizer, scheduler)
    for epoch in range(start, epochs):
        model.train()
        bar = ProgressBar(len(loader), desc=f"epoch {epoch + 1}/{epochs}", enabled=progress)
        t0 = time.perf_counter()
        total_loss = total_correct = seen = 0.0
        for step, (xb, yb) in enumerate(loader, 1):
            logits = model.forward(xb)
            loss = loss_fn.forward(logits, yb)
            model.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            n = len(yb)
            total_loss += loss * n
            total_correct += count_correct(logits, yb)
            seen += n
            if step % every == 0 or step == len(loader):
                bar.update(step, seen, loss=float(total_loss) / seen,
                           acc=float(total_correct) / seen)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": float(total_loss) / seen,
                  "train_acc": float(total_correct) / seen, "val_loss": None, "val_acc": None,
                  "seconds": seconds, "samples_per_s": seen / seconds, "lr": optimizer.lr}
        if val_data is not None:
            record["val_loss"], record["val_acc"] = evaluate(model, loss_fn, val_data)
        history.append(record)
        if progress:
            val = ("" if record["val_acc"] is None else
                   f", val loss {record['val_loss']:.4f} acc {100 * record['val_acc']:.2f}%")
            print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} "
                  f"acc {100 * record['train_acc']:.2f}%{val}, {seconds:.1f}s", file=sys.stderr)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, history, scheduler,
                            loader.epoch)
        if on_epoch_end is not None:
            on_epoch_end(history)
    return history
