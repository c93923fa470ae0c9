"""Dropout: inverted dropout with a reproducible, counter-based mask.

In training, each element is dropped with probability p and the kept ones are
scaled by 1 / (1 - p); the math of the forward and backward passes and of the
mask is the contract's, tinynet/ops/dropout/__init__.py. In eval mode the
layer is the identity (y = x, dx = dy), as torch.nn.Dropout.

The mask is a hash of (seed, step, element index), not a draw from a
stateful generator. The layer's ``step`` counts its training forward passes,
so each batch gets a new mask, and the same (seed, step) always gives the
same mask, on any backend and any thread count.
"""
from __future__ import annotations

import numpy as np

from ..init import get_rng
from ..parameter import Array
from .base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout; ``p`` is the probability of DROPPING an element.

    Parameters
    ----------
    p : float
        Drop probability in [0, 1). p = 0 keeps every element.
    seed : int, optional
        Seed of the mask, in [0, 2^64). Default: drawn from
        ``tinynet.init.get_rng()``, so ``tn.init.seed(n)`` makes it reproducible.

    Attributes
    ----------
    step : int
        Number of training forward passes so far; selects the next mask.

    Shapes: x (*) -> y (*), the same shape.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p}")
        if seed is None:
            seed = int(get_rng().integers(0, 2**63))
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Dropout: seed must be an integer, got {type(seed).__name__}")
        elif not 0 <= seed < 2**64:
            raise ValueError(f"Dropout: seed must be in [0, 2**64), got {seed}")
        self.p = p
        self.seed = int(seed)
        self.step = 0

    def forward(self, x: Array) -> Array:
        x = self._check_input(x, range(1, 65), "(*) with at least one dim")
        if not self.training:
            self._cache = (x.shape, None)
            return x.copy()
        y, keep = self.ops.dropout_forward(x, self.p, self.seed, self.step)
        self.step += 1
        self._cache = (x.shape, keep)
        return y

    def backward(self, dy: Array) -> Array | None:
        shape, keep = self._cache if self._cache is not None else ((), None)
        dy = self._check_dy(dy, shape)
        if not self.requires_input_grad:
            return None
        if keep is None:
            return dy.copy()
        return self.ops.dropout_backward(dy, keep, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
