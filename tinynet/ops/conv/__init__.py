"""2-D convolution (cross-correlation, as torch.nn.Conv2d): the contract.

x is (N, C, H, W), W is (F, C/G, KH, KW), b is (F,); stride (sh, sw), zero
padding (ph, pw), G groups (G divides C and F; G = 1 is the plain
convolution). xp is x padded with ph zero rows and pw zero columns on each
side. The output is (N, F, OH, OW) with

    OH = (H + 2*ph - KH) // sh + 1,   OW = (W + 2*pw - KW) // sw + 1.

With Cg = C/G input and Fg = F/G output channels per group, group g maps
input channels [g*Cg, (g+1)*Cg) to output channels [g*Fg, (g+1)*Fg): output
channel f is in group g(f) = f // Fg, and its tap (c', p, q), c' < Cg, reads
input channel c = g(f)*Cg + c'. For G = 1, c = c'.

forward:   y[n, f, i, j]   = b[f] + sum_{c', p, q} W[f, c', p, q] * xp[n, c, i*sh + p, j*sw + q]
backward:  db[f]           = sum_{n, i, j} dy[n, f, i, j]
           dW[f, c', p, q] = sum_{n, i, j} dy[n, f, i, j] * xp[n, c, i*sh + p, j*sw + q]
           dxp[n, c, i*sh + p, j*sw + q] += sum_{f in group c // Cg} dy[n, f, i, j] * W[f, c', p, q]
           dx = dxp without its padding

(c = g(f)*Cg + c' throughout). Each group is thus an independent
convolution of its Cg input channels by its Fg filters; G = C is the
depthwise convolution (one input channel per group, F = C times a channel
multiplier).

im2col (Chellapilla, Puri and Simard, 2006,
https://inria.hal.science/inria-00112631) turns this into matrix multiplies.
cols[n] is (C*KH*KW, OH*OW): column i*OW + j holds the C*KH*KW input pixels
that output pixel (i, j) sees. Its rows are ordered (c, p, q), so group g's
rows are the contiguous block g*Kg .. (g+1)*Kg - 1, Kg = Cg*KH*KW. With
Wm = W reshaped to (F, Kg), Wm_g its rows of group g (Fg, Kg), cols_g[n]
group g's rows of cols[n] and y_g, dy_g the group's output channels:

    y_g[n]     = Wm_g cols_g[n] + b_g
    dWm_g      = sum_n dy_g[n] cols_g[n]^T
    dcols_g[n] = Wm_g^T dy_g[n],    dx = col2im(dcols)

For G = 1 that is one matrix multiply, y[n] = Wm cols[n] + b. col2im is
the adjoint of im2col: it scatter-adds each column back to the pixels it
came from, so a pixel seen by several windows sums their gradients. Every
op keeps the input dtype (float32 or float64). docs/backprop.md derives the
backward.
"""
import numbers

from ..contract import check_float, check_ndim, check_shape, op

__all__ = ["conv2d_output_size", "check_groups", "im2col", "col2im", "conv2d_forward",
           "conv2d_backward"]


def conv2d_output_size(H, W, kh, kw, stride, padding):
    """(OH, OW) of a convolution or pooling window sliding over an (H, W) image.

    Parameters
    ----------
    H, W : int
        Input height and width.
    kh, kw : int
        Window height and width.
    stride : tuple of int
        (sh, sw).
    padding : tuple of int
        (ph, pw), zeros added on each side.

    Returns
    -------
    (OH, OW) : tuple of int
        OH = (H + 2*ph - kh) // sh + 1, OW likewise. Raises ValueError when the
        padded input is smaller than the window.
    """
    (sh, sw), (ph, pw) = stride, padding
    if H + 2 * ph < kh or W + 2 * pw < kw:
        raise ValueError(f"conv2d: the padded input ({H + 2 * ph}, {W + 2 * pw}) is smaller "
                         f"than the kernel ({kh}, {kw})")
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def _check_image(name, arg, x, kh, kw, stride, padding):
    """x a float (N, C, H, W) array the window fits; returns (OH, OW)."""
    check_float(name, arg, x)
    check_ndim(name, arg, x, 4, "(N, C, H, W)")
    return conv2d_output_size(x.shape[2], x.shape[3], kh, kw, stride, padding)


def _check_im2col(name, x, kh, kw, stride, padding):
    _check_image(name, "x", x, kh, kw, stride, padding)


def _check_col2im(name, cols, x_shape, kh, kw, stride, padding):
    check_float(name, "cols", cols)
    N, C, H, W = x_shape
    OH, OW = conv2d_output_size(H, W, kh, kw, stride, padding)
    if cols.shape != (N, C * kh * kw, OH * OW):
        raise ValueError(f"{name}: cols must have shape (N, C*kh*kw, OH*OW) = "
                         f"{(N, C * kh * kw, OH * OW)}, got {cols.shape}")


