"""Layer: the base class of every tinynet layer, and the layer contract.

The contract (docs/architecture.md):

- ``y = layer.forward(x)`` (or ``layer(x)``) computes the output and caches
  what the backward pass needs.
- ``dx = layer.backward(dy)`` returns a fresh ``dx`` and ADDS the parameter
  gradients into each ``Parameter.grad``. Calling it before a forward raises.
- Learnable tensors are ``Parameter`` attributes named in ``param_names``;
  buffers (running statistics) are plain arrays named in ``buffer_names``.
- ``train()`` / ``eval()`` set ``training``; training is the default.
- ``requires_input_grad = False`` lets a layer skip computing ``dx`` (the
  first layer of a network needs none); its backward then returns None.
- ``to("cuda")`` / ``to("cpu")`` moves parameters, grads and buffers to a
  device; ``to(dtype)`` casts them. Inputs must live on the active backend's
  device, and so must the parameters: a mismatch raises DeviceMismatchError
  naming the layer and both devices.
- ``get_config()`` returns the constructor arguments as JSON data (nested
  layers as ``{"class": ..., "config": ...}``); ``layer_from_config`` rebuilds
  the layer from them, so a saved model loads without the code that built it.
"""
from __future__ import annotations

import inspect
import json
import numbers
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..backends import check_device, device_of, get_backend, move, to_host
from ..parameter import Array, Parameter
from ..serialization import read_tensors, write_tensors
from ..state import check_and_load

if TYPE_CHECKING:
    from typing_extensions import Self

DEVICES = ("cpu", "cuda")

# class name -> Layer subclass: every layer class of tinynet (registered as it is
# defined) and the user classes passed to ``register_layer``.
LAYER_CLASSES: dict[str, type[Layer]] = {}

_LayerClass = TypeVar("_LayerClass", bound="type[Layer]")


def register_layer(cls: _LayerClass) -> _LayerClass:
    """Make a user Layer subclass loadable by ``layer_from_config`` (a class decorator).

    Its ``get_config()`` must return the constructor's keyword arguments
    (the default reads each one from the attribute of the same name).
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer: expected a Layer subclass, got {cls!r}")
    LAYER_CLASSES[cls.__name__] = cls
    return cls


def _config_value(layer: Layer, name: str, value: object) -> Any:
    """A constructor argument as JSON data: nested layers as their config, tuples as lists."""
    if isinstance(value, Layer):
        return layer_to_config(value)
    if isinstance(value, Parameter):  # e.g. bias=True: the flag is whether the parameter exists
        return True
    if value is None and name in layer.param_names:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (str, type(None))):
        return value
    if isinstance(value, (tuple, list)):
        return [_config_value(layer, name, v) for v in value]
    raise TypeError(f"{layer.name}.get_config: argument {name!r} holds a "
                    f"{type(value).__name__}, which is not JSON data; define get_config")


def layer_to_config(layer: Layer) -> dict[str, Any]:
    """``{"class": name, "config": layer.get_config()}``: the layer as JSON data.

    A Sequential (or any layer) whose ``requires_input_grad`` is False records
    it as ``"requires_input_grad": false``.
    """
    out: dict[str, Any] = {"class": type(layer).__name__, "config": layer.get_config()}
    if not layer.requires_input_grad:
        out["requires_input_grad"] = False
    return out


def _from_value(value: Any) -> Any:
    """A config value with nested layer configs rebuilt (and lists of them)."""
    if isinstance(value, dict) and "class" in value:
        return layer_from_config(value)
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return [_from_value(v) for v in value]
    return value


def layer_from_config(config: Mapping[str, Any]) -> Layer:
    """Rebuild a layer (and the layers inside it) from ``layer_to_config``'s data.

    Raises ValueError naming the class or argument that does not fit: an
    unknown class (user classes need ``register_layer``), arguments the
    constructor does not take, or values it refuses.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class"), str) \
            or not isinstance(config.get("config", {}), dict):
        raise ValueError(f"layer config must be {{'class': str, 'config': dict}}, "
                         f"got {str(config)[:80]}")
    name = config["class"]
    cls = LAYER_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"layer config: unknown layer class {name!r} (a class of your own "
                         f"needs tinynet.register_layer before loading)")
    try:
        layer = cls.from_config(config.get("config", {}))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"layer config of {name}: {e}") from e
    if config.get("requires_input_grad") is False:
        layer.requires_input_grad = False
    return layer


