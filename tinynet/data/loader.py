"""Batches, shuffling, augmentation and input normalization.

DataLoader cuts (x, y) into mini-batches. With shuffle=True, epoch e visits
the samples in the order of a permutation drawn from a generator seeded by
(seed, e): each epoch has its own order, and the same seed gives the same
sequence of orders.

Augmentations are callables ``augment(x_batch, rng) -> x_batch`` that return
a new array and leave their input untouched:

- RandomShift(k): each image moves by an integer (dy, dx), each uniform in
  [-k, k]; out[r, c] = x[r - dy, c - dx], zero where that falls outside.
- Cutout(s): each image gets an s x s square of zeros at a uniform random
  centre, clipped at the borders. DeVries and Taylor, "Improved
  Regularization of Convolutional Neural Networks with Cutout",
  https://arxiv.org/abs/1708.04552
- RandomCrop(size, padding): each image is zero-padded by ``padding`` on
  every side, then a size x size window at a uniform random offset is cut
  out, as torchvision's RandomCrop: out[r, c] = xpad[r + oy, c + ox].
- HorizontalFlip(p): each image is mirrored left to right with probability
  p, out[r, c] = x[r, W - 1 - c] (useful for Fashion-MNIST, not for digits).

prepare_images maps uint8 pixels p to (p / 255 - mean) / std in float32,
with each dataset's own mean and std (NORMALIZATION): the mean and the
population std (ddof=0) of all pixels of its 60000 training images scaled to
[0, 1], rounded to 4 decimals. MNIST's are the (0.1307, 0.3081) of PyTorch's
MNIST example; Fashion-MNIST's are (0.2860, 0.3530).
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DataLoader", "RandomShift", "Cutout", "RandomCrop", "HorizontalFlip", "Compose",
           "prepare_images", "NORMALIZATION"]

# dataset -> (mean, std) of its training pixels on the [0, 1] scale (see above;
# tests/test_data.py recomputes them from the real files)
NORMALIZATION = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}

# An augmentation: augment(x_batch, rng) -> a new x_batch.
Augment: TypeAlias = Callable[[NDArray[Any], np.random.Generator], NDArray[Any]]


def _check_images(name: str, x: ArrayLike) -> NDArray[Any]:
    """Check that x is (N, H, W) or (N, C, H, W) and return it as an array."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: x must be (N, H, W) or (N, C, H, W), got shape {x.shape}")
    return x


