"""The conv family's odd cases, as plain data.

tests/ops/test_conv.py runs every backend over them, and ``python -m
kernels.conv --check`` every lab variant. No size is a multiple of a block
or a tile, and together the shapes take every branch of every backend:

- cpu: C*KH*KW <= SMALL_K (48) runs the per-sample schedule and more the
  chunked one; a stride-1 convolution with OW == W copies whole shifted
  taps in im2col / col2im, any other row by row; the chunked schedule
  computes a stride-1 convolution narrower than its input (odd KW) on the
  input's width, unless x or W holds a NaN or an inf; padding wider than the
  kernel's reach, and an image smaller than the kernel, leave whole rows
  and columns of zeros;
- cuda: C == 1 runs the direct kernels, C > 1 im2col and cuBLAS;
- every backend: with and without a bias, with and without dx (CASES).

GROUPED_SHAPES are the grouped convolutions (groups > 1), odd sizes again:

- cpu: one input channel per group (C == groups, depthwise, with and
  without a channel multiplier F/C > 1) runs the direct kernels: a 3x3
  kernel with stride 1 in one pass, other kernels with stride 1 tap by tap,
  other strides row by row; more input channels per group run im2col and
  one GEMM per (sample, group);
- cuda: one input channel per group runs the direct kernels, more im2col
  and a batched cuBLAS GEMM over the groups;
- groups 2, 3 and 4, strides 1 and 2, paddings 0, 1 and wider than the
  kernel's reach, an image smaller than the kernel, 1x1 kernels.

A case is a ConvCase; SHAPES holds each ungrouped geometry once (with a bias
and dx), CASES each of them with every (bias, need_dx); GROUPED_SHAPES and
GROUPED_CASES the same for groups > 1.
"""
from typing import NamedTuple

__all__ = ["ConvCase", "SHAPES", "CASES", "LAYER_SHAPES", "GROUPED_SHAPES", "GROUPED_CASES",
           "DEPTHWISE_SHAPES"]


class ConvCase(NamedTuple):
    """One convolution: x (N, C, H, W), W (F, C/groups, KH, KW), b (F,) when
    ``bias``, stride (sh, sw), padding (ph, pw) and ``groups``; its backward
    computes dx when ``need_dx``. ``name`` is the test id."""

    name: str
    N: int
    C: int
    H: int
    W: int
    F: int
    KH: int
    KW: int
    stride: tuple
    padding: tuple
    bias: bool = True
    need_dx: bool = True
    groups: int = 1

    @property
    def kernel(self):
        """(KH, KW)."""
        return (self.KH, self.KW)

    @property
    def Cg(self):
        """C/groups, the input channels of one group."""
        return self.C // self.groups

    @property
    def K(self):
        """C/groups*KH*KW, the taps of one output pixel (the rows of the
        columns of one group; C*KH*KW when groups == 1)."""
        return self.Cg * self.KH * self.KW

    @property
    def x_shape(self):
        """(N, C, H, W)."""
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        """(F, C/groups, KH, KW)."""
        return (self.F, self.Cg, self.KH, self.KW)


SHAPES = (
    # C == 1, K = 9: the per-sample schedule; the cuda direct kernels.
    ConvCase("c1-same", 3, 1, 7, 9, 5, 3, 3, (1, 1), (1, 1)),
    ConvCase("c1-s2-p0", 2, 1, 6, 5, 4, 3, 3, (2, 2), (0, 0)),
    ConvCase("c1-k3x2-p1", 2, 1, 6, 5, 4, 3, 2, (1, 1), (1, 1)),
    ConvCase("c1-k3x2-s2x1-p0x2", 2, 1, 6, 5, 4, 3, 2, (2, 1), (0, 2)),
    # C > 1 with K <= 48: the per-sample schedule; cuda im2col.
    ConvCase("k3-p0", 2, 3, 5, 5, 4, 3, 3, (1, 1), (0, 0)),
    ConvCase("k3-s2-p1", 3, 3, 7, 7, 2, 3, 3, (2, 2), (1, 1)),
    ConvCase("k2x3-s2x1-p1x0", 2, 3, 5, 7, 4, 2, 3, (2, 1), (1, 0)),
    ConvCase("k3x1-s1x2-p0x1", 3, 3, 7, 5, 3, 3, 1, (1, 2), (0, 1)),
    ConvCase("c2-k2x3-s2x1-p1x0", 3, 2, 5, 7, 3, 2, 3, (2, 1), (1, 0)),
    ConvCase("k3x2-p1", 2, 3, 6, 5, 4, 3, 2, (1, 1), (1, 1)),
    ConvCase("k3x2-s2x1-p0x2", 2, 3, 6, 5, 4, 3, 2, (2, 1), (0, 2)),
    ConvCase("k3x5-same", 2, 3, 7, 5, 4, 3, 5, (1, 1), (1, 2)),
    ConvCase("c8-k3x1-s1x2-p0x1", 3, 8, 7, 5, 3, 3, 1, (1, 2), (0, 1)),
    ConvCase("c5-s2x1-p2x1", 2, 5, 4, 4, 3, 3, 3, (2, 1), (2, 1)),
    # K > 48: the chunked schedule.
    ConvCase("c6-same", 3, 6, 7, 9, 5, 3, 3, (1, 1), (1, 1)),
    ConvCase("c7-p0", 2, 7, 6, 5, 3, 3, 3, (1, 1), (0, 0)),
    ConvCase("c6-s2-p1", 3, 6, 7, 7, 2, 3, 3, (2, 2), (1, 1)),
    ConvCase("c9-k5x3-same-width", 2, 9, 5, 6, 4, 5, 3, (1, 1), (0, 1)),
    ConvCase("c9-k5-same", 2, 9, 6, 7, 5, 5, 5, (1, 1), (2, 2)),
    ConvCase("c8-n5-s2x1-p2x1", 5, 8, 4, 4, 3, 3, 3, (2, 1), (2, 1)),
    ConvCase("c6-1x2-image", 2, 6, 1, 2, 3, 3, 3, (1, 1), (1, 1)),
    # Stride 1, narrower than the input: the cpu chunked schedule computes it
    # widened (a 5-wide kernel with padding 1: two more columns, one each
    # side); an even kernel width is never widened.
    ConvCase("c9-k5-p1-widened", 2, 9, 6, 8, 4, 5, 5, (1, 1), (1, 1)),
    ConvCase("c8-k3x4-p0", 2, 8, 6, 7, 3, 3, 4, (1, 1), (0, 0)),
)
"""Every geometry once, with a bias and dx."""