def check_groups(name, groups, C, F):
    """ValueError (TypeError for a non-int) unless ``groups`` is a positive int
    that divides both C (in_channels) and F (out_channels).

    Parameters
    ----------
    name : str
        The op or layer the message names.
    groups : int
        G, the number of groups.
    C, F : int
        Input and output channels.
    """
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{name}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{name}: groups must be >= 1, got {groups}")
    if C % groups or F % groups:
        raise ValueError(f"{name}: groups={groups} must divide in_channels={C} and "
                         f"out_channels={F}")


def _check_conv(name, x, W, b, stride, padding, groups):
    """x (N, C, H, W), W (F, C/G, KH, KW) and b (F,) of one float dtype, G groups
    dividing C and F; returns (OH, OW)."""
    check_float(name, "W", W)
    check_ndim(name, "W", W, 4, "(F, C/groups, KH, KW)")
    F, Cg, KH, KW = W.shape
    OH, OW = _check_image(name, "x", x, KH, KW, stride, padding)
    check_groups(name, groups, x.shape[1], F)
    if x.shape[1] != Cg * groups:
        per_group = "" if groups == 1 else f" and groups={groups}"
        raise ValueError(f"{name}: x must have shape (N, {Cg * groups}, H, W) for W {W.shape}"
                         f"{per_group}, got {x.shape}")
    if x.dtype != W.dtype:
        raise TypeError(f"{name}: x ({x.dtype}) and W ({W.dtype}) must have one dtype")
    check_shape(name, "b", b, (F,))
    return OH, OW


def _check_conv_forward(name, x, W, b, stride, padding, groups=1):
    _check_conv(name, x, W, b, stride, padding, groups)


def _check_conv_backward(name, dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    OH, OW = _check_conv(name, x, W, None, stride, padding, groups)
    check_float(name, "dy", dy)
    check_shape(name, "dy", dy, (x.shape[0], W.shape[0], OH, OW))


@op(check=_check_im2col)
def im2col(x, kh, kw, stride, padding):
    """Unfold every (kh, kw) window of x into a column, as torch.nn.functional.unfold.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C, H, W).
    kh, kw : int
        Kernel height and width.
    stride : tuple of int
        (sh, sw).
    padding : tuple of int
        (ph, pw).

    Returns
    -------
    cols : np.ndarray
        Shape (N, C*kh*kw, OH*OW). Row (c*kh + p)*kw + q, column i*OW + j holds
        xp[n, c, i*sh + p, j*sw + q], the pixel that kernel tap (c, p, q) sees
        at output position (i, j).
    """


@op(check=_check_col2im)
def col2im(cols, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: scatter-add every column back onto the image.

    Parameters
    ----------
    cols : np.ndarray
        Shape (N, C*kh*kw, OH*OW), laid out as im2col returns it.
    x_shape : tuple of int
        (N, C, H, W), the shape of the image im2col read.
    kh, kw : int
        Kernel height and width.
    stride : tuple of int
        (sh, sw).
    padding : tuple of int
        (ph, pw).

    Returns
    -------
    x : np.ndarray
        Shape (N, C, H, W), dtype of cols. A pixel covered by several windows
        gets the sum of their entries; the padding is dropped.
    """


@op(check=_check_conv_forward)
def conv2d_forward(x, W, b, stride, padding, groups=1):
    """y = conv2d(x, W) + b with ``groups`` groups, as torch.nn.functional.conv2d.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, C, H, W).
    W : np.ndarray
        Weight, shape (F, C/groups, KH, KW).
    b : np.ndarray or None
        Bias, shape (F,), or None.
    stride : tuple of int
        (sh, sw).
    padding : tuple of int
        (ph, pw).
    groups : int
        G, dividing C and F (default 1): group g convolves input channels
        [g*C/G, (g+1)*C/G) into output channels [g*F/G, (g+1)*F/G).
        G = C is the depthwise convolution.

    Returns
    -------
    y : np.ndarray
        Output, shape (N, F, OH, OW), dtype of x.
    cache : object
        Backend-specific, only passed back to the same backend's
        conv2d_backward (with the same groups). The ref's is the im2col
        columns of x, shape (N, C*KH*KW, OH*OW).
    """


@op(check=_check_conv_backward)
def conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    """Gradients of the (grouped) convolution with respect to x, W and b.

    Parameters
    ----------
    dy : np.ndarray
        Upstream gradient, shape (N, F, OH, OW).
    x : np.ndarray
        The forward input, shape (N, C, H, W).
    W : np.ndarray
        Weight, shape (F, C/groups, KH, KW).
    cache : object or None
        What the same backend's conv2d_forward returned; None recomputes what
        is needed from x.
    stride : tuple of int
        (sh, sw).
    padding : tuple of int
        (ph, pw).
    has_bias : bool
        Compute db.
    need_dx : bool
        Compute dx.
    groups : int
        G, as in conv2d_forward (default 1).

    Returns
    -------
    dx : np.ndarray or None
        Shape (N, C, H, W); None unless ``need_dx``.
    dW : np.ndarray
        Shape (F, C/groups, KH, KW).
    db : np.ndarray or None
        Shape (F,); None unless ``has_bias``.
    """
