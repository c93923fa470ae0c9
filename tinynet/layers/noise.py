"""RandomAffineNoise: a random per-step shift and scale of every activation.

The "noisy BatchNorm" of Santurkar et al. 2018 (https://arxiv.org/abs/1805.11604,
section 2.1): placed after a BatchNorm, it changes the distribution of each
activation at every training step, so the next layer sees a distribution
that moves all the time ("internal covariate shift" made large on purpose).
For channel c at training step t,

    m_c = shift * (2 u1_c - 1)            uniform in [-shift, shift]
    s_c = 1 + (scale - 1) * u2_c          uniform in [1, scale]

    forward:   y[n, c, ...] = s_c * x[n, c, ...] + m_c
    backward:  dx[n, c, ...] = s_c * dy[n, c, ...]

u1 and u2 are counter-based uniform numbers, as Dropout's mask: with the
splitmix64 hash of tinynet/ops/dropout/__init__.py,

    key = splitmix64(seed ^ splitmix64(step)),
    u_i = (splitmix64(key + i) >> 11) * 2^-53,   u1_c = u_c,  u2_c = u_{C + c}.

A "channel" is a feature of an (N, C) input or a channel of (N, C, H, W). In
eval mode the layer is the identity. The arithmetic is the backend's
norm_forward / norm_backward with mean 0, rstd = s and beta = m.
"""
from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import NDArray

from ..ops.dropout import splitmix64
from ..parameter import Array
from .base import Layer
from .dropconnect import mask_seed

__all__ = ["RandomAffineNoise"]


def _uniforms(seed: int, step: int, count: int) -> NDArray[np.float64]:
    """``count`` uniform float64 numbers in [0, 1) for (seed, step), counter-based, on the host."""
    key = splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(step)))
    with np.errstate(over="ignore"):
        h = splitmix64(np.uint64(key) + np.arange(count, dtype=np.uint64))
    return (h >> np.uint64(11)) * 2.0**-53


class RandomAffineNoise(Layer):
    """Per-step random shift and scale of each channel (Santurkar et al.'s noisy BN).

    Parameters
    ----------
    num_features : int
        C, the number of channels (features).
    shift : float
        Largest shift, >= 0: m_c is uniform in [-shift, shift].
    scale : float
        Largest scale, >= 1: s_c is uniform in [1, scale].
    seed : int, optional
        Seed of the draws, in [0, 2^64). Default: drawn from
        ``tinynet.init.get_rng()``.

    Attributes
    ----------
    step : int
        Training forward passes so far; selects the next (m, s).

    Shapes
    ------
    (N, C) or (N, C, H, W) -> the same shape.
    """

    def __init__(self, num_features: int, shift: float = 0.5, scale: float = 2.0,
                 seed: int | None = None) -> None:
        super().__init__()
        if (isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(f"RandomAffineNoise: num_features must be a positive int, "
                             f"got {num_features!r}")
        if not float(shift) >= 0:
            raise ValueError(f"RandomAffineNoise: shift must be >= 0, got {shift!r}")
        if not float(scale) >= 1:
            raise ValueError(f"RandomAffineNoise: scale must be >= 1, got {scale!r}")
        self.num_features: int = int(num_features)
        self.shift: float = float(shift)
        self.scale: float = float(scale)
        self.seed: int = mask_seed("RandomAffineNoise", seed)
        self.step: int = 0

    def noise(self, step: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(s, m) of training step ``step``: float64 arrays (C,)."""
        C = self.num_features
        u = _uniforms(self.seed, step, 2 * C)
        m = self.shift * (2.0 * u[:C] - 1.0)
        s = 1.0 + (self.scale - 1.0) * u[C:]
        return s, m

    def forward(self, x: Array) -> Array:
        """y = s_c * x + m_c in training (new s, m each call); y = x in eval."""
        x = self._check_input(x, (2, 4), "(N, C) or (N, C, H, W)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"RandomAffineNoise: input must have C={self.num_features} "
                             f"channels, got shape {x.shape}")
        if not self.training:
            self._cache = (x.shape, None, None)
            return x.copy()
        s, m = self.noise(self.step)
        self.step += 1
        xv = x.reshape(x.shape[0], x.shape[1], -1)
        # The 2C draws are made on the host and go to x's device (a few bytes a step).
        ops = self.ops
        s, m = ops.asarray(s), ops.asarray(m, x.dtype)
        zero = ops.asarray(np.zeros(self.num_features))
        y = ops.norm_forward(xv, zero, s, None, m, 1, True)
        self._cache = (x.shape, xv, s)
        return y.reshape(x.shape)

    def backward(self, dy: Array) -> Array | None:
        """dx = s_c * dy in training, dy in eval; None when no dx is needed."""
        dy = self._check_dy(dy, self._cache[0] if self._cache else None)
        shape, xv, s = self._cache
        if not self.requires_input_grad:
            return None
        if s is None:
            return dy.copy()
        dx, _, _ = self.ops.norm_backward(xv, dy.reshape(xv.shape), s * 0, s, None,
                                          1, True, fixed_stats=True)
        return dx.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, shift={self.shift}, scale={self.scale}"