def _options(case):
    """``case`` with every (bias, need_dx), named after what it leaves out."""
    for bias in (True, False):
        for need_dx in (True, False):
            name = case.name + ("" if bias else "-nobias") + ("" if need_dx else "-nodx")
            yield case._replace(name=name, bias=bias, need_dx=need_dx)


CASES = tuple(option for case in SHAPES for option in _options(case))
"""Every geometry with every (bias, need_dx)."""

GROUPED_SHAPES = (
    # One input channel per group, depthwise (F == C): 3x3 with stride 1 in one pass.
    ConvCase("dw3-same", 3, 4, 7, 9, 4, 3, 3, (1, 1), (1, 1), groups=4),
    ConvCase("dw3-p0", 2, 5, 6, 5, 5, 3, 3, (1, 1), (0, 0), groups=5),
    ConvCase("dw3-p3x2-wide", 2, 3, 4, 5, 3, 3, 3, (1, 1), (3, 2), groups=3),
    ConvCase("dw3-1x2-image", 2, 3, 1, 2, 3, 3, 3, (1, 1), (1, 1), groups=3),
    # Other kernels with stride 1, tap by tap; strides > 1 row by row.
    ConvCase("dw5x3-same", 2, 3, 6, 7, 3, 5, 3, (1, 1), (2, 1), groups=3),
    ConvCase("dw3-s2-p1", 3, 4, 7, 7, 4, 3, 3, (2, 2), (1, 1), groups=4),
    ConvCase("dw3-s2-p0", 2, 3, 8, 7, 3, 3, 3, (2, 2), (0, 0), groups=3),
    ConvCase("dw2x3-s2x1-p1x0", 2, 3, 5, 7, 3, 2, 3, (2, 1), (1, 0), groups=3),
    # A channel multiplier: F = 2C and 3C filters, one input channel per group.
    ConvCase("dw3-m2-same", 2, 3, 5, 6, 6, 3, 3, (1, 1), (1, 1), groups=3),
    ConvCase("dw3x2-m3-s1x2-p1x0", 2, 2, 5, 7, 6, 3, 2, (1, 2), (1, 0), groups=2),
    # Several input channels per group: im2col and one GEMM per (sample, group).
    ConvCase("g2-same", 3, 4, 7, 9, 6, 3, 3, (1, 1), (1, 1), groups=2),
    ConvCase("g2-s2-p0", 2, 6, 7, 6, 4, 3, 3, (2, 2), (0, 0), groups=2),
    ConvCase("g2-c6-s2-p1", 3, 6, 7, 7, 2, 3, 3, (2, 2), (1, 1), groups=2),
    ConvCase("g4-k3x2-s2x1-p0x2", 2, 8, 6, 5, 4, 3, 2, (2, 1), (0, 2), groups=4),
    ConvCase("g4-m3-same", 2, 8, 5, 5, 12, 3, 3, (1, 1), (1, 1), groups=4),
    ConvCase("g3-1x1", 2, 6, 5, 5, 9, 1, 1, (1, 1), (0, 0), groups=3),
    ConvCase("g2-1x2-image", 2, 4, 1, 2, 4, 3, 3, (1, 1), (1, 1), groups=2),
)
"""Every grouped geometry once (groups > 1), with a bias and dx."""

GROUPED_CASES = tuple(option for case in GROUPED_SHAPES for option in _options(case))
"""Every grouped geometry with every (bias, need_dx)."""

DEPTHWISE_SHAPES = tuple(case for case in SHAPES + GROUPED_SHAPES if case.Cg == 1)
"""Every geometry with one input channel per group (C == groups), groups = 1 included."""

LAYER_SHAPES = tuple(case for case in SHAPES
                     if case.name in ("k3-p0", "k3-s2-p1", "k2x3-s2x1-p1x0", "k3x1-s1x2-p0x1"))
"""A few small geometries for the slower checks: gradcheck, torch parity."""
