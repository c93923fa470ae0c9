"""Dropout with a counter-based random mask (the contract).

Inverted dropout (https://jmlr.org/papers/v15/srivastava14a.html) with drop
probability p:

    forward:   y  = x  * keep / (1 - p)
    backward:  dx = dy * keep / (1 - p)

keep is a 0/1 mask in which each element is kept with probability 1 - p.

The mask is a pure function of (seed, step, i), where i is the element's flat
(C-order) index. All arithmetic is on unsigned 64-bit integers and wraps
around modulo 2^64:

    splitmix64(z):
        z = z + 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    key    = splitmix64(seed ^ splitmix64(step))
    h_i    = splitmix64(key + i)
    u_i    = (h_i >> 11) * 2^-53          (float64, exactly, in [0, 1))
    keep_i = 1 if u_i >= p else 0

splitmix64(z) is the output of Steele, Lea and Flood's SplitMix64 generator
whose state was z (https://doi.org/10.1145/2714064.2660195;
https://prng.di.unimi.it/splitmix64.c): from state 0 its first output is
0xE220A8397B1DCDAF. Because each element needs only its own index, the mask is
the same for any thread count and any element order, and a CPU or GPU kernel
computes it element by element with these exact constants.
"""
import numpy as np

from ..contract import check_float, check_same_shape, op

__all__ = ["GOLDEN", "MIX1", "MIX2", "MAX_U64", "splitmix64", "check_counter", "check_p",
           "dropout_mask", "dropout_forward", "dropout_backward"]

# The constants of splitmix64 as uint64, which every backend's hash uses.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
MAX_U64 = 2**64 - 1


def splitmix64(z):
    """The SplitMix64 hash of ``z``, elementwise, modulo 2^64.

    Parameters
    ----------
    z : int or np.ndarray
        An integer in [0, 2^64) or an array of them (any shape; it is read as
        uint64).

    Returns
    -------
    np.uint64 or np.ndarray
        The hash, uint64, same shape as ``z``. ``splitmix64(0) == 0xE220A8397B1DCDAF``.
    """
    z = np.asarray(z, dtype=np.uint64)
    # uint64 products and sums wrap modulo 2^64, which is what the hash wants.
    with np.errstate(over="ignore"):
        z = z + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        z = z ^ (z >> np.uint64(31))
    return z[()] if z.ndim == 0 else z


def check_counter(name, value):
    """Return ``value`` as a Python int in [0, 2^64) or raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"dropout: {name} must be an integer, got {type(value).__name__}")
    if not 0 <= int(value) <= MAX_U64:
        raise ValueError(f"dropout: {name} must be in [0, 2**64), got {value}")
    return int(value)


def check_p(p):
    """Return ``p`` as a float in [0, 1) or raise."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    return p


def _check_mask(name, shape, p, seed, step):
    check_p(p)
    check_counter("seed", seed)
    check_counter("step", step)


def _check_forward(name, x, p, seed, step):
    _check_mask(name, x.shape, p, seed, step)
    check_float(name, "x", x)


def _check_backward(name, dy, keep, p):
    check_p(p)
    check_float(name, "dy", dy)
    check_same_shape(name, "keep", keep, dy, what="dy's shape")


@op(check=_check_mask)
def dropout_mask(shape, p, seed, step):
    """The keep mask of ``shape`` for (seed, step): keep_i = u_i >= p.

    Parameters
    ----------
    shape : tuple of int
        Shape of the mask, e.g. (N, C, H, W).
    p : float
        Drop probability, in [0, 1). p = 0 keeps every element.
    seed : int
        The layer's seed, in [0, 2^64).
    step : int
        The forward-pass counter, in [0, 2^64).

    Returns
    -------
    np.ndarray
        keep, uint8 of ``shape``: 1 where the element is kept, 0 where dropped.
    """


@op(check=_check_forward)
def dropout_forward(x, p, seed, step):
    """Inverted dropout forward: y = x * keep / (1 - p).

    Parameters
    ----------
    x : np.ndarray
        Input, any shape, float32 or float64.
    p : float
        Drop probability, in [0, 1).
    seed, step : int
        Select the mask (see ``dropout_mask``).

    Returns
    -------
    y : np.ndarray
        Same shape and dtype as x.
    keep : np.ndarray
        uint8 mask of x's shape, for the backward pass.
    """


@op(check=_check_backward)
def dropout_backward(dy, keep, p):
    """Inverted dropout backward: dx = dy * keep / (1 - p).

    Parameters
    ----------
    dy : np.ndarray
        Upstream gradient, any shape.
    keep : np.ndarray
        The uint8 mask returned by ``dropout_forward``, same shape as dy.
    p : float
        The drop probability used in the forward pass.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """
