"""The odd Dense cases that the tests (tests/ops/test_dense.py) and the lab's
``--check`` (kernels/dense.py) run on every backend.

Each case is a batch size N and the layer's widths, in_features I and
out_features O: one row of one feature, then small and large widths, mostly
odd, off the multiples of a SIMD vector, a GEMM tile and a cuda block (the
bias kernels' grid-stride loops run more than once with the tests' small
blocks, tests/cudasim.py). The last two are above the cpu backend's
SMALL_MACS, so they run its GEMMs split over the pool: by rows of y (N > O)
and by its columns (O > N).
"""
from typing import NamedTuple

__all__ = ["DenseCase", "CASES"]


class DenseCase(NamedTuple):
    """x (N, I), W (O, I), b (O,), y and dy (N, O), with I = in_features and
    O = out_features."""
    name: str
    N: int
    in_features: int
    out_features: int

    @property
    def x_shape(self):
        """(N, I)."""
        return (self.N, self.in_features)

    @property
    def w_shape(self):
        """(O, I)."""
        return (self.out_features, self.in_features)

    @property
    def y_shape(self):
        """(N, O), also dy's."""
        return (self.N, self.out_features)


CASES = (
    DenseCase("1x1x1", 1, 1, 1),
    DenseCase("3x5x4", 3, 5, 4),
    DenseCase("5x7x3", 5, 7, 3),
    DenseCase("7x33x17", 7, 33, 17),
    DenseCase("65x130x9", 65, 130, 9),
    DenseCase("67x301x53", 67, 301, 53),
    DenseCase("9x301x250", 9, 301, 250),
)
"""Every case, named "NxIxO" for test ids."""