def _check_int(name: str, arg: str, value: object, low: int) -> int:
    """Check that value is an int >= low (bools rejected)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name}: {arg} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: {arg} must be >= {low}, got {value}")
    return int(value)


class DataLoader:
    """Iterate over (x, y) in mini-batches.

    Parameters
    ----------
    x : array_like
        Inputs, shape ``(N, ...)``, e.g. ``(N, 1, 28, 28)`` or ``(N, 784)``.
    y : array_like
        Targets, shape ``(N, ...)``, e.g. labels ``(N,)``.
    batch_size : int
        Samples per batch, at least 1.
    shuffle : bool
        Visit the samples in a new random order each epoch.
    seed : int, optional
        Seed for the orders and the augmentations. None draws a fresh one.
    drop_last : bool
        Skip the last batch when it has fewer than ``batch_size`` samples.
    augment : callable, optional
        ``augment(xb, rng) -> xb`` applied to each input batch, with ``rng``
        a ``numpy.random.Generator`` for this epoch.

    Attributes
    ----------
    epoch : int
        The epoch the next iteration pass will run; each pass adds one. Set
        it to replay an epoch's order.

    Notes
    -----
    Iterating yields ``(xb, yb)`` with ``xb`` of shape ``(B, ...)`` and ``yb``
    of shape ``(B, ...)``. Without shuffle and augment the batches are views
    of x and y.
    """

    def __init__(self, x: ArrayLike, y: ArrayLike, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False,
                 augment: Augment | None = None) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or y.ndim < 1:
            raise ValueError(f"DataLoader: x and y need a sample axis, got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"DataLoader: len(x) = {len(x)} but len(y) = {len(y)}; they must match")
        if len(x) == 0:
            raise ValueError("DataLoader: x and y are empty")
        self.batch_size = _check_int("DataLoader", "batch_size", batch_size, 1)
        if seed is not None:
            seed = _check_int("DataLoader", "seed", seed, 0)
        if augment is not None and not callable(augment):
            raise TypeError(f"DataLoader: augment must be callable or None, got {type(augment).__name__}")
        self.x, self.y = x, y
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.augment = augment
        # A SeedSequence made without entropy draws it from the OS: an int.
        self.seed = int(cast(int, np.random.SeedSequence().entropy)) if seed is None else seed
        self.epoch = 0

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
        """Start an epoch: draw its order now and return a generator of batches."""
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.x)) if self.shuffle else None
        return self._batches(order, rng)

    def _batches(self, order: NDArray[np.int64] | None,
                 rng: np.random.Generator) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
        """Yield the batches of one epoch."""
        for b in range(len(self)):
            start, stop = b * self.batch_size, (b + 1) * self.batch_size
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            else:
                idx = order[start:stop]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                xb = self.augment(xb, rng)
            yield xb, yb


class RandomShift:
    """Shift each image by a random integer (dy, dx) in [-max_shift, max_shift], zero fill.

    Parameters
    ----------
    max_shift : int
        Largest shift in pixels along each axis, at least 0.

    Notes
    -----
    Called as ``shift(x, rng)`` with x of shape ``(N, H, W)`` or
    ``(N, C, H, W)``; returns a new array of the same shape and dtype in which
    ``out[n, ..., r, c] = x[n, ..., r - dy_n, c - dx_n]``, or 0 outside x.
    All channels of an image move together.
    """

    def __init__(self, max_shift: int) -> None:
        self.max_shift = _check_int("RandomShift", "max_shift", max_shift, 0)

    def __call__(self, x: ArrayLike, rng: np.random.Generator) -> NDArray[Any]:
        x = _check_images("RandomShift", x)
        k = self.max_shift
        H, W = x.shape[-2:]
        shifts = rng.integers(-k, k + 1, size=(len(x), 2))
        # zero-pad by k so that every shifted window lies inside
        pad = [(0, 0)] * (x.ndim - 2) + [(k, k), (k, k)]
        xpad = np.pad(x, pad)
        out = np.empty_like(x)
        for n, (dy, dx) in enumerate(shifts):
            # out[r, c] = x[r - dy, c - dx] = xpad[r - dy + k, c - dx + k]
            out[n] = xpad[n, ..., k - dy:k - dy + H, k - dx:k - dx + W]
        return out

    def __repr__(self) -> str:
        return f"RandomShift({self.max_shift})"


class Cutout:
    """Zero a size x size square at a random centre in each image (arXiv 1708.04552).

    Parameters
    ----------
    size : int
        Side of the square in pixels, at least 1.

    Notes
    -----
    Called as ``cutout(x, rng)`` with x of shape ``(N, H, W)`` or
    ``(N, C, H, W)``; returns a new array. For each image a centre (cy, cx)
    is uniform over the H x W pixels, and rows ``cy - size//2`` to
    ``cy - size//2 + size - 1`` (columns alike), clipped at the borders, are
    set to 0 in every channel. Near a border the square is partly outside, as
    in the paper.
    """

    def __init__(self, size: int) -> None:
        self.size = _check_int("Cutout", "size", size, 1)

    def __call__(self, x: ArrayLike, rng: np.random.Generator) -> NDArray[Any]:
        x = _check_images("Cutout", x)
        H, W = x.shape[-2:]
        cy = rng.integers(0, H, size=len(x))
        cx = rng.integers(0, W, size=len(x))
        out = x.copy()
        for n in range(len(x)):
            r0, c0 = cy[n] - self.size // 2, cx[n] - self.size // 2
            r1, c1 = r0 + self.size, c0 + self.size
            out[n, ..., max(r0, 0):min(r1, H), max(c0, 0):min(c1, W)] = 0
        return out

    def __repr__(self) -> str:
        return f"Cutout({self.size})"


class RandomCrop:
    """Zero-pad each image by ``padding``, then crop a random size x size window.

    Parameters
    ----------
    size : int or (int, int)
        (OH, OW) of the output; an int s means (s, s).
    padding : int
        Zeros added on each of the four sides first, at least 0.

    Notes
    -----
    Called as ``crop(x, rng)`` with x of shape ``(N, H, W)`` or
    ``(N, C, H, W)``; returns a new array of shape ``(N, [C,] OH, OW)``. For
    each image the offset (oy, ox) is uniform in [0, H + 2p - OH] x
    [0, W + 2p - OW] and ``out[n, ..., r, c] = xpad[n, ..., r + oy, c + ox]``.
    ``RandomCrop(28, 4)`` on 28 x 28 images is a shift by up to 4 pixels.
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 0) -> None:
        pair = (size, size) if isinstance(size, (int, numbers.Integral)) else tuple(size)
        if len(pair) != 2:
            raise ValueError(f"RandomCrop: size must be an int or a pair of ints, got {size!r}")
        self.size = tuple(_check_int("RandomCrop", "size", v, 1) for v in pair)
        self.padding = _check_int("RandomCrop", "padding", padding, 0)

    def __call__(self, x: ArrayLike, rng: np.random.Generator) -> NDArray[Any]:
        x = _check_images("RandomCrop", x)
        p, (oh, ow) = self.padding, self.size
        H, W = x.shape[-2] + 2 * p, x.shape[-1] + 2 * p
        if oh > H or ow > W:
            raise ValueError(f"RandomCrop: size {self.size} is larger than the padded image "
                             f"({H}, {W})")
        pad = [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]
        xpad = np.pad(x, pad)
        oy = rng.integers(0, H - oh + 1, size=len(x))
        ox = rng.integers(0, W - ow + 1, size=len(x))
        out = np.empty(x.shape[:-2] + (oh, ow), dtype=x.dtype)
        for n in range(len(x)):
            out[n] = xpad[n, ..., oy[n]:oy[n] + oh, ox[n]:ox[n] + ow]
        return out

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, padding={self.padding})"


