"""The dropout family's odd shapes and (p, seed, step) masks, as plain data.

Used by the tests (tests/ops/test_dropout.py) and the lab's ``--check``
(kernels/dropout.py). Shapes are not multiples of a vector width, of 8 (a
byte of packed mask bits) or of a cuda block; the masks take p at both ends
of [0, 1) and seeds and steps at both ends of [0, 2^64).
"""
from typing import NamedTuple

import numpy as np

from . import MAX_U64

__all__ = ["Shape", "SHAPES", "Mask", "MASKS"]


class Shape(NamedTuple):
    """A shape of x."""
    name: str
    shape: tuple

    def draw(self, rng, dtype):
        """(x, dy) of ``dtype``, normal; x starts with NaN, inf and -inf in C order."""
        x = 3 * rng.standard_normal(self.shape)
        x.reshape(-1)[:3] = [np.nan, np.inf, -np.inf][:x.size]
        return x.astype(dtype), rng.standard_normal(self.shape).astype(dtype)


SHAPES = (
    Shape("one", (1,)),
    Shape("seven", (7,)),
    Shape("17x13", (17, 13)),
    Shape("257x3", (257, 3)),
    Shape("nchw_3x7x5x3", (3, 7, 5, 3)),
    Shape("flat_1001", (1001,)),
    Shape("rank5_2x3x4x5x6", (2, 3, 4, 5, 6)),
)
"""One element, partial bytes of mask bits, and ranks 1 to 5."""


class Mask(NamedTuple):
    """The drop probability and the counters of a mask."""
    name: str
    p: float
    seed: int
    step: int


MASKS = (
    Mask("half", 0.5, 0, 0),
    Mask("seed_above_2^63", 0.3, 2**63 + 99, 7),
    Mask("last_step", 0.1, 12345, MAX_U64),
    Mask("last_seed", 0.9, MAX_U64, 3),
    Mask("last_seed_step_12345", 0.3, MAX_U64, 12345),
    Mask("step_2^63", 0.9, 123456789, 2**63),
    Mask("keep_all", 0.0, 5, 2),
    Mask("p_tiny", 1e-300, 1, 1),
    Mask("p_below_1", 1 - 2**-53, 77, 0),
)
