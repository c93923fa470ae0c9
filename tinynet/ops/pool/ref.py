"""Pooling, the NumPy reference: the ops of the contract (tinynet/ops/pool/__init__.py).

Each window is a view of x (``sliding_window_view``, strided to the output
grid) copied to a trailing axis of kh*kw taps in row-major order. The max is
``np.argmax`` over that axis (the first maximum), replaced by the last NaN
where a window holds one, and the cache is that tap as the flat index
h*W + w. The max-pool backward scatter-adds dy with ``np.add.at``; the
average-pool backward adds dy / (kh*kw) tap by tap, each tap a strided slice
of dx. Everything runs in the input dtype (the tests call it in float64).
"""
import numpy as np

from ..contract import implements
from .. import pool

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


def _windows(x, kernel, stride):
    """Every pooling window of x as a copy, shape (N, C, OH, OW, kh*kw), row-major inside."""
    pool.output_size(x.shape, kernel, stride)  # ValueError when the window does not fit
    (kh, kw), (sh, sw) = kernel, stride
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    view = view[:, :, ::sh, ::sw]
    return view.reshape(view.shape[:4] + (kh * kw,))


@implements(pool.maxpool2d_forward)
def maxpool2d_forward(x, kernel, stride):
    kw = kernel[1]
    sh, sw = stride
    W = x.shape[3]
    OH, OW = pool.output_size(x.shape, kernel, stride)
    windows = _windows(x, kernel, stride)
    # np.argmax returns the first maximum, as torch does.
    k = np.argmax(windows, axis=-1)
    # A window with a NaN: its last NaN, as torch.
    isnan = np.isnan(windows)
    last_nan = windows.shape[-1] - 1 - np.argmax(isnan[..., ::-1], axis=-1)
    k = np.where(isnan.any(axis=-1), last_nan, k)
    y = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    # Window (i, j) starts at row i*sh and column j*sw; tap k is at (k // kw, k % kw).
    h = np.arange(OH)[:, None] * sh + k // kw
    w = np.arange(OW)[None, :] * sw + k % kw
    return np.ascontiguousarray(y), (h * W + w).astype(np.int64)


@implements(pool.maxpool2d_backward)
def maxpool2d_backward(dy, x_shape, cache, kernel, stride):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dtype=dy.dtype)
    plane = np.arange(N * C)[:, None]
    # Scatter-add: an index that appears in several windows gets the sum.
    windows = cache.shape[2] * cache.shape[3]  # explicit: -1 fails when N * C == 0
    np.add.at(dx, (plane, cache.reshape(N * C, windows)), dy.reshape(N * C, windows))
    return dx.reshape(N, C, H, W)


@implements(pool.avgpool2d_forward)
def avgpool2d_forward(x, kernel, stride):
    return _windows(x, kernel, stride).mean(axis=-1)


@implements(pool.avgpool2d_backward)
def avgpool2d_backward(dy, x_shape, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    OH, OW = pool.output_size(x_shape, kernel, stride)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kh * kw)
    for p in range(kh):
        for q in range(kw):
            # Tap (p, q) of every window: distinct pixels, so += is a plain add.
            dx[:, :, p:p + sh * OH:sh, q:q + sw * OW:sw] += share
    return dx
