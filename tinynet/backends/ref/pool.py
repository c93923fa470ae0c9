"""2-D max and average pooling, the NumPy reference (as torch.nn.MaxPool2d / AvgPool2d).

x is (N, C, H, W); a (kh, kw) window slides with stride (sh, sw), with no
padding and in floor mode, so the output is (N, C, OH, OW) with
OH = (H - kh) // sh + 1 and OW = (W - kw) // sw + 1. Window (i, j) covers
rows i*sh .. i*sh + kh - 1 and columns j*sw .. j*sw + kw - 1.

Max pooling
    forward:  y[n, c, i, j] = max over the window of x[n, c, h, w]
    backward: dx[n, c, h, w] = sum of dy[n, c, i, j] over the windows whose
              argmax is (h, w)
    The argmax is the first maximum in row-major order within the window, as
    torch. A window holding a NaN has the max NaN and its argmax is the LAST
    NaN of the window, as torch (whose running test is `v > best or isnan(v)`,
    so every later NaN takes over). The cache is the flat index h*W + w
    of each window's argmax in its (H, W) plane, as torch's return_indices.
    When sh < kh or sw < kw the windows overlap and one pixel can be the
    argmax of several windows: the backward scatter-ADDS.

Average pooling
    forward:  y[n, c, i, j] = (1 / (kh*kw)) * sum over the window of x[n, c, h, w]
    backward: dx[n, c, h, w] = (1 / (kh*kw)) * sum of dy[n, c, i, j] over the
              windows that contain (h, w)

Every array keeps the input dtype (float32 or float64).
"""
import numpy as np

from ..contract import check_float, check_ndim, check_shape, op

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


def _output_size(x_shape, kernel, stride):
    """(OH, OW) in floor mode; ValueError when the window does not fit."""
    H, W = x_shape[2:]
    (kh, kw), (sh, sw) = kernel, stride
    if H < kh or W < kw:
        raise ValueError(f"pool2d: input ({H}, {W}) is smaller than the kernel ({kh}, {kw})")
    return (H - kh) // sh + 1, (W - kw) // sw + 1


def _check_pool_forward(name, x, kernel, stride):
    check_float(name, "x", x)
    check_ndim(name, "x", x, 4, "(N, C, H, W)")
    _output_size(x.shape, kernel, stride)


def _check_maxpool_backward(name, dy, x_shape, cache, kernel, stride):
    _check_pool_backward(name, dy, x_shape, kernel, stride)


def _check_pool_backward(name, dy, x_shape, kernel, stride):
    check_float(name, "dy", dy)
    N, C = x_shape[:2]
    check_shape(name, "dy", dy, (N, C) + _output_size(x_shape, kernel, stride))


def _windows(x, kernel, stride):
    """Every pooling window of x as a copy, shape (N, C, OH, OW, kh*kw), row-major inside."""
    # Raises ValueError when the window does not fit.
    _output_size(x.shape, kernel, stride)
    (kh, kw), (sh, sw) = kernel, stride
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    view = view[:, :, ::sh, ::sw]
    return view.reshape(view.shape[:4] + (kh * kw,))


@op(check=_check_pool_forward)
def maxpool2d_forward(x, kernel, stride):
    """Max over each (kh, kw) window.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C, H, W).
    kernel : tuple of int
        (kh, kw).
    stride : tuple of int
        (sh, sw).

    Returns
    -------
    y : np.ndarray
        Output, shape (N, C, OH, OW), dtype of x.
    cache : np.ndarray
        Shape (N, C, OH, OW), backend-specific (each backend's notes say what it
        holds; a layer passes it back to the same backend's backward). The
        ref's is int64: the flat index h*W + w of each window's argmax (the
        first maximum in row-major order, or the last NaN) in its (H, W) plane.
    """
    kw = kernel[1]
    sh, sw = stride
    W = x.shape[3]
    OH, OW = _output_size(x.shape, kernel, stride)
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


@op(check=_check_maxpool_backward)
def maxpool2d_backward(dy, x_shape, cache, kernel, stride):
    """Route each dy to its window's argmax, adding where windows share one.

    Parameters
    ----------
    dy : np.ndarray
        Upstream gradient, shape (N, C, OH, OW).
    x_shape : tuple of int
        (N, C, H, W), the forward input's shape.
    cache : np.ndarray
        What the same backend's maxpool2d_forward returned, shape (N, C, OH, OW).
    kernel : tuple of int
        (kh, kw).
    stride : tuple of int
        (sh, sw).

    Returns
    -------
    dx : np.ndarray
        Shape (N, C, H, W), dtype of dy; zero except at the argmaxes.
    """
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dtype=dy.dtype)
    plane = np.arange(N * C)[:, None]
    # Scatter-add: an index that appears in several windows gets the sum.
    windows = cache.shape[2] * cache.shape[3]  # explicit: -1 fails when N * C == 0
    np.add.at(dx, (plane, cache.reshape(N * C, windows)), dy.reshape(N * C, windows))
    return dx.reshape(N, C, H, W)


@op(check=_check_pool_forward)
def avgpool2d_forward(x, kernel, stride):
    """Mean over each (kh, kw) window.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C, H, W).
    kernel : tuple of int
        (kh, kw).
    stride : tuple of int
        (sh, sw).

    Returns
    -------
    y : np.ndarray
        Output, shape (N, C, OH, OW), dtype of x.
    """
    return _windows(x, kernel, stride).mean(axis=-1)


@op(check=_check_pool_backward)
def avgpool2d_backward(dy, x_shape, kernel, stride):
    """Spread each dy evenly over its window, adding where windows overlap.

    Parameters
    ----------
    dy : np.ndarray
        Upstream gradient, shape (N, C, OH, OW).
    x_shape : tuple of int
        (N, C, H, W), the forward input's shape.
    kernel : tuple of int
        (kh, kw).
    stride : tuple of int
        (sh, sw).

    Returns
    -------
    dx : np.ndarray
        Shape (N, C, H, W), dtype of dy.
    """
    (kh, kw), (sh, sw) = kernel, stride
    OH, OW = _output_size(x_shape, kernel, stride)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kh * kw)
    for p in range(kh):
        for q in range(kw):
            # Tap (p, q) of every window: distinct pixels, so += is a plain add.
            dx[:, :, p:p + sh * OH:sh, q:q + sw * OW:sw] += share
    return dx
