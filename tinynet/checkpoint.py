"""Training checkpoints and model files: what a run saves, and loading any of it without code.

A training checkpoint is one tensor file (tinynet/serialization.py) holding
everything a run needs to continue exactly:

    tensors   model/<state_dict key>     the model's parameters and buffers
              optim/<key>                the optimizer's state (step, lr, moments)
              sched/<key>                the schedule's state (last_step, base_lr)
              step/<layer key>           a random layer's mask counter (Dropout, ...)
    metadata  format = "tinynet-checkpoint", epoch, loader_epoch,
              history (JSON), config (JSON: the caller's description of the run),
              run (JSON: what ``fit`` saw: the architecture, the optimizer's,
              schedule's, loss's and loader's settings, and the epochs)

A model file (``layer.save``) holds the state_dict and, in its metadata, the
architecture (``layer_to_config``). ``load_model`` rebuilds a model from
either, or from a ``tinynet train`` run directory, without the code that
built it.

Resuming refuses what it cannot honour (``check_resume``): every entry of
``run`` must be equal, except that ``epochs`` may grow when nothing else
changed (the first E epochs of a longer run are then the same computation;
a schedule whose length depends on the epochs differs in its own settings
and is refused).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .data.device import DeviceLoader
from .history import History
from .layers.base import Layer, layer_from_config, layer_to_config
from .serialization import CheckpointError, read_tensors, write_tensors

if TYPE_CHECKING:
    from .data.loader import DataLoader

__all__ = ["CHECKPOINT_FORMAT", "MODEL_FORMAT", "CHECKPOINT_NAMES", "save_checkpoint",
           "read_checkpoint", "load_checkpoint", "apply_checkpoint", "describe_run", "check_resume",
           "ResumeMismatch", "load_model", "find_checkpoint"]

CHECKPOINT_FORMAT = "tinynet-checkpoint"
MODEL_FORMAT = "tinynet-model"
# the checkpoint of a run directory, newest format first
CHECKPOINT_NAMES = ("checkpoint.safetensors", "checkpoint.npz")


class ResumeMismatch(ValueError):
    """A checkpoint was written by a run with other settings than the one resuming it."""


class Stateful(Protocol):
    """What a checkpoint saves and restores: a model, an optimizer or a schedule."""

    def state_dict(self) -> dict[str, NDArray[Any]]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Scheduler(Stateful, Protocol):
    """A learning-rate schedule as ``fit`` drives it (tinynet.optim's StepLR,
    CosineWarmup and OneCycleLR): ``step()`` after every batch."""

    def step(self) -> None: ...


def _named_layers(layer: Layer, prefix: str = "") -> list[tuple[str, Layer]]:
    """(key, layer) of every layer inside ``layer``, depth first, keys as in state_dict."""
    out = []
    for key, child in layer.children():
        out.append((prefix + key, child))
        out.extend(_named_layers(child, f"{prefix}{key}."))
    return out


def _layer_steps(model: Layer) -> dict[str, int]:
    """The mask counters of the layers that have one (Dropout, DropConnect, ...), by key."""
    return {key: layer.step for key, layer in _named_layers(model) if hasattr(layer, "step")}


def _settings(obj: object) -> dict[str, Any] | None:
    """The public scalar settings of an optimizer, schedule, loss or augmentation."""
    if obj is None:
        return None
    out: dict[str, Any] = {"class": type(obj).__name__}
    for key, value in sorted(vars(obj).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, float, str, np.integer, np.floating)):
            out[key] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            out[key] = list(value)
    return out


def describe_run(model: Layer, optimizer: object, scheduler: object, loss_fn: object,
                 loader: DataLoader | DeviceLoader, epochs: int) -> dict[str, Any]:
    """What ``fit`` computes, as JSON data: the basis of ``check_resume``.

    Taken before anything is trained or restored, so the optimizer and
    schedule hold their constructor settings. The model is described by its
    architecture (Dropout's seeds included), or by its class when a layer has
    no ``get_config``.
    """
    try:
        architecture = layer_to_config(model)
    except NotImplementedError:
        architecture = {"class": type(model).__name__}
    # a DeviceLoader wraps a DataLoader
    data = loader.loader if isinstance(loader, DeviceLoader) else loader
    augment = getattr(data, "augment", None)
    return {"architecture": architecture, "optimizer": _settings(optimizer),
            "scheduler": _settings(scheduler), "loss": _settings(loss_fn),
            "data": {"samples": len(data.x), "batch_size": data.batch_size,
                     "shuffle": data.shuffle, "seed": int(data.seed),
                     "drop_last": data.drop_last,
                     "augment": None if augment is None else _stable_repr(augment)},
            "epochs": int(epochs)}


def _stable_repr(obj: object) -> str:
    """repr without the memory addresses of functions and objects (they change per process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _differences(saved: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys where two JSON values differ, with both values."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [(prefix.rstrip("."), saved, now)]


def check_resume(path: str | os.PathLike[str], saved: Mapping[str, Any],
                 now: Mapping[str, Any]) -> None:
    """Raise ResumeMismatch unless the run ``now`` may continue checkpoint ``saved``.

    Both are ``describe_run`` data. Only ``epochs`` may differ, and only grow.
    The message names each differing setting with both values.
    """
    if not saved:  # a checkpoint of an earlier version, which did not record its run
        return
    diffs = [d for d in _differences(saved, now) if d[0] != "epochs"]
    if now["epochs"] < saved.get("epochs", 0):
        diffs.append(("epochs", saved.get("epochs"), now["epochs"]))
    if diffs:
        lines = "; ".join(f"{key}: checkpoint {_short(a)}, now {_short(b)}" for key, a, b in diffs)
        raise ResumeMismatch(f"{path}: cannot resume: the run differs from the one that wrote "
                             f"the checkpoint ({lines})")


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def save_checkpoint(path: str | os.PathLike[str], model: Layer, optimizer: Stateful, epoch: int,
                    history: History, scheduler: Stateful | None = None, loader_epoch: int = 0,
                    config: Mapping[str, Any] | None = None,
                    run: Mapping[str, Any] | None = None) -> None:
    """Write model, optimizer, scheduler, history and counters to one file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.safetensors`` or ``*.npz`` (tinynet/serialization.py).
    config : dict, optional
        JSON-serializable description of the run from the caller (the CLI's
        settings), stored beside the tensors.
    run : dict, optional
        ``describe_run`` of the run, which ``check_resume`` compares on resume.
    """
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if scheduler is not None:
        tensors.update({f"sched/{k}": v for k, v in scheduler.state_dict().items()})
    tensors.update({f"step/{k}": np.array(v, dtype=np.int64)
                    for k, v in _layer_steps(model).items()})
    metadata = {"format": CHECKPOINT_FORMAT, "epoch": str(int(epoch)),
                "loader_epoch": str(int(loader_epoch)), "history": history.to_json(),
                "config": json.dumps(config or {}), "run": json.dumps(run or {})}
    write_tensors(path, tensors, metadata)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file into its sections, checking its metadata.

    Returns
    -------
    dict
        ``model``, ``optim``, ``sched``, ``step``: dicts of arrays;
        ``epoch``, ``loader_epoch``: int; ``history``: History;
        ``config``, ``run``: dicts (empty when the file has none).

    Raises
    ------
    CheckpointError
        When the file is unreadable (see ``read_tensors``), is not a training
        checkpoint, or its counters or JSON do not parse.
    """
    path = os.fspath(path)
    tensors, metadata = read_tensors(path)
    # .npz checkpoints of earlier versions kept the counters and history as arrays
    for key in ("epoch", "loader_epoch"):
        if key in tensors and key not in metadata:
            metadata[key] = str(tensors.pop(key))
    missing = [k for k in ("epoch", "loader_epoch", "history") if k not in metadata]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is not a training checkpoint: no "
                              f"{', '.join(missing)} (a model file is read by model.load)")
    try:
        epoch, loader_epoch = int(metadata["epoch"]), int(metadata["loader_epoch"])
        history = History.from_json(metadata["history"])
        config = json.loads(metadata.get("config", "{}"))
        run = json.loads(metadata.get("run", "{}"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r}: bad metadata ({e})") from e
    if not isinstance(config, dict) or not isinstance(run, dict):
        raise CheckpointError(f"checkpoint {path!r}: its config and run must be JSON objects")
    if epoch < 0 or loader_epoch < 0 or len(history) != epoch:
        raise CheckpointError(f"checkpoint {path!r}: epoch {epoch}, loader_epoch "
                              f"{loader_epoch} and {len(history)} history records disagree")
    sections: dict[str, dict[str, NDArray[Any]]] = {
        name: {} for name in ("model", "optim", "sched", "step")}
    for key, value in tensors.items():
        name, _, rest = key.partition("/")
        if name not in sections or not rest:
            raise CheckpointError(f"checkpoint {path!r}: unexpected entry {key!r}")
        sections[name][rest] = value
    return dict(sections, epoch=epoch, loader_epoch=loader_epoch, history=history,
                config=config, run=run)


def load_checkpoint(path: str | os.PathLike[str], model: Layer, optimizer: Stateful | None = None,
                    scheduler: Stateful | None = None) -> tuple[int, History, int]:
    """Restore a checkpoint written by ``save_checkpoint`` (.safetensors or .npz).

    Everything is checked before anything is changed; errors name the file.

    Returns
    -------
    (epoch, history, loader_epoch)
        The number of epochs completed, their History, and the loader's
        shuffle counter.
    """
    path = os.fspath(path)
    ckpt = read_checkpoint(path)
    apply_checkpoint(path, ckpt, model, optimizer, scheduler)
    return ckpt["epoch"], ckpt["history"], ckpt["loader_epoch"]


def apply_checkpoint(path: str, ckpt: Mapping[str, Any], model: Layer,
                     optimizer: Stateful | None = None,
                     scheduler: Stateful | None = None) -> None:
    """Load the sections of ``read_checkpoint(path)`` into the objects, all or nothing."""
    steps = ckpt["step"]
    layers = dict(_named_layers(model))
    expected = _layer_steps(model)
    if set(steps) != set(expected):
        raise CheckpointError(f"checkpoint {path!r}: step counters for layers "
                              f"{sorted(steps)}, the model has them for {sorted(expected)}")
    for key, step in steps.items():
        if step.ndim != 0 or step.dtype.kind not in "iu" or step < 0:
            raise CheckpointError(f"checkpoint {path!r}: step/{key} must be a 0-d integer "
                                  f">= 0, got dtype {step.dtype} shape {step.shape}")
    given: list[tuple[Stateful | None, dict[str, NDArray[Any]]]] = [
        (model, ckpt["model"]), (optimizer, ckpt["optim"]), (scheduler, ckpt["sched"])]
    parts = [(obj, state) for obj, state in given if obj is not None]
    before = [obj.state_dict() for obj, _ in parts]
    try:
        for obj, state in parts:
            obj.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as e:
        for (obj, _), old in zip(parts, before):
            obj.load_state_dict(old)
        raise type(e)(f"{path}: {e.args[0]}") from e
    for key, step in steps.items():
        layer = layers[key]
        if hasattr(layer, "step"):  # always: the keys were checked against _layer_steps(model)
            layer.step = int(step)


def find_checkpoint(run_dir: str | os.PathLike[str]) -> str | None:
    """The checkpoint file of a run directory (the newest format present), or None."""
    for name in CHECKPOINT_NAMES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    return None


def _architecture(path: str, metadata: Mapping[str, str]) -> Any:
    """The architecture JSON in a model file's or checkpoint's metadata, or None."""
    text: str | None
    if "architecture" in metadata:
        text = metadata["architecture"]
    else:
        try:
            text = json.loads(metadata.get("run", "{}")).get("architecture")
            text = None if text is None else json.dumps(text)
        except (ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: bad run metadata ({e})") from e
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{path}: the architecture is not valid JSON ({e})") from e


def load_model(path: str | os.PathLike[str]) -> Layer:
    """Rebuild a model and its weights from a file, without the code that built it.

    Parameters
    ----------
    path : str or os.PathLike
        A model file (``layer.save``), a training checkpoint (``fit(...,
        checkpoint=...)``, ``tinynet train``), or a ``tinynet train`` run
        directory (its checkpoint).

    Returns
    -------
    Layer
        The model (usually a Sequential) in training mode, with the file's
        dtype, on the host; call ``.eval()`` and ``.to(device)`` as needed.

    Raises
    ------
    FileNotFoundError
        No such file, or a directory without a checkpoint.
    CheckpointError
        The file does not parse or holds no architecture (a file saved by
        an earlier version: build the model in code and call ``model.load``).
    ValueError, KeyError
        The architecture names an unknown layer class or does not match the
        tensors; the message names the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        found = find_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no {' or '.join(CHECKPOINT_NAMES)} (is it the "
                                    f"--out directory of `tinynet train`?)")
        path = found
    tensors, metadata = read_tensors(path)
    architecture = _architecture(path, metadata)
    if architecture is None:
        raise CheckpointError(f"{path}: holds no architecture (saved by an earlier version?); "
                              f"build the model in code and call model.load(path)")
    try:
        model = layer_from_config(architecture)
    except MemoryError as e:
        raise CheckpointError(f"{path}: the architecture needs more memory than this "
                              f"machine has") from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    if not isinstance(model, Layer):
        raise CheckpointError(f"{path}: the architecture is not a layer")
    is_checkpoint = metadata.get("format") == CHECKPOINT_FORMAT or "history" in metadata
    if is_checkpoint:
        state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    else:
        state = tensors
    floats = {v.dtype for v in state.values() if v.dtype.kind == "f"}
    if len(floats) == 1 and floats != {model.dtype}:
        model.to(floats.pop())  # a float64 model file loads as float64
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as e:
        raise type(e)(f"{path}: {e.args[0]}") from e
    if is_checkpoint:
        steps = {k[len("step/"):]: int(v) for k, v in tensors.items() if k.startswith("step/")}
        layers = dict(_named_layers(model))
        for key, step in steps.items():
            layer = layers.get(key)
            if layer is not None and hasattr(layer, "step"):
                layer.step = step
    return model
