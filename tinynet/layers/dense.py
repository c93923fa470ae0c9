"""Dense: the fully connected layer, y = x W^T + b (as torch.nn.Linear).

x is (N, in_features), W is (out_features, in_features), b is (out_features,).
The math (forward and backward) is stated once, in the ops' contract,
tinynet/ops/dense/__init__.py; the arithmetic is the active backend's
dense_forward / dense_backward.
"""
from __future__ import annotations

import numbers

from .. import init as initializers
from ..parameter import Array, Parameter
from .base import Layer

__all__ = ["Dense"]


def _positive_int(value: object, layer: str, arg: str) -> int:
    """``value`` as an int; TypeError unless an integer, ValueError unless >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{layer}: {arg} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{layer}: {arg} must be a positive int, got {value}")
    return int(value)


class Dense(Layer):
    """Fully connected layer: y = x W^T + b.

    Parameters
    ----------
    in_features : int
        Size of each input row, I.
    out_features : int
        Size of each output row, O.
    bias : bool
        Learn an additive bias b (default True).
    init : str
        The initialization, one of ``tn.init.INITS``: "torch" (torch.nn.Linear's:
        W and b from U(-1/sqrt(I), 1/sqrt(I))), "he_uniform", "he_normal",
        "xavier_uniform" or "xavier_normal" (b zeros).

    Attributes
    ----------
    weight : Parameter
        W, shape (out_features, in_features).
    bias : Parameter or None
        b, shape (out_features,); None when ``bias=False``.

    Shapes
    ------
    x (N, in_features) -> y (N, out_features)
    """

    param_names = ("weight", "bias")

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "torch") -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "Dense", "in_features")
        self.out_features = _positive_int(out_features, "Dense", "out_features")
        shape = (self.out_features, self.in_features)
        weight, b = initializers.weight_and_bias("Dense", init, shape, bias)
        self.init = init
        self.weight = Parameter(weight, name="weight")
        self.bias = Parameter(b, name="bias") if bias else None

    def forward(self, x: Array) -> Array:
        """y = x W^T + b. x: (N, in_features); returns (N, out_features)."""
        expected = f"(N, in_features) = (N, {self.in_features})"
        x = self._check_input(x, (2,), expected)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense: input must have shape {expected}, got shape {x.shape}")
        b = None if self.bias is None else self.bias.data
        y = self.ops.dense_forward(x, self.weight.data, b)
        self._cache = (x, y.shape)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Add dW (and db) into the gradients; return dx (N, in_features), or None.

        dx is None when ``requires_input_grad`` is False.
        """
        dy = self._check_dy(dy, self._cache[1] if self._cache else None)
        x = self._cache[0]
        if dy.dtype != x.dtype:
            raise TypeError(f"Dense.backward: dy dtype {dy.dtype} does not match the "
                            f"input's ({x.dtype})")
        dx, dW, db = self.ops.dense_backward(x, self.weight.data, dy,
                                             self.bias is not None, self.requires_input_grad)
        self.weight.accumulate_grad(dW, fresh=True)  # dW and db: the op's new arrays
        if db is not None and self.bias is not None:
            self.bias.accumulate_grad(db, fresh=True)
        return dx

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
