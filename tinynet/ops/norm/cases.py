"""The odd normalization layouts that the tests (tests/ops/test_norm*.py) and the
labs' ``--check`` (kernels/norm.py, kernels/gpu_norm.py) run on every backend.

Each case is the (N, C, L) view of an input with its set layout
(``groups``, ``per_channel``), as in the contract (tinynet/ops/norm/__init__.py).
BatchNorm is ``per_channel``; LayerNorm is one group on an (N, M, 1) view;
InstanceNorm is C groups; GroupNorm anything between.

``CASES`` are small: every backend runs them, the CUDA simulator included.
With the tests' small cuda blocks (tests/cudasim.py) the sets of some fit one
block (the fused paths) and those of others are split into parts; with the
cpu's tiny tiling (tests/ops/test_norm_cpu.py) every set spans several tiles.
Together they take L == 1 and L > 1 in every layout, several samples per
backward task, row sets in pairs (L == 1) with an odd sample left over, and
odd N, C and L everywhere.

``LARGE_CASES`` take the branches that the cpu's production tiling reaches
only on larger inputs: a BatchNorm set or a row set over several tiles
(Chan's merge of the parts) and BatchNorm on (N, C) fused per block of
channels with a full or a partial last block. They are too slow for the
CUDA simulator.
"""
from typing import NamedTuple

__all__ = ["NormCase", "CASES", "LARGE_CASES", "ALL_CASES"]


class NormCase(NamedTuple):
    """One (N, C, L) view and its set layout."""
    name: str
    shape: tuple
    groups: int
    per_channel: bool


CASES = (
    NormCase("batch-4d", (3, 6, 7), 1, True),
    NormCase("batch-5x5", (3, 6, 25), 1, True),
    NormCase("batch-small", (2, 6, 5), 1, True),
    NormCase("batch-2d", (5, 7, 1), 1, True),
    NormCase("group-1", (3, 6, 25), 1, False),
    NormCase("group", (3, 6, 25), 3, False),
    NormCase("group-short", (3, 6, 7), 3, False),
    NormCase("group-c3", (3, 6, 5), 2, False),
    NormCase("group-long", (2, 4, 40), 2, False),
    NormCase("group-2d", (9, 6, 1), 3, False),
    NormCase("group-l2", (9, 4, 2), 2, False),
    NormCase("instance", (3, 6, 25), 6, False),
    NormCase("instance-small", (2, 6, 5), 6, False),
    NormCase("instance-odd", (2, 5, 7), 5, False),
    NormCase("layer", (4, 30, 1), 1, False),
    NormCase("layer-odd", (3, 11, 1), 1, False),
    NormCase("layer-tasks", (9, 20, 1), 1, False),
    NormCase("layer-wide", (4, 150, 1), 1, False),
)
"""Small cases, named for test ids: every backend, the CUDA simulator included."""

LARGE_CASES = (
    NormCase("batch-long", (27, 5, 400), 1, True),
    NormCase("batch-2d-blocks", (300, 45, 1), 1, True),
    NormCase("batch-2d-tail", (520, 37, 1), 1, True),
    NormCase("layer-long", (3, 9001, 1), 1, False),
    NormCase("group-long-rows", (2, 6, 3000), 2, False),
)
"""The cases the cpu's production tiling needs to take every branch."""

ALL_CASES = CASES + LARGE_CASES
