"""Weight normalization's cases: weight shapes of Dense (O, I) and Conv2D (O, C, KH, KW).

Shared by tests/ops/test_weightnorm.py. The fan-ins K (5, 7, 17, 18, 100) span
several reduction blocks of the tests' small blocks and are no multiple of a
block; a single unit, a fan-in of 1 and more units than blocks are there too.
"""
from typing import NamedTuple

__all__ = ["Shape", "SHAPES"]


class Shape(NamedTuple):
    name: str
    shape: tuple


SHAPES = [
    Shape("dense-4x5", (4, 5)),
    Shape("dense-5x7", (5, 7)),
    Shape("dense-33x17", (33, 17)),
    Shape("dense-1x1", (1, 1)),
    Shape("conv-3x2x3x3", (3, 2, 3, 3)),
    Shape("conv-9x4x5x5", (9, 4, 5, 5)),
    Shape("conv-7x1x1x1", (7, 1, 1, 1)),
]
