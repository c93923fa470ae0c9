"""The activation family's odd shapes, axes and inputs, as plain data.

Used by the tests (tests/ops/test_activation.py) and the lab's ``--check``
(kernels/elementwise.py). Sizes are not multiples of a vector width (8 or 16
lanes), of the cpu softmax column block (256) or of a cuda block, so every
loop has a remainder and every grid-stride loop runs more than once.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["Elementwise", "ELEMENTWISE", "Shape", "SHAPES", "SPECIAL", "Softmax", "SOFTMAX",
           "SOFTMAX_ROWS"]


class Elementwise(NamedTuple):
    """An elementwise op: ``<op>_forward(x, *args)`` and ``<op>_backward(u, dy, *args)``,
    where u is the forward's output y when ``reads_y``, else its input x."""
    name: str
    op: str
    args: tuple
    reads_y: bool


ELEMENTWISE = (
    Elementwise("relu", "relu", (), False),
    Elementwise("leaky_relu", "leaky_relu", (0.01,), False),
    Elementwise("leaky_relu_0.3", "leaky_relu", (0.3,), False),
    Elementwise("sigmoid", "sigmoid", (), True),
    Elementwise("tanh", "tanh", (), True),
    Elementwise("gelu", "gelu", (), False),
)

SPECIAL = (np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0)
"""Values every elementwise kernel must handle: NaN, the infinities, signed
zeros, tiny values and values where exp saturates or goes subnormal."""


class Shape(NamedTuple):
    """An input shape of the elementwise ops."""
    name: str
    shape: tuple

    def draw(self, rng, dtype, special=True):
        """(x, dy) of ``dtype``: x spread over about [-12, 12] with ``SPECIAL``
        first in C order when ``special``, dy standard normal."""
        x = 4 * rng.standard_normal(self.shape)
        dy = rng.standard_normal(self.shape)
        if special:
            flat = x.reshape(-1)
            flat[:len(SPECIAL)] = SPECIAL[:flat.size]
        return x.astype(dtype), dy.astype(dtype)


SHAPES = (
    Shape("one", (1,)),
    Shape("seven", (7,)),
    Shape("3x5", (3, 5)),
    Shape("nchw_3x7x5x3", (3, 7, 5, 3)),
    Shape("flat_1001", (1001,)),
    Shape("2x3x300", (2, 3, 300)),
)


class Softmax(NamedTuple):
    """A softmax input shape and axis."""
    name: str
    shape: tuple
    axis: int


SOFTMAX = (
    Softmax("rows_13x7", (13, 7), 1),
    Softmax("rows_last_13x7", (13, 7), -1),
    Softmax("columns_13x7", (13, 7), 0),
    Softmax("one_1x1", (1, 1), 1),
    Softmax("channels_3x5x4x3", (3, 5, 4, 3), 1),
    Softmax("axis2_3x5x4x3", (3, 5, 4, 3), 2),
    Softmax("last_3x5x4x3", (3, 5, 4, 3), -1),
    Softmax("channels_3x5x4", (3, 5, 4), 1),
    Softmax("first_3x5x4", (3, 5, 4), 0),
    Softmax("two_column_blocks_2x3x300", (2, 3, 300), 1),
    Softmax("three_column_blocks_2x3x600", (2, 3, 600), 1),
)
"""Rows (the axis is the last one), columns of one block and of several
blocks of the cpu kernel, and a strided axis in the middle."""

SOFTMAX_ROWS = (1, 2, 3, 4, 5, 7, 9)
"""Row lengths K of a softmax along the last axis around the cpu row kernel's
four running maxima: fewer than 4, a multiple of 4, and remainders."""
