"""Conv2D: 2-D convolution over NCHW images (as torch.nn.Conv2d).

x (N, C, H, W) -> y (N, F, OH, OW) with W (F, C/G, KH, KW), b (F,), stride
(sh, sw), zero padding (ph, pw) and G groups (group g convolves input
channels [g*C/G, (g+1)*C/G) into output channels [g*F/G, (g+1)*F/G);
G = C is depthwise). The forward and backward equations, the
output size and the im2col form are stated once, in the op family's
contract (tinynet/ops/conv/__init__.py); docs/backprop.md derives them.
The layer holds the parameters and the backward cache; the arithmetic is the
active backend's conv2d_forward / conv2d_backward.
"""
from __future__ import annotations

import numbers

from .. import init as initializers
from ..ops.conv import check_groups
from ..parameter import Array, Parameter
from .base import Layer
from .dense import _positive_int

__all__ = ["Conv2D"]


def _pair(value: object, layer: str, arg: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints as a tuple (a, b); ValueError below ``minimum``."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in pair)):
        raise TypeError(f"{layer}: {arg} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{layer}: {arg} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


class Conv2D(Layer):
    """2-D convolution (cross-correlation) over NCHW images.

    Parameters
    ----------
    in_channels : int
        C, channels of the input.
    out_channels : int
        F, channels of the output (the number of filters).
    kernel_size : int or (int, int)
        (KH, KW); an int k means (k, k).
    stride : int or (int, int)
        (sh, sw), default 1.
    padding : int or (int, int)
        (ph, pw) zeros added on each side, default 0.
    bias : bool
        Learn a bias per output channel (default True).
    groups : int
        G, dividing in_channels and out_channels (default 1), as torch's:
        group g convolves input channels [g*C/G, (g+1)*C/G) into output
        channels [g*F/G, (g+1)*F/G). groups = in_channels = out_channels is
        the depthwise convolution.
    init : str
        The initialization, one of ``tn.init.INITS``: "torch" (torch.nn.Conv2d's:
        W and b from U(-1/sqrt(fan_in), 1/sqrt(fan_in))), "he_uniform",
        "he_normal", "xavier_uniform" or "xavier_normal" (b zeros); fan_in =
        in_channels // groups * KH * KW.

    Attributes
    ----------
    weight : Parameter
        W, shape (out_channels, in_channels // groups, KH, KW).
    bias : Parameter or None
        b, shape (out_channels,); None when ``bias=False``.

    Shapes
    ------
    x (N, in_channels, H, W) -> y (N, out_channels, OH, OW)
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 bias: bool = True, groups: int = 1, init: str = "torch") -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "Conv2D", "in_channels")
        self.out_channels = _positive_int(out_channels, "Conv2D", "out_channels")
        self.kernel_size = _pair(kernel_size, "Conv2D", "kernel_size")
        self.stride = _pair(stride, "Conv2D", "stride")
        self.padding = _pair(padding, "Conv2D", "padding", minimum=0)
        check_groups("Conv2D", groups, self.in_channels, self.out_channels)
        self.groups = int(groups)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        weight, b = initializers.weight_and_bias("Conv2D", init, shape, bias)
        self.init = init
        self.weight = Parameter(weight, name="weight")
        self.bias = Parameter(b, name="bias") if bias else None

    def forward(self, x: Array) -> Array:
        """Convolve x (N, in_channels, H, W); returns (N, out_channels, OH, OW)."""
        expected = f"(N, in_channels, H, W) = (N, {self.in_channels}, H, W)"
        x = self._check_input(x, (4,), expected)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D: input must have shape {expected}, got shape {x.shape}")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        H, W = x.shape[2:]
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"Conv2D: input of spatial size ({H}, {W}), padded to "
                             f"({H + 2 * ph}, {W + 2 * pw}), is smaller than the kernel "
                             f"({kh}, {kw})")
        b = None if self.bias is None else self.bias.data
        y, cache = self.ops.conv2d_forward(x, self.weight.data, b, self.stride, self.padding,
                                           self.groups)
        self._cache = (x, cache, y.shape)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Add dW (and db) into the gradients; return dx (N, in_channels, H, W), or None.

        dx is None when ``requires_input_grad`` is False.
        """
        dy = self._check_dy(dy, self._cache[2] if self._cache else None)
        x, cache, _ = self._cache
        if dy.dtype != x.dtype:
            raise TypeError(f"Conv2D.backward: dy dtype {dy.dtype} does not match the "
                            f"input's ({x.dtype})")
        dx, dW, db = self.ops.conv2d_backward(dy, x, self.weight.data, cache, self.stride,
                                              self.padding, self.bias is not None,
                                              self.requires_input_grad, self.groups)
        self.weight.accumulate_grad(dW, fresh=True)  # dW and db: the op's new arrays
        if db is not None and self.bias is not None:
            self.bias.accumulate_grad(db, fresh=True)
        return dx

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
