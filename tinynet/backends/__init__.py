"""Backend selection and dispatch.

A backend is a module that exposes the same set of op functions (the op
contract in docs/architecture.md): ``dense_forward``, ``conv2d_backward``,
``norm_stats`` and so on. Layers never import a backend directly; they call
``get_backend().<op>(...)``, so a new backend slots in without touching them.

Backends:

- ``"ref"``: plain NumPy, readable, the test oracle (``tinynet.backends.ref``).
- ``"cpu"``: Numba ``@njit(parallel=True)`` kernels (``tinynet.backends.cpu``).
- ``"cuda"``: numba.cuda kernels (``tinynet.backends.cuda``), never chosen
  implicitly; asking for it without a GPU is an error.

The default is the fastest backend that imports on this machine.

Devices. Every backend module also has a ``DEVICE`` ("cpu" for ref and cpu,
"cuda" for cuda) and ``array_module()``, ``is_native(a)`` and
``asarray(a, dtype=None)``; a device backend also has ``to_host(a)``. The
backend is chosen globally; an array's device is where it lives. Layers,
losses and optimizers check that their inputs and parameters live on the
active backend's device and raise ``DeviceMismatchError`` naming the layer
and both devices otherwise; nothing is copied between devices implicitly.
Arrays move only by ``to_device`` / ``to_host`` / ``model.to(device)``.

For a type checker a backend is a ``ModuleType``: its ops are read as ``Any``,
as the op modules have no hints yet.
"""
from __future__ import annotations

import importlib
import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

# An array of any backend: numpy on the host backends, CuPy on cuda (named for the
# type checker only, so that cupy is not imported). tinynet.parameter re-exports it.
if TYPE_CHECKING:
    import cupy

    Array: TypeAlias = Union[NDArray[Any], cupy.ndarray]
else:
    Array = NDArray[Any]

_MODULES = {
    "ref": "tinynet.backends.ref",
    "cpu": "tinynet.backends.cpu",
    "cuda": "tinynet.backends.cuda",
}
# Fastest first; "cuda" is only ever used when asked for by name.
_DEFAULT_ORDER = ("cpu", "ref")

_loaded: dict[str, ModuleType] = {}
_current: ModuleType | None = None


def _load(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_MODULES)}")
    if name not in _loaded:
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as e:
            raise RuntimeError(f"backend {name!r} is not available on this machine: {e}") from e
        check = getattr(module, "check_available", None)
        if check is not None:
            try:
                check()
            except RuntimeError as e:
                raise RuntimeError(f"backend {name!r} is not available on this machine: {e}") from e
        _loaded[name] = module
    return _loaded[name]


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in ("cuda",) + _DEFAULT_ORDER:
        try:
            _load(name)
        except (ImportError, RuntimeError):
            continue
        names.append(name)
    return names


def default_backend_name() -> str:
    """The name of the fastest CPU backend that loads here."""
    for name in _DEFAULT_ORDER:
        try:
            _load(name)
            return name
        except (ImportError, RuntimeError):
            continue
    raise RuntimeError("no tinynet backend could be loaded")


def set_backend(name: str) -> ModuleType:
    """Make ``name`` ("ref", "cpu" or "cuda") the backend every layer uses.

    Raises ValueError for an unknown name and RuntimeError when the backend
    cannot run here (e.g. "cuda" without a GPU). There is no silent fallback.
    """
    global _current
    _current = _load(name)
    return _current


def get_backend() -> ModuleType:
    """The active backend module (the default one on first use)."""
    global _current
    if _current is None:
        _current = _load(default_backend_name())
    return _current


def backend_name() -> str:
    """The name of the active backend."""
    return get_backend().NAME


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """Context manager: run a block with backend ``name``, then restore."""
    global _current
    previous = _current
    backend = set_backend(name)
    try:
        yield backend
    finally:
        _current = previous


class DeviceMismatchError(RuntimeError, TypeError):
    """An array (or a layer's parameters) is not on the device that would use it."""


def device_of(a: object) -> str:
    """The device an array lives on: "cuda" for a cuda device array, else "cpu"."""
    for module in _loaded.values():
        if module.DEVICE != "cpu" and module.is_native(a):
            return module.DEVICE
    return "cpu"


def device_backend(device: str) -> ModuleType:
    """The backend module whose arrays live on ``device`` ("cpu" or "cuda").

    "cpu" is the active backend when it runs on the host, else the default
    one; "cuda" loads the cuda backend (RuntimeError with the reason when it
    cannot run here).
    """
    if device == "cpu":
        current = get_backend()
        return current if current.DEVICE == "cpu" else _load(default_backend_name())
    if device == "cuda":
        return _load("cuda")
    raise ValueError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")


def to_device(x: ArrayLike | Array, device: str = "cuda",
              dtype: DTypeLike | None = None) -> Array:
    """Copy a host array to ``device`` (default "cuda"); a device array stays as it is.

    Parameters
    ----------
    x : array_like
        Any shape and dtype: inputs (float32) and integer labels (int64) alike.
    device : str
        "cuda" (the default) or "cpu".
    dtype : dtype, optional
        Convert to this dtype on the way.

    Returns
    -------
    array
        A C-contiguous array of ``device``: a CuPy array on a GPU, a
        ``SimDeviceArray`` under the CUDA simulator, numpy for "cpu".
    """
    if device == "cpu":
        return np.asarray(to_host(x), dtype=dtype, order="C")
    return device_backend(device).asarray(x, dtype)


def to_host(a: ArrayLike | Array) -> NDArray[Any]:
    """A numpy array of ``a``: a fresh copy of a device array, a host array as it is."""
    for module in _loaded.values():
        if module.DEVICE != "cpu" and module.is_native(a):
            return module.to_host(a)
    return np.asarray(a)


def move(a: Array, device: str) -> Array:
    """``a`` on ``device``: itself when it is there already, else a copy."""
    if device_of(a) == device:
        return a
    return to_host(a) if device == "cpu" else device_backend(device).asarray(a)


def array_module_of(a: object) -> ModuleType:
    """The array module (numpy, or CuPy on a GPU) that computes on ``a``'s device."""
    return device_backend(device_of(a)).array_module()


def check_device(owner: str, what: str, a: object, backend: ModuleType | None = None,
                 parameter: bool = False) -> None:
    """Raise DeviceMismatchError unless ``a`` lives on the backend's device.

    ``owner`` names the layer, loss or optimizer and ``what`` the array
    ("input", "dy", "the parameters") for the message; ``parameter`` says
    that the fix is to move the model rather than the array.
    """
    backend = backend or get_backend()
    device = device_of(a)
    if device == backend.DEVICE:
        return
    if parameter:
        fix = (f"move the model with model.to({backend.DEVICE!r}) or select a backend "
               f"that runs on {device}")
    else:
        fix = f"move it with tn.{'to_host' if backend.DEVICE == 'cpu' else 'to_device'}(x)"
    raise DeviceMismatchError(f"{owner}: {what} (on {device}) cannot be used by the active "
                              f"backend {backend.NAME!r}, which runs on {backend.DEVICE}; "
                              f"{fix}")