class Layer:
    """Base class: parameters, buffers, train/eval, state_dict and checks.

    Subclasses set ``param_names`` and ``buffer_names`` (attribute names, in
    state_dict order) and implement ``forward`` and ``backward``.
    """

    param_names: tuple[str, ...] = ()
    buffer_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("tinynet.") and not cls.__name__.startswith("_"):
            LAYER_CLASSES[cls.__name__] = cls

    def __init__(self) -> None:
        self.training = True
        self.requires_input_grad = True
        # The backward cache: whatever tuple the layer's forward keeps for its
        # backward (arrays, shapes, dtypes), None before a forward.
        self._cache: Any = None
        self._dtype: np.dtype[Any] | None = None

    # -- calling --------------------------------------------------------
    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, dy: Array) -> Array | None:
        raise NotImplementedError

    @property
    def ops(self) -> Any:
        """The active backend's op namespace (see ``tinynet.backends``)."""
        return get_backend()

    # -- parameters and buffers -------------------------------------------
    def children(self) -> list[tuple[str, Layer]]:
        """List of ``(key, layer)`` of the layers this one holds (containers); [] here."""
        return []

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        """List of ``(name, Parameter)`` in state_dict order (weight before bias)."""
        out = []
        for name in self.param_names:
            p = getattr(self, name)
            if p is not None:
                out.append((prefix + name, p))
        return out

    def parameters(self) -> list[Parameter]:
        """List of the layer's Parameters, weight before bias."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> list[tuple[str, Array]]:
        """List of ``(name, array)`` of the buffers (running statistics), in state_dict order."""
        out = []
        for name in self.buffer_names:
            b = getattr(self, name)
            if b is not None:
                out.append((prefix + name, b))
        return out

    def zero_grad(self) -> None:
        """Clear the gradient of every parameter."""
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> Self:
        """Set training mode (``mode=True``) or eval mode. Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> Self:
        """Set eval mode. Returns self."""
        return self.train(False)

    def to(self, target: str | DTypeLike) -> Self:
        """Move the layer to a device, or cast it to a dtype, in place. Returns self.

        Parameters
        ----------
        target : str or dtype
            "cuda" or "cpu": parameters, grads and floating buffers move to that device
            (RuntimeError with the reason when "cuda" cannot run here). float32 or
            float64: parameters and floating buffers are cast to it, on the
            device where they are.
        """
        if isinstance(target, str) and target in DEVICES:
            for p in self.parameters():
                p.to_(target)
            # Floating buffers (running statistics) move; integer counters
            # (num_batches_tracked) are bookkeeping and stay on the host.
            for name, b in self.named_buffers():
                if b.dtype.kind == "f":
                    setattr(self, name, move(b, target))
            return self
        try:
            dtype = np.dtype(target)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.name}.to: dtype must be float32 or float64, or a device "
                            f"{DEVICES}, got {target!r}")
        for p in self.parameters():
            p.astype_(dtype)
        for name, b in self.named_buffers():
            if b.dtype.kind == "f":
                setattr(self, name, b.astype(dtype, order="C"))
        return self

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The dtype of the layer's parameters, or None for a layer without any."""
        ps = self.parameters()
        return ps[0].data.dtype if ps else None

    @property
    def device(self) -> str | None:
        """Where the layer's parameters live ("cpu" or "cuda"), or None without any."""
        ps = self.parameters()
        return ps[0].device if ps else None

    # -- state_dict ---------------------------------------------------------
    def state_dict(self, prefix: str = "") -> dict[str, NDArray[Any]]:
        """Dict of name -> numpy copy, wherever the layer lives: parameters, then
        buffers (PyTorch's keys)."""
        sd = {}
        for name, p in self.named_parameters(prefix):
            sd[name] = np.array(to_host(p.data))
        for name, b in self.named_buffers(prefix):
            sd[name] = np.array(to_host(b))
        return sd

    def load_state_dict(self, state: Mapping[str, Any], prefix: str = "",
                        strict: bool = True) -> None:
        """Copy arrays from ``state`` into parameters and buffers.

        Every expected key must be present with the right shape; with
        ``strict`` no other key under ``prefix`` may be present. The error
        names the first key that is wrong.
        """
        check_and_load([(self, prefix)], state, strict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state_dict and the architecture to ``path`` atomically.

        Parameters
        ----------
        path : str or os.PathLike
            ``*.safetensors`` (PyTorch's keys: ``safetensors.torch.load_file``
            gives a dict that the torch twin of the model loads) or ``*.npz``.
            The metadata holds ``layer_to_config(self)`` as JSON under
            "architecture", so ``tinynet.load_model(path)`` rebuilds the model
            without its code.
        """
        write_tensors(path, self.state_dict(),
                      {"format": "tinynet-model", "architecture": json.dumps(layer_to_config(self))})

    def load(self, path: str | os.PathLike[str]) -> Self:
        """Read a state_dict from a ``.safetensors`` or ``.npz`` file into this layer. Returns self.

        The file is never unpickled. Raises ``CheckpointError`` (a ValueError)
        for a file that does not parse or holds NaN or inf, and KeyError,
        ValueError or TypeError for a missing or unexpected key or a wrong
        shape or dtype; each message names the file, and nothing is changed
        then.
        """
        path = os.fspath(path)
        state, _ = read_tensors(path)
        try:
            self.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as e:
            raise type(e)(f"{path}: {e.args[0]}") from e
        return self

    # -- architecture ---------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments as a dict of JSON data.

        The default reads each argument of ``__init__`` from the attribute of
        the same name; a flag named like a parameter (``bias``) records
        whether that parameter exists. Layers whose arguments are not kept
        as attributes (containers, wrappers) override it.
        """
        config = {}
        for name, arg in list(inspect.signature(type(self).__init__).parameters.items())[1:]:
            if arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD) or not hasattr(self, name):
                raise NotImplementedError(f"{self.name}.get_config: cannot read the "
                                          f"constructor argument {name!r}; define get_config")
            config[name] = _config_value(self, name, getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The layer ``cls(**config)``; nested layer configs are rebuilt first."""
        return cls(**{k: _from_value(v) for k, v in config.items()})

    # -- checks ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def _check_devices(self, what: str, a: Array) -> Any:
        """Raise DeviceMismatchError unless the parameters and ``a`` are on the backend's device.

        Returns the backend."""
        backend = self.ops
        for p in self.parameters()[:1]:
            check_device(self.name, "the parameters", p.data, backend, parameter=True)
        check_device(self.name, what, a, backend)
        return backend

    def _check_input(self, x: Array, ndims: Collection[int], what: str) -> Array:
        """Raise a clear error unless ``x`` is a float array of rank in ``ndims``.

        ``what`` describes the expected shape, e.g. "(N, C, H, W)". ``x`` and
        the parameters must live on the active backend's device. The old
        backward cache is dropped first, so a failed forward cannot leave a
        stale one behind, and the input dtype is kept for ``_check_dy``.
        """
        self._cache = None
        if not (isinstance(x, np.ndarray) or device_of(x) != "cpu"):
            raise TypeError(f"{self.name}: input must be an array of shape {what}, "
                            f"got {type(x).__name__}")
        backend = self._check_devices("input", x)
        if x.ndim not in ndims:
            raise ValueError(f"{self.name}: input must have shape {what}, got shape {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.name}: input must be float32 or float64, got {x.dtype}")
        dtype = self.dtype
        if dtype is not None and x.dtype != dtype:
            raise TypeError(f"{self.name}: input dtype {x.dtype} does not match the layer's "
                            f"parameters ({dtype}); cast x or call layer.to({x.dtype.name})")
        self._dtype = x.dtype
        return backend.asarray(x)

    def _check_dy(self, dy: Array, shape: Sequence[int] | None) -> Array:
        """Raise unless forward ran and ``dy`` has the output's ``shape``, on the device.

        ``shape`` is None only when no forward ran (the callers read it from the cache).
        """
        if self._cache is None or shape is None:
            raise RuntimeError(f"{self.name}.backward called before forward")
        if getattr(dy, "shape", None) != tuple(shape):
            got = getattr(dy, "shape", type(dy).__name__)
            raise ValueError(f"{self.name}.backward: dy must have the output's shape "
                             f"{tuple(shape)}, got {got}")
        backend = self._check_devices("dy", dy)
        if dy.dtype != self._dtype:
            raise TypeError(f"{self.name}.backward: dy must have the forward input's dtype "
                            f"{self._dtype}, got {dy.dtype}")
        return backend.asarray(dy)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{self.name}({self.extra_repr()})"
