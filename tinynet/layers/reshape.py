"""Flatten: (N, d1, d2, ...) -> (N, d1*d2*...), as torch.nn.Flatten().

forward:   y = x reshaped to (N, prod(x.shape[1:]))
backward:  dx = dy reshaped back to x's shape
"""
from __future__ import annotations

import math

from ..parameter import Array
from .base import Layer

__all__ = ["Flatten"]


class Flatten(Layer):
    """Flatten every axis but the batch axis (torch.nn.Flatten with start_dim=1).

    Shapes
    ------
    x (N, *) -> y (N, prod(*))
    """

    def forward(self, x: Array) -> Array:
        """Reshape x (N, *) to (N, prod(*)). The output is a view of x."""
        # Any rank from 2 up; NumPy arrays have at most 64 axes.
        x = self._check_input(x, range(2, 65), "(N, *) with at least 2 dims")
        y = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        self._cache = (x.shape, y.shape, x.dtype)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Reshape dy (N, prod(*)) back to the input's shape; returns a fresh array, or None."""
        dy = self._check_dy(dy, self._cache[1] if self._cache else None)
        x_shape, _, dtype = self._cache
        if dy.dtype != dtype:
            raise TypeError(f"Flatten.backward: dy dtype {dy.dtype} does not match the "
                            f"input's ({dtype})")
        if not self.requires_input_grad:
            return None
        return dy.reshape(x_shape).copy()
