"""Parameter: a learnable tensor and its gradient.

A Parameter holds ``data`` (the value) and ``grad`` (same shape and dtype,
zeros at creation). Layers' backward passes ADD into ``grad``; an optimizer
reads ``grad`` and updates ``data`` in place; ``zero_grad`` clears ``grad``.
"""
import numpy as np


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
    data : np.ndarray
        The value, any shape.
    grad : np.ndarray
        The gradient of the loss with respect to ``data``, same shape and dtype.
    """

    def __init__(self, data, name=None):
        data = np.array(data, copy=True)
        if data.dtype.kind != "f":
            data = data.astype(np.float32)
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        """Set ``grad`` to zeros, in place."""
        self.grad[...] = 0

    def astype_(self, dtype):
        """Cast ``data`` and ``grad`` to ``dtype`` in place of the old arrays."""
        self.data = np.ascontiguousarray(self.data.astype(dtype))
        self.grad = np.ascontiguousarray(self.grad.astype(dtype))
        return self

    def __repr__(self):
        name = f"{self.name}, " if self.name else ""
        return f"Parameter({name}shape={self.data.shape}, dtype={self.data.dtype})"
