"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh, GELU and Softmax.

Each maps x to y elementwise (Softmax along one axis) and has no parameters.
The math of every forward and backward pass is the contract's,
tinynet/ops/activation/__init__.py; the layers run its ops on the active
backend. ReLU, LeakyReLU and GELU cache the input x for their backward pass;
Sigmoid, Tanh and Softmax cache the output y, from which their derivative is
cheapest.

They take any input of rank >= 1 (Softmax needs ``dim`` to be one of its
axes), float32 or float64, and return the input's dtype, as torch.nn does.
"""
from __future__ import annotations

from ..parameter import Array
from .base import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax"]

# Elementwise layers accept any rank from 1 up to numpy's limit.
_ANY_RANK = range(1, 65)
_ANY_SHAPE = "(*) with at least one dim"


class ReLU(Layer):
    """Rectified linear unit, as torch.nn.ReLU.

    Shapes: x (*) -> y (*), the same shape.
    """

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        self._cache = x
        return self.ops.relu_forward(x)

    def backward(self, dy: Array) -> Array | None:
        dy = self._check_dy(dy, getattr(self._cache, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.relu_backward(self._cache, dy)


class LeakyReLU(Layer):
    """Leaky ReLU, as torch.nn.LeakyReLU.

    Shapes: x (*) -> y (*), the same shape.

    Parameters
    ----------
    negative_slope : float
        The slope for x <= 0.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        self._cache = x
        return self.ops.leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy: Array) -> Array | None:
        dy = self._check_dy(dy, getattr(self._cache, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.leaky_relu_backward(self._cache, dy, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """Logistic sigmoid, as torch.nn.Sigmoid.

    Shapes: x (*) -> y (*), the same shape.
    """

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        y = self.ops.sigmoid_forward(x)
        self._cache = y
        return y

    def backward(self, dy: Array) -> Array | None:
        dy = self._check_dy(dy, getattr(self._cache, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.sigmoid_backward(self._cache, dy)


class Tanh(Layer):
    """Hyperbolic tangent, as torch.nn.Tanh.

    Shapes: x (*) -> y (*), the same shape.
    """

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        y = self.ops.tanh_forward(x)
        self._cache = y
        return y

    def backward(self, dy: Array) -> Array | None:
        dy = self._check_dy(dy, getattr(self._cache, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.tanh_backward(self._cache, dy)


class GELU(Layer):
    """Gaussian error linear unit, exact erf form, as torch.nn.GELU() (approximate='none').

    Shapes: x (*) -> y (*), the same shape.
    """

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        self._cache = x
        return self.ops.gelu_forward(x)

    def backward(self, dy: Array) -> Array | None:
        dy = self._check_dy(dy, getattr(self._cache, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.gelu_backward(self._cache, dy)


class Softmax(Layer):
    """Softmax along ``dim``, as torch.nn.Softmax.

    Shapes: x (*) with ``dim`` in [-x.ndim, x.ndim) -> y (*), the same shape.

    Parameters
    ----------
    dim : int
        The axis that sums to 1. The default 1 is torch's implicit choice for
        (N, K) logits and (N, C, H, W) maps; negative values count from the end.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, _ANY_RANK, _ANY_SHAPE)
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"Softmax: dim={self.dim} is out of range for an input of "
                             f"shape {x.shape}; expected dim in [{-x.ndim}, {x.ndim})")
        axis = self.dim % x.ndim
        y = self.ops.softmax_forward(x, axis)
        self._cache = (y, axis)
        return y

    def backward(self, dy: Array) -> Array | None:
        y, axis = self._cache if self._cache is not None else (None, None)
        dy = self._check_dy(dy, getattr(y, "shape", ()))
        if not self.requires_input_grad:
            return None
        return self.ops.softmax_backward(y, dy, axis)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