class HorizontalFlip:
    """Mirror each image left to right with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of flipping each image, in [0, 1].

    Notes
    -----
    Called as ``flip(x, rng)`` with x of shape ``(N, H, W)`` or
    ``(N, C, H, W)``; returns a new array in which a flipped image has
    ``out[n, ..., r, c] = x[n, ..., r, W - 1 - c]``.
    """

    def __init__(self, p: float = 0.5) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"HorizontalFlip: p must be a number in [0, 1], got {p!r}")
        self.p: float = float(p)

    def __call__(self, x: ArrayLike, rng: np.random.Generator) -> NDArray[Any]:
        x = _check_images("HorizontalFlip", x)
        flip = rng.random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class Compose:
    """Apply augmentations one after the other, each with the same ``rng``.

    Parameters
    ----------
    *augments : callable
        Each ``augment(x, rng) -> x``; applied in the order given.

    Notes
    -----
    ``Compose(RandomShift(2), HorizontalFlip())(x, rng)`` is
    ``HorizontalFlip()(RandomShift(2)(x, rng), rng)``: the draws of the
    second come after the first's from the one generator, so a seeded
    DataLoader gives the same batches in every run.
    """

    def __init__(self, *augments: Augment) -> None:
        if not augments:
            raise ValueError("Compose: give at least one augmentation")
        for i, a in enumerate(augments):
            if not callable(a):
                raise TypeError(f"Compose: augmentation {i} must be callable, got "
                                f"{type(a).__name__}")
        self.augments = augments

    def __call__(self, x: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
        for a in self.augments:
            x = a(x, rng)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.augments))})"


def prepare_images(images: ArrayLike, mean: float | None = None, std: float | None = None,
                   flatten: bool = False, dataset: str | None = None) -> NDArray[np.float32]:
    """Turn uint8 images into normalized float32 network inputs.

    x = (images / 255 - mean) / std

    Parameters
    ----------
    images : numpy.ndarray
        uint8, shape ``(N, H, W)``, e.g. MNIST's ``(N, 28, 28)``.
    mean, std : float, optional
        Normalization constants on the [0, 1] scale; std > 0. Each one not
        given is the dataset's, from ``NORMALIZATION``.
    flatten : bool
        Return ``(N, H*W)`` for dense networks instead of ``(N, 1, H, W)``.
    dataset : {"mnist", "fashion-mnist"}, optional
        Whose training-set statistics are the defaults; None is "mnist".

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, 1, H, W)``, or ``(N, H*W)`` with flatten.
    """
    name = "mnist" if dataset is None else dataset
    if name not in NORMALIZATION:
        raise ValueError(f"prepare_images: dataset must be one of "
                         f"{', '.join(map(repr, NORMALIZATION))} or None, got {dataset!r}")
    mean = NORMALIZATION[name][0] if mean is None else mean
    std = NORMALIZATION[name][1] if std is None else std
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"prepare_images: images must be uint8, got {images.dtype}")
    if images.ndim != 3:
        raise ValueError(f"prepare_images: images must be (N, H, W), got shape {images.shape}")
    if not std > 0:
        raise ValueError(f"prepare_images: std must be > 0, got {std}")
    x = (images.astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)
    N, H, W = images.shape
    return x.reshape(N, H * W) if flatten else x.reshape(N, 1, H, W)
