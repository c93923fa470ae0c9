"""DropConnect: a Dense layer whose weights are dropped at random in training.

Wan et al. 2013, http://proceedings.mlr.press/v28/wan13.html. In training each
weight is kept with probability 1 - p, with inverted scaling so that the
expected weight is W:

    forward:   Wm = W * keep / (1 - p),   y = x Wm^T + b
    backward:  dx = dy Wm,   dW = (dy^T x) * keep / (1 - p),   db = sum_n dy[n]

In eval mode the layer is the plain Dense, y = x W^T + b. The mask is the one
of Dropout (tinynet/ops/dropout/__init__.py): a counter-based hash of (seed,
step, flat weight index), so each training step gets a fresh mask and the
same (seed, step) always gives the same mask, on every backend. One mask is
shared by the whole batch, as in the paper's efficient form.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..init import get_rng
from ..parameter import Array
from .base import Layer
from .dense import Dense
from .weightnorm import _Wrapped

__all__ = ["DropConnect"]


def mask_seed(layer: str, seed: int | None) -> int:
    """A counter-based mask's seed: ``seed`` checked to be in [0, 2^64), or a fresh one.

    The fresh seed is drawn from ``tinynet.init.get_rng()``, so
    ``tn.init.seed(n)`` makes it reproducible.
    """
    if seed is None:
        return int(get_rng().integers(0, 2**63))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{layer}: seed must be an integer, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{layer}: seed must be in [0, 2**64), got {seed}")
    return int(seed)


class DropConnect(Layer):
    """DropConnect on a Dense layer; ``p`` is the probability of DROPPING a weight.

    Parameters
    ----------
    dense : Dense
        The layer; its weight and bias Parameters are shared, so its
        state_dict keys ("weight", "bias") are the wrapper's.
    p : float
        Drop probability of each weight, in [0, 1).
    seed : int, optional
        Seed of the masks, in [0, 2^64). Default: drawn from
        ``tinynet.init.get_rng()``.

    Attributes
    ----------
    weight, bias : Parameter
        The Dense layer's, (O, I) and (O,) (bias may be None).
    step : int
        Training forward passes so far; selects the next mask.

    Shapes
    ------
    x (N, in_features) -> y (N, out_features)
    """

    param_names = ("weight", "bias")

    def __init__(self, dense: Dense, p: float, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(dense, Dense):
            raise TypeError(f"DropConnect: dense must be a tn.Dense, got {type(dense).__name__}")
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropConnect: p (the drop probability) must be in [0, 1), got {p}")
        seed = mask_seed("DropConnect", seed)
        self._op = _Wrapped("DropConnect", dense)
        self.weight = dense.weight
        self.bias = dense.bias
        self.p = p
        self.seed = seed
        self.step = 0

    def forward(self, x: Array) -> Array:
        """y = x Wm^T + b in training (a fresh mask each call), x W^T + b in eval."""
        x = self._op.check(self, x)
        b = None if self.bias is None else self.bias.data
        if self.training:
            W, keep = self.ops.dropout_forward(self.weight.data, self.p, self.seed, self.step)
            self.step += 1
        else:
            W, keep = self.weight.data, None
        y = self.ops.dense_forward(x, W, b)
        self._cache = (x, W, keep, y.shape)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Add dW (masked and scaled) and db into the gradients; return dx, or None."""
        dy = self._check_dy(dy, self._cache[3] if self._cache else None)
        x, W, keep, _ = self._cache
        dx, dW, db = self.ops.dense_backward(x, W, dy, self.bias is not None,
                                             self.requires_input_grad)
        if keep is not None:
            dW = self.ops.dropout_backward(dW, keep, self.p)
        self.weight.grad += dW
        if db is not None and self.bias is not None:
            self.bias.grad += db
        return dx

    def get_config(self) -> dict[str, Any]:
        """``{"dense": the wrapped Dense's config, "p": p, "seed": seed}``."""
        return {"dense": self._op.layer_config, "p": self.p, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"{self._op.layer_repr}, p={self.p}"
