"""Pooling layers over NCHW images (as torch.nn.MaxPool2d, AvgPool2d and
AdaptiveAvgPool2d(1) followed by Flatten).

MaxPool2D and AvgPool2D slide a (kh, kw) window with stride (sh, sw) over x
(N, C, H, W), with no padding and in floor mode, and return y (N, C, OH, OW).
GlobalAvgPool2D is the average pool with kernel = stride = (H, W), returned
as (N, C). The math (forward, backward, the argmax rule of max pooling) is
stated once, in the ops' contract, tinynet/ops/pool/__init__.py; the
arithmetic is the active backend's maxpool2d_* / avgpool2d_* ops.
"""
from __future__ import annotations

from typing import Any

from ..parameter import Array
from .base import Layer
from .conv import _pair

__all__ = ["MaxPool2D", "AvgPool2D", "GlobalAvgPool2D"]


class _Pool2D(Layer):
    """Shared setup and checks of MaxPool2D and AvgPool2D."""

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, self.name, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, self.name, "stride")

    def _check_pool_input(self, x: Array) -> Array:
        x = self._check_input(x, (4,), "(N, C, H, W)")
        (kh, kw), (H, W) = self.kernel_size, x.shape[2:]
        if H < kh or W < kw:
            raise ValueError(f"{self.name}: input of spatial size ({H}, {W}) is smaller than "
                             f"the kernel ({kh}, {kw})")
        return x

    def _check_pool_dy(self, dy: Array) -> tuple[Array, tuple[int, ...], Any]:
        """dy checked against the forward's output shape and dtype; returns (dy, x_shape, extra)."""
        dy = self._check_dy(dy, self._cache[1] if self._cache else None)
        x_shape, _, dtype, extra = self._cache
        if dy.dtype != dtype:
            raise TypeError(f"{self.name}.backward: dy dtype {dy.dtype} does not match the "
                            f"input's ({dtype})")
        return dy, x_shape, extra

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2D(_Pool2D):
    """Max over each window, as torch.nn.MaxPool2d (no padding, floor mode).

    Parameters
    ----------
    kernel_size : int or (int, int)
        (kh, kw).
    stride : int or (int, int), optional
        (sh, sw); defaults to kernel_size. A stride below the kernel gives
        overlapping windows.

    Shapes
    ------
    x (N, C, H, W) -> y (N, C, OH, OW)
    """

    def forward(self, x: Array) -> Array:
        """Max-pool x (N, C, H, W); returns (N, C, OH, OW)."""
        x = self._check_pool_input(x)
        y, argmax = self.ops.maxpool2d_forward(x, self.kernel_size, self.stride)
        self._cache = (x.shape, y.shape, x.dtype, argmax)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Route dy (N, C, OH, OW) to the argmaxes; return dx (N, C, H, W), or None."""
        dy, x_shape, argmax = self._check_pool_dy(dy)
        if not self.requires_input_grad:
            return None
        return self.ops.maxpool2d_backward(dy, x_shape, argmax, self.kernel_size, self.stride)


class AvgPool2D(_Pool2D):
    """Mean over each window, as torch.nn.AvgPool2d (no padding, floor mode).

    Parameters
    ----------
    kernel_size : int or (int, int)
        (kh, kw).
    stride : int or (int, int), optional
        (sh, sw); defaults to kernel_size.

    Shapes
    ------
    x (N, C, H, W) -> y (N, C, OH, OW)
    """

    def forward(self, x: Array) -> Array:
        """Average-pool x (N, C, H, W); returns (N, C, OH, OW)."""
        x = self._check_pool_input(x)
        y = self.ops.avgpool2d_forward(x, self.kernel_size, self.stride)
        self._cache = (x.shape, y.shape, x.dtype, None)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Spread dy (N, C, OH, OW) over the windows; return dx (N, C, H, W), or None."""
        dy, x_shape, _ = self._check_pool_dy(dy)
        if not self.requires_input_grad:
            return None
        return self.ops.avgpool2d_backward(dy, x_shape, self.kernel_size, self.stride)


class GlobalAvgPool2D(Layer):
    """Mean over all of (H, W) for each sample and channel.

    The same as torch's ``nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())``.

    Shapes
    ------
    x (N, C, H, W) -> y (N, C)
    """

    def forward(self, x: Array) -> Array:
        """y[n, c] = mean of x[n, c] over (H, W). x: (N, C, H, W); returns (N, C)."""
        x = self._check_input(x, (4,), "(N, C, H, W)")
        N, C, H, W = x.shape
        if H == 0 or W == 0:
            raise ValueError(f"{self.name}: input must have H, W >= 1 to average over, "
                             f"got shape {x.shape}")
        y = self.ops.avgpool2d_forward(x, (H, W), (H, W))
        self._cache = (x.shape, x.dtype)
        return y.reshape(N, C)

    def backward(self, dy: Array) -> Array | None:
        """dx[n, c, h, w] = dy[n, c] / (H*W). dy: (N, C); returns (N, C, H, W), or None."""
        dy = self._check_dy(dy, self._cache[0][:2] if self._cache else None)
        x_shape, dtype = self._cache
        if dy.dtype != dtype:
            raise TypeError(f"GlobalAvgPool2D.backward: dy dtype {dy.dtype} does not match the "
                            f"input's ({dtype})")
        if not self.requires_input_grad:
            return None
        N, C, H, W = x_shape
        return self.ops.avgpool2d_backward(dy.reshape(N, C, 1, 1), x_shape, (H, W), (H, W))
