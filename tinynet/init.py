"""Weight initialization: He (Kaiming) and Xavier (Glorot), as torch.nn.init.

For a weight of shape (out, in, *kernel), fan_in = in * prod(kernel) and
fan_out = out * prod(kernel).

- He / Kaiming (https://arxiv.org/abs/1502.01852), for ReLU networks:
  std = gain / sqrt(fan_in) with gain = sqrt(2); the uniform form draws from
  U(-b, b) with b = sqrt(3) * std.
- Xavier / Glorot (https://proceedings.mlr.press/v9/glorot10a.html), for
  tanh / sigmoid networks: std = gain * sqrt(2 / (fan_in + fan_out)).

All draws come from one module-level generator; ``seed(n)`` resets it, so a
model built after ``tn.init.seed(n)`` is the same every time. The layers'
default is ``he_uniform``, which suits ReLU networks.
"""
import math

import numpy as np

__all__ = ["seed", "get_rng", "fans", "he_uniform", "he_normal", "xavier_uniform",
           "xavier_normal", "zeros", "ones"]

_rng = np.random.default_rng()


def seed(n):
    """Reset the generator behind every initializer (and Dropout's default seed)."""
    global _rng
    _rng = np.random.default_rng(n)


def get_rng():
    """The module-level ``np.random.Generator`` the initializers draw from."""
    return _rng


def fans(shape):
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel), as torch computes them."""
    if len(shape) < 2:
        raise ValueError(f"init.fans: a weight needs at least 2 dims, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _draw(shape, std, uniform, dtype, rng):
    rng = _rng if rng is None else rng
    if uniform:
        bound = math.sqrt(3.0) * std
        w = rng.uniform(-bound, bound, size=shape)
    else:
        w = rng.normal(0.0, std, size=shape)
    return w.astype(dtype)


def he_uniform(shape, gain=math.sqrt(2.0), dtype=np.float32, rng=None):
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan_in). Shape (out, in, *kernel)."""
    return _draw(shape, gain / math.sqrt(fans(shape)[0]), True, dtype, rng)


def he_normal(shape, gain=math.sqrt(2.0), dtype=np.float32, rng=None):
    """He normal: N(0, std^2), std = gain / sqrt(fan_in). Shape (out, in, *kernel)."""
    return _draw(shape, gain / math.sqrt(fans(shape)[0]), False, dtype, rng)


def xavier_uniform(shape, gain=1.0, dtype=np.float32, rng=None):
    """Xavier uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _draw(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), True, dtype, rng)


def xavier_normal(shape, gain=1.0, dtype=np.float32, rng=None):
    """Xavier normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _draw(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), False, dtype, rng)


def zeros(shape, dtype=np.float32):
    """An array of zeros (biases, beta)."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype=np.float32):
    """An array of ones (gamma)."""
    return np.ones(shape, dtype=dtype)
