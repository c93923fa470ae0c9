"""Parameter: a learnable tensor and its gradient.

A Parameter holds ``data`` (the value) and ``grad`` (same shape and dtype,
zeros at creation). Layers' backward passes ADD into ``grad``
(``accumulate_grad``); an optimizer reads ``grad`` and updates ``data`` in
place; ``zero_grad`` clears ``grad``.

``zero_grad`` is lazy: it marks the gradient as zero, and the first
``accumulate_grad`` after it takes the layer's fresh gradient array as
``grad`` instead of filling zeros and adding to them, which were two passes
over every parameter per step (Dense(3136, 128): 1.6 MB each). Reading
``grad`` while it is marked fills the zeros first, so every reader sees the
values it always did. As with torch's ``zero_grad(set_to_none=True)``, the
``grad`` array after a backward may be a new object: read ``p.grad`` again
rather than keep a reference from before ``zero_grad``.

``Array`` is the type hint of the arrays tinynet computes on: a numpy array
on the "ref" and "cpu" backends, a CuPy array on "cuda". To a type checker
it is ``NDArray[Any] | cupy.ndarray``; cupy is imported for the checker
only (it is absent on most machines, and CuPy ships no type information, so
mypy reads that half as ``Any``). At run time ``Array`` is numpy's
``NDArray[Any]`` and nothing imports cupy for it (tinynet.backends defines it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from .backends import Array as Array, device_of, move

if TYPE_CHECKING:
    from typing_extensions import Self


class Parameter:
    """A learnable array with its accumulated gradient.

    Parameters
    ----------
    data : array_like
        Initial value. It is copied into a C-contiguous float array.
    name : str, optional
        Short name used in messages ("weight", "bias").

    Attributes
    ----------
    data : array
        The value, any shape: a numpy array, or a device array after
        ``model.to("cuda")``.
    grad : array
        The gradient of the loss with respect to ``data``, same shape, dtype
        and device.
    """

    def __init__(self, data: Any, name: str | None = None) -> None:
        data = np.array(data, copy=True)
        if data.dtype.kind != "f":
            data = data.astype(np.float32)
        self.data: Array = np.ascontiguousarray(data)
        self._grad: Array = np.zeros_like(self.data)
        self._zeroed = False  # True: grad is zero, whatever _grad still holds
        self.name = name

    @property
    def grad(self) -> Array:
        """The accumulated gradient (zeros after ``zero_grad``)."""
        if self._zeroed:
            self._grad[...] = 0
            self._zeroed = False
        return self._grad

    @grad.setter
    def grad(self, value: Array) -> None:
        self._grad = value
        self._zeroed = False

    def accumulate_grad(self, g: Array, fresh: bool = False) -> None:
        """grad += g.

        Parameters
        ----------
        g : array
            A gradient of ``data``'s shape, on its device.
        fresh : bool
            The caller guarantees that nothing else references ``g`` (a
            backward op's new output). After ``zero_grad`` such a g of
            ``grad``'s shape, dtype, type and layout becomes ``grad`` itself,
            without a copy or an add.
        """
        old = self._grad
        if (fresh and self._zeroed and type(g) is type(old) and g.shape == old.shape
                and g.dtype == old.dtype and g.flags.c_contiguous):
            self._grad = g
            self._zeroed = False
            return
        grad = self.grad
        grad += g

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        """Set ``grad`` to zeros (lazily: see the module docstring)."""
        self._zeroed = True

    @property
    def device(self) -> str:
        """Where ``data`` and ``grad`` live: "cpu" or "cuda"."""
        return device_of(self.data)

    def astype_(self, dtype: DTypeLike) -> Self:
        """Cast ``data`` and ``grad`` to ``dtype`` in place of the old arrays, on their device."""
        self.data = self.data.astype(dtype, order="C")
        self.grad = self.grad.astype(dtype, order="C")
        return self

    def to_(self, device: str) -> Self:
        """Move ``data`` and ``grad`` to ``device`` ("cpu" or "cuda") in place of the old arrays."""
        self.data = move(self.data, device)
        self.grad = move(self.grad, device)
        return self

    def __repr__(self) -> str:
        name = f"{self.name}, " if self.name else ""
        device = self.device
        where = "" if device == "cpu" else f", device={device}"
        return f"Parameter({name}shape={self.data.shape}, dtype={self.data.dtype}{where})"
