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


def output_size(x_shape, kernel, stride):
    """(OH, OW) in floor mode; ValueError when the window does not fit."""
    H, W = x_shape[2:]
    (kh, kw), (sh, sw) = kernel, stride
    if H < kh or W < kw:
        raise ValueError(f"pool2d: input ({H}, {W}) is smaller than the kernel ({kh}, {kw})")
    return (H - kh) // sh + 1, (W - kw) // sw + 1


def _check_pool_forward(name, x, kernel, stride):
    check_float(name, "x", x)
    check_ndim(name, "x", x, 4, "(N, C, H, W)")
    output_size(x.shape, kernel, stride)


def _check_maxpool_backward(name, dy, x_shape, cache, kernel, stride):
    _check_pool_backward(name, dy, x_shape, kernel, stride)


def _check_pool_backward(name, dy, x_shape, kernel, stride):
    check_float(name, "dy", dy)
    N, C = x_shape[:2]
    check_shape(name, "dy", dy, (N, C) + output_size(x_shape, kernel, stride))


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
