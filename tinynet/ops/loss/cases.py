"""The loss family's odd shapes and label smoothings, as plain data.

Used by the tests (tests/ops/test_loss.py) and the lab's ``--check``
(kernels/elementwise.py): one class, one row, rows and classes that are not
multiples of a vector width or a cuda block, more rows than a block, and
long rows.
"""
from typing import NamedTuple

__all__ = ["Xent", "XENT", "SMOOTHING"]


class Xent(NamedTuple):
    """Logits of shape (N, K) with N labels in [0, K)."""
    name: str
    shape: tuple

    def draw(self, rng, dtype, scale=3.0):
        """(logits, labels): logits of ``dtype``, normal with std ``scale``; int64 labels."""
        n, k = self.shape
        return (scale * rng.standard_normal(self.shape)).astype(dtype), rng.integers(0, k, n)


XENT = (
    Xent("1x1", (1, 1)),
    Xent("1x7", (1, 7)),
    Xent("11x5", (11, 5)),
    Xent("13x7", (13, 7)),
    Xent("mnist_64x10", (64, 10)),
    Xent("long_rows_3x1001", (3, 1001)),
    Xent("many_rows_257x3", (257, 3)),
)

SMOOTHING = (0.0, 0.1, 0.9)
"""Label smoothings eps: none, torch's usual 0.1, and a large one."""
