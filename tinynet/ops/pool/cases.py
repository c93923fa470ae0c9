"""The odd pooling cases that the tests (tests/ops/test_pool.py) and the lab's
``--check`` (kernels/pool.py) run on every backend.

Each case is an input shape with a window and a stride. Together they take
every branch of every backend: the cpu "2x2" schedule with even and odd
planes (floor mode leaves a row or a column out), the "any" schedule with
overlapping windows, non-square windows and strides, windows with gaps
between them (stride > kernel), a 2x2 window off stride 2, a 1x1 window, a
window as large as the plane (global pooling), and windows of 256 taps (the
largest uint8 cache on the cpu, an int32 one on cuda) and of more than 256
(int32 on both). The planes are small and mostly odd: with the tests' small
cuda blocks (tests/cudasim.py) the grids end in partial blocks and the
grid-stride loops run more than once.
"""
from typing import NamedTuple

__all__ = ["PoolCase", "CASES"]


class PoolCase(NamedTuple):
    """One input shape (N, C, H, W) with a (kh, kw) window and an (sh, sw) stride."""
    name: str
    shape: tuple
    kernel: tuple
    stride: tuple


CASES = (
    PoolCase("2x2-even", (3, 5, 8, 6), (2, 2), (2, 2)),
    PoolCase("2x2-oddH", (2, 3, 7, 6), (2, 2), (2, 2)),
    PoolCase("2x2-oddW", (3, 2, 8, 7), (2, 2), (2, 2)),
    PoolCase("2x2-oddHW", (2, 3, 7, 9), (2, 2), (2, 2)),
    PoolCase("k2s1", (2, 2, 5, 6), (2, 2), (1, 1)),
    PoolCase("k3s1", (2, 3, 7, 7), (3, 3), (1, 1)),
    PoolCase("k3s2", (2, 3, 8, 9), (3, 3), (2, 2)),
    PoolCase("k3-s2x1", (2, 3, 7, 6), (3, 3), (2, 1)),
    PoolCase("k3x2-s2x1", (3, 2, 9, 8), (3, 2), (2, 1)),
    PoolCase("k2x3-s1x2", (2, 3, 5, 11), (2, 3), (1, 2)),
    PoolCase("k2s3-gaps", (2, 3, 8, 7), (2, 2), (3, 3)),
    PoolCase("k1", (2, 3, 5, 4), (1, 1), (1, 1)),
    PoolCase("global", (3, 4, 5, 7), (5, 7), (5, 7)),
    PoolCase("k16-256taps", (1, 2, 17, 16), (16, 16), (1, 1)),
    PoolCase("k17-int32", (2, 2, 19, 18), (17, 17), (2, 1)),
)
"""Every case, named for test ids."""
