"""2-D max and average pooling (as torch.nn.MaxPool2d / AvgPool2d): the contract.

Pooling summarizes each window of a feature map by its maximum or its mean
(Scherer, Mueller and Behnke, 2010, https://doi.org/10.1007/978-3-642-15825-4_10).

x is (N, C, H, W); a (kh, kw) window slides with stride (sh, sw), with no
padding and in floor mode, so the output is (N, C, OH, OW) with
OH = (H - kh) // sh + 1 and OW = (W - kw) // sw + 1 (``output_size``).
Window (i, j) covers rows i*sh .. i*sh + kh - 1 and columns
j*sw .. j*sw + kw - 1; its tap t = p*kw + q is pixel (i*sh + p, j*sw + q).

Max pooling
    forward:  y[n, c, i, j] = max over the window of x[n, c, h, w]
    backward: dx[n, c, h, w] = sum of dy[n, c, i, j] over the windows whose
              argmax is (h, w)
    The argmax is the first maximum in row-major order within the window, as
    torch. A window holding a NaN has the max NaN and its argmax is the LAST
    NaN of the window, as torch (whose running test is `v > best or isnan(v)`,
    so every later NaN takes over). When sh < kh or sw < kw the windows
    overlap and one pixel can be the argmax of several windows: the backward
    scatter-ADDS. The forward also returns a cache that locates each argmax
    (its form is the backend's; the ref's is the flat index h*W + w in the
    (H, W) plane, as torch's return_indices), and the backward takes the cache
    of the same backend's forward.

Average pooling
    forward:  y[n, c, i, j] = (1 / (kh*kw)) * sum over the window of x[n, c, h, w]
    backward: dx[n, c, h, w] = (1 / (kh*kw)) * sum of dy[n, c, i, j] over the
              windows that contain (h, w)

Every array keeps the input dtype (float32 or float64).
"""
from ..contract import check_float, check_ndim, check_shape, op

__all__ = ["output_size", "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
           "avgpool2d_backward"]


def output_size(x_shape, kernel, stride):
    """(OH, OW), the output plane in floor mode of an input of shape x_shape
    (N, C, H, W) under a (kh, kw) kernel and an (sh, sw) stride; ValueError
    when the window does not fit in (H, W)."""
    H, W = x_shape[2:]
    (kh, kw), (sh, sw) = kernel, stride
    if H < kh or W < kw:
        raise ValueError(f"pool2d: input ({H}, {W}) is smaller than the kernel ({kh}, {kw})")
    return (H - kh) // sh + 1, (W - kw) // sw + 1


def _check_pool_forward(name, x, kernel, stride):
    check_float(name, "x", x)
    check_ndim(name, "x", x, 4, "(N, C, H, W)")
    output_size(x.shape, kernel, stride)


def _check_pool_backward(name, dy, x_shape, kernel, stride):
    check_float(name, "dy", dy)
    N, C = x_shape[:2]
    check_shape(name, "dy", dy, (N, C) + output_size(x_shape, kernel, stride))


def _check_maxpool_backward(name, dy, x_shape, cache, kernel, stride):
    # The cache's form is the backend's: each backend checks its own.
    _check_pool_backward(name, dy, x_shape, kernel, stride)


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
