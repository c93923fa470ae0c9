"""Residual and Concat: layers that hold layers and run them side by side.

Residual (He et al. 2016, https://arxiv.org/abs/1512.03385), with s the
shortcut (the identity when none is given):

    forward:   y = block(x) + s(x)                      block(x) and s(x) of one shape
    backward:  dx = block.backward(dy) + s.backward(dy)  (dx = ... + dy for the identity)

Concat (the branches of an Inception module, Szegedy et al. 2015,
https://arxiv.org/abs/1409.4842), with the branch outputs y_k joined along
``axis``:

    forward:   y = concatenate([y_1, ..., y_K], axis)
    backward:  dy_k = the slice of dy that y_k filled;  dx = sum_k branch_k.backward(dy_k)

In both, x fans out to several layers, and the gradients of x's copies add
up (docs/backprop.md derives it): that sum is the whole of the container's
own backward. The branches keep their own caches; a container caches only
what it needs to split dy. Keys follow a torch module with the attributes
``block``, ``shortcut`` (absent for the identity) and ``branches`` (an
``nn.ModuleList``): "block.0.weight", "shortcut.0.weight",
"branches.1.0.weight", so state dicts load both ways with the torch twin.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from numpy.typing import DTypeLike

from ..parameter import Array, Parameter
from .base import Layer, layer_from_config, layer_to_config

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Container", "Residual", "Concat"]


class Container(Layer):
    """A layer made of named sub-layers (``children()``): their parameters and
    buffers under "<key>.", their train/eval mode and their device and dtype."""

    def children(self) -> list[tuple[str, Layer]]:
        """List of ``(key, layer)`` in state_dict order."""
        raise NotImplementedError

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        out = []
        for key, layer in self.children():
            out.extend(layer.named_parameters(f"{prefix}{key}."))
        return out

    def named_buffers(self, prefix: str = "") -> list[tuple[str, Array]]:
        out = []
        for key, layer in self.children():
            out.extend(layer.named_buffers(f"{prefix}{key}."))
        return out

    def train(self, mode: bool = True) -> Self:
        self.training = bool(mode)
        for _, layer in self.children():
            layer.train(mode)
        return self

    def to(self, target: str | DTypeLike) -> Self:
        """Move every sub-layer to a device ("cuda", "cpu") or cast it to a dtype. Returns self."""
        for _, layer in self.children():
            layer.to(target)
        return self

    @property
    def requires_input_grad(self) -> bool:
        return self._requires_input_grad

    @requires_input_grad.setter
    def requires_input_grad(self, value: bool) -> None:
        # Every sub-layer sees x, and computes dx only when the container needs it.
        self._requires_input_grad = bool(value)
        for _, layer in self.children():
            layer.requires_input_grad = bool(value)

    def _check_dy_shape(self, dy: Array, shape: Sequence[int] | None) -> None:
        if self._cache is None or shape is None:  # shape is None only before a forward
            raise RuntimeError(f"{self.name}.backward called before forward")
        if getattr(dy, "shape", None) != tuple(shape):
            raise ValueError(f"{self.name}.backward: dy must have the output's shape "
                             f"{tuple(shape)}, got {getattr(dy, 'shape', type(dy).__name__)}")

    def _add(self, total: Array, g: Array, dy: Array) -> Array:
        """total + g, in place when ``total`` is a sub-layer's own fresh array (it
        shares no memory with dy: a layer may pass dy, or a view of it, through)."""
        xp = self.ops.array_module()
        if xp.may_share_memory(total, dy) or xp.may_share_memory(total, g):
            return total + g
        total += g
        return total


class Residual(Container):
    """y = block(x) + shortcut(x); the shortcut is the identity when None.

    Parameters
    ----------
    block : Layer
        Usually a Sequential; its output must have the shortcut's output shape.
    shortcut : Layer or None
        A projection (e.g. a 1x1 Conv2D with stride 2) when the block changes
        the shape; None for the identity.

    Shapes
    ------
    x: any shape the block takes; y: the block's output shape.
    """

    def __init__(self, block: Layer, shortcut: Layer | None = None) -> None:
        for arg, layer in (("block", block), ("shortcut", shortcut)):
            if layer is not None and not isinstance(layer, Layer):
                raise TypeError(f"Residual: {arg} must be a tinynet layer, "
                                f"got {type(layer).__name__}")
        if block is None:
            raise TypeError("Residual: block must be a tinynet layer, got None")
        self.block = block
        self.shortcut = shortcut
        super().__init__()

    def children(self) -> list[tuple[str, Layer]]:
        return [("block", self.block)] + ([("shortcut", self.shortcut)]
                                          if self.shortcut is not None else [])

    def forward(self, x: Array) -> Array:
        """y = block(x) + shortcut(x). x: the block's input; y: its output's shape."""
        self._cache = None
        y = self.block.forward(x)
        s = x if self.shortcut is None else self.shortcut.forward(x)
        if y.shape != s.shape:
            if self.shortcut is None:
                raise ValueError(f"Residual: the block maps {tuple(x.shape)} to "
                                 f"{tuple(y.shape)}, and the identity shortcut keeps "
                                 f"{tuple(s.shape)}; pass a projection shortcut, e.g. "
                                 f"Residual(block, shortcut=Conv2D(..., kernel_size=1, stride=...))")
            raise ValueError(f"Residual: the block's output {tuple(y.shape)} and the "
                             f"shortcut's output {tuple(s.shape)} cannot be added")
        self._cache = y.shape
        # A fresh array: the block's last layer may keep its output for its backward.
        return y + s

    def backward(self, dy: Array) -> Array | None:
        """dx = block.backward(dy) + shortcut.backward(dy) (dy itself for the identity);
        None when ``requires_input_grad`` is False."""
        self._check_dy_shape(dy, self._cache)
        dx = self.block.backward(dy)
        ds = dy if self.shortcut is None else self.shortcut.backward(dy)
        if not self.requires_input_grad:
            return None
        return self._add(dx, ds, dy)  # the fan-out sum

    def extra_repr(self) -> str:
        return f"{self.block!r}" + (f", shortcut={self.shortcut!r}" if self.shortcut else "")


class Concat(Container):
    """y = concatenate([branch(x) for branch in branches], axis).

    Parameters
    ----------
    *branches : Layer
        Each sees the same x; their outputs must agree on every axis but ``axis``.
    axis : int, default 1
        The axis to join along (1: channels of (N, C, H, W) or features of (N, F));
        axis 0, the batch, is not allowed.

    Shapes
    ------
    x: any shape every branch takes; y: the branches' common shape with
    ``y.shape[axis] = sum of the branches' sizes along axis``.
    """

    def __init__(self, *branches: Layer, axis: int = 1) -> None:
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        for k, layer in enumerate(branches):
            if not isinstance(layer, Layer):
                raise TypeError(f"Concat: branch {k} must be a tinynet layer, "
                                f"got {type(layer).__name__}")
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Concat: axis must be a non-batch axis (an int other than 0), "
                             f"got {axis!r}")
        self.branches = list(branches)
        self.axis = axis
        super().__init__()

    def get_config(self) -> dict[str, Any]:
        """``{"branches": [layer_to_config(b), ...], "axis": axis}``."""
        return {"branches": [layer_to_config(b) for b in self.branches], "axis": self.axis}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        config = dict(config)
        return cls(*[layer_from_config(c) for c in config.pop("branches", [])], **config)

    def children(self) -> list[tuple[str, Layer]]:
        return [(f"branches.{k}", layer) for k, layer in enumerate(self.branches)]

    def forward(self, x: Array) -> Array:
        """Every branch on x, joined along ``axis``."""
        self._cache = None
        ys = [branch.forward(x) for branch in self.branches]
        ndim = ys[0].ndim
        if not -ndim < self.axis < ndim:
            raise ValueError(f"Concat: axis {self.axis} is out of range for the branch "
                             f"outputs of shape {tuple(ys[0].shape)}")
        axis = self.axis % ndim
        first = ys[0].shape
        for k, y in enumerate(ys[1:], start=1):
            if y.ndim != ndim or any(a != b for i, (a, b) in enumerate(zip(first, y.shape))
                                     if i != axis):
                raise ValueError(f"Concat: branch 0's output {tuple(first)} and branch {k}'s "
                                 f"output {tuple(y.shape)} cannot be joined along axis "
                                 f"{self.axis}")
        backend = self.ops
        y = backend.asarray(backend.array_module().concatenate(ys, axis=axis))
        self._cache = (axis, [t.shape[axis] for t in ys], y.shape)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Each branch's backward on its slice of dy; dx is the sum of their dx."""
        self._check_dy_shape(dy, self._cache[2] if self._cache else ())
        axis, sizes, _ = self._cache
        dx: Array | None = None
        start = 0
        for branch, size in zip(self.branches, sizes):
            index = (slice(None),) * axis + (slice(start, start + size),)
            start += size
            g = branch.backward(self.ops.asarray(dy[index]))  # C-contiguous, on the device
            if g is None:
                continue
            dx = g if dx is None else self._add(dx, g, dy)  # the fan-out sum
        return dx if self.requires_input_grad else None

    def extra_repr(self) -> str:
        return ", ".join(repr(b) for b in self.branches) + f", axis={self.axis}"
