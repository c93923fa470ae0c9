"""Weight initialization: He (Kaiming) and Xavier (Glorot), as torch.nn.init.

For a weight of shape (out, in, *kernel), fan_in = in * prod(kernel) and
fan_out = out * prod(kernel).

- He / Kaiming (https://arxiv.org/abs/1502.01852), for ReLU networks:
  std = gain / sqrt(fan_in) with gain = sqrt(2); the uniform form draws from
  U(-b, b) with b = sqrt(3) * std.
- Xavier / Glorot (https://proceedings.mlr.press/v9/glorot10a.html), for
  tanh / sigmoid networks: std = gain * sqrt(2 / (fan_in + fan_out)).

- torch's default for nn.Linear and nn.Conv2d (``torch_uniform``): weights
  kaiming_uniform_ with a = sqrt(5), which is U(-b, b) with b = 1 / sqrt(fan_in)
  (gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in)), and biases U(-b, b) with
  the same b, drawn after the weight.

All draws come from one module-level generator; ``seed(n)`` resets it, so a
model built after ``tn.init.seed(n)`` is the same every time. Dense and
Conv2D take ``init=`` one of ``INITS``: "torch" (the default, so that a
recipe tuned in torch carries over), "he_uniform", "he_normal",
"xavier_uniform" or "xavier_normal"; with a named He or Xavier init the
bias starts at zero.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["seed", "get_rng", "fans", "he_uniform", "he_normal", "xavier_uniform",
           "xavier_normal", "torch_uniform", "zeros", "ones", "INITS", "weight_and_bias"]

_rng = np.random.default_rng()


def seed(n: int | None) -> None:
    """Reset the generator behind every initializer (and Dropout's default seed)."""
    global _rng
    _rng = np.random.default_rng(n)


def get_rng() -> np.random.Generator:
    """The module-level ``np.random.Generator`` the initializers draw from."""
    return _rng


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel), as torch computes them."""
    if len(shape) < 2:
        raise ValueError(f"init.fans: a weight needs at least 2 dims, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _draw(shape: Sequence[int], std: float, uniform: bool, dtype: DTypeLike,
          rng: np.random.Generator | None) -> NDArray[Any]:
    rng = _rng if rng is None else rng
    if uniform:
        bound = math.sqrt(3.0) * std
        w = rng.uniform(-bound, bound, size=shape)
    else:
        w = rng.normal(0.0, std, size=shape)
    return w.astype(dtype)


def he_uniform(shape: Sequence[int], gain: float = math.sqrt(2.0), dtype: DTypeLike = np.float32,
               rng: np.random.Generator | None = None) -> NDArray[Any]:
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan_in). Shape (out, in, *kernel)."""
    return _draw(shape, gain / math.sqrt(fans(shape)[0]), True, dtype, rng)


def he_normal(shape: Sequence[int], gain: float = math.sqrt(2.0), dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> NDArray[Any]:
    """He normal: N(0, std^2), std = gain / sqrt(fan_in). Shape (out, in, *kernel)."""
    return _draw(shape, gain / math.sqrt(fans(shape)[0]), False, dtype, rng)


def xavier_uniform(shape: Sequence[int], gain: float = 1.0, dtype: DTypeLike = np.float32,
                   rng: np.random.Generator | None = None) -> NDArray[Any]:
    """Xavier uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _draw(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), True, dtype, rng)


def xavier_normal(shape: Sequence[int], gain: float = 1.0, dtype: DTypeLike = np.float32,
                  rng: np.random.Generator | None = None) -> NDArray[Any]:
    """Xavier normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return _draw(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), False, dtype, rng)


def torch_uniform(shape: Sequence[int], dtype: DTypeLike = np.float32,
                  rng: np.random.Generator | None = None) -> NDArray[Any]:
    """torch's default weight: U(-b, b), b = 1 / sqrt(fan_in). Shape (out, in, *kernel)."""
    return _draw(shape, 1.0 / math.sqrt(3.0 * fans(shape)[0]), True, dtype, rng)


# init name -> the weight initializer of Dense and Conv2D
INITS: dict[str, Callable[..., NDArray[Any]]] = {
    "torch": torch_uniform, "he_uniform": he_uniform, "he_normal": he_normal,
    "xavier_uniform": xavier_uniform, "xavier_normal": xavier_normal}


def weight_and_bias(layer: str, name: str, shape: tuple[int, ...],
                    bias: bool) -> tuple[NDArray[Any], NDArray[Any] | None]:
    """The initial weight of ``shape`` (out, in, *kernel) and bias (out,) of a layer.

    ``name`` is one of INITS; "torch" draws the bias from U(-b, b), b = 1 /
    sqrt(fan_in), after the weight (as torch.nn.Linear and Conv2d's
    reset_parameters); the others start the bias at zero. ``bias`` False
    gives None for the bias. ``layer`` names the layer in the error for an
    unknown name.
    """
    if not isinstance(name, str) or name not in INITS:
        raise ValueError(f"{layer}: init must be one of {', '.join(map(repr, INITS))}, "
                         f"got {name!r}")
    weight = INITS[name](shape)
    if not bias:
        return weight, None
    if name == "torch":
        bound = 1.0 / math.sqrt(fans(shape)[0])
        return weight, _rng.uniform(-bound, bound, size=shape[0]).astype(np.float32)
    return weight, zeros((shape[0],))


def zeros(shape: int | Sequence[int], dtype: DTypeLike = np.float32) -> NDArray[Any]:
    """An array of zeros (biases, beta)."""
    return np.zeros(shape, dtype=dtype)


def ones(shape: int | Sequence[int], dtype: DTypeLike = np.float32) -> NDArray[Any]:
    """An array of ones (gamma)."""
    return np.ones(shape, dtype=dtype)
