"""Conv2D in NumPy: the readable reference and the test oracle.

The ops are those of the contract (tinynet/ops/conv/__init__.py), computed as
its im2col form states them: im2col fills (N, C, KH, KW, OH, OW) with one
strided slice of the zero-padded image per tap (p, q); col2im adds them back
tap by tap; the GEMMs are ``@`` and ``np.tensordot`` over the batch, one
per group (its filters and its block of rows of the columns).
Everything runs in the input dtype (float32 or float64), as NumPy's BLAS does.

conv2d_naive_forward / conv2d_naive_backward compute the same with plain
loops over the output positions, without im2col: the oracle the im2col ops
of every backend are tested against. They are ref-only, not ops of the
contract. conv2d_output_size is the contract's, re-exported.
"""
import numpy as np

from .. import conv
from ..contract import implements
from . import conv2d_output_size

__all__ = ["conv2d_output_size", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
           "conv2d_naive_forward", "conv2d_naive_backward"]


def _pad(x, padding):
    """x (N, C, H, W) with ph zero rows and pw zero columns added on each side."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


@implements(conv.im2col)
def im2col(x, kh, kw, stride, padding):
    N, C, H, W = x.shape
    sh, sw = stride
    OH, OW = conv2d_output_size(H, W, kh, kw, stride, padding)
    xp = _pad(x, padding)
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            # The pixels kernel tap (p, q) sees at every output position (i, j).
            cols[:, :, p, q] = xp[:, :, p:p + sh * OH:sh, q:q + sw * OW:sw]
    return cols.reshape(N, C * kh * kw, OH * OW)


@implements(conv.col2im)
def col2im(cols, x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    sh, sw = stride
    ph, pw = padding
    OH, OW = conv2d_output_size(H, W, kh, kw, stride, padding)
    cols = cols.reshape(N, C, kh, kw, OH, OW)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for p in range(kh):
        for q in range(kw):
            # Within one tap (p, q) the target pixels are distinct, so += is a plain add.
            xp[:, :, p:p + sh * OH:sh, q:q + sw * OW:sw] += cols[:, :, p, q]
    return np.ascontiguousarray(xp[:, :, ph:ph + H, pw:pw + W])


@implements(conv.conv2d_forward)
def conv2d_forward(x, W, b, stride, padding, groups=1):
    N, C, H, Wd = x.shape
    F, Cg, KH, KW = W.shape
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    cols = im2col(x, KH, KW, stride, padding)
    # Group g: its filters Wm_g (F/G, Kg) times its rows of the columns (N, Kg, OH*OW).
    Kg, Fg = Cg * KH * KW, F // groups
    y = np.empty((N, F, OH * OW), dtype=x.dtype)
    for g in range(groups):
        f, k = slice(g * Fg, (g + 1) * Fg), slice(g * Kg, (g + 1) * Kg)
        # (Fg, Kg) @ (N, Kg, OH*OW) -> (N, Fg, OH*OW)
        y[:, f] = W[f].reshape(Fg, Kg) @ cols[:, k]
    if b is not None:
        y += b[:, None]
    return y.reshape(N, F, OH, OW), cols


@implements(conv.conv2d_backward)
def conv2d_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    N, F, OH, OW = dy.shape
    _, Cg, KH, KW = W.shape
    cols = im2col(x, KH, KW, stride, padding) if cache is None else cache
    dy2 = dy.reshape(N, F, OH * OW)
    Kg, Fg = Cg * KH * KW, F // groups
    dW = np.empty((F, Kg), dtype=dy.dtype)
    dcols = np.empty_like(cols) if need_dx else None
    for g in range(groups):
        f, k = slice(g * Fg, (g + 1) * Fg), slice(g * Kg, (g + 1) * Kg)
        # dWm_g = sum_n dy_g[n] cols_g[n]^T: contract over the batch and the output positions.
        dW[f] = np.tensordot(dy2[:, f], cols[:, k], axes=([0, 2], [0, 2]))
        if need_dx:
            # dcols_g[n] = Wm_g^T dy_g[n]: (Kg, Fg) @ (N, Fg, OH*OW) -> (N, Kg, OH*OW)
            dcols[:, k] = W[f].reshape(Fg, Kg).T @ dy2[:, f]
    db = dy2.sum(axis=(0, 2)) if has_bias else None
    dx = col2im(dcols, x.shape, KH, KW, stride, padding) if need_dx else None
    return dx, dW.reshape(W.shape), db


def conv2d_naive_forward(x, W, b, stride, padding, groups=1):
    """The convolution as plain loops over output positions (the test oracle).

    Same parameters as conv2d_forward.

    Returns
    -------
    y : np.ndarray
        Output, shape (N, F, OH, OW), dtype of x.
    cache : None
        The naive backward needs nothing beyond x and W.
    """
    N, C, H, Wd = x.shape
    F, Cg, KH, KW = W.shape
    sh, sw = stride
    OH, OW = conv2d_output_size(H, Wd, KH, KW, stride, padding)
    xp = _pad(x, padding)
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            # Filter f sees only the Cg input channels of its group.
            c0 = f // (F // groups) * Cg
            for i in range(OH):
                for j in range(OW):
                    window = xp[n, c0:c0 + Cg, i * sh:i * sh + KH, j * sw:j * sw + KW]
                    y[n, f, i, j] = np.sum(window * W[f])
            if b is not None:
                y[n, f] += b[f]
    return y, None


def conv2d_naive_backward(dy, x, W, cache, stride, padding, has_bias, need_dx, groups=1):
    """The convolution's backward as plain loops over output positions (the test oracle).

    Same parameters and returns as conv2d_backward; ``cache`` is ignored.
    """
    N, F, OH, OW = dy.shape
    sh, sw = stride
    ph, pw = padding
    Cg, KH, KW = W.shape[1:]
    H, Wd = x.shape[2:]
    xp = _pad(x, padding)
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for n in range(N):
        for f in range(F):
            c0 = f // (F // groups) * Cg
            for i in range(OH):
                for j in range(OW):
                    rows = slice(i * sh, i * sh + KH)
                    cols = slice(j * sw, j * sw + KW)
                    # Output (n, f, i, j) read this window of its group's channels through W[f].
                    dW[f] += dy[n, f, i, j] * xp[n, c0:c0 + Cg, rows, cols]
                    dxp[n, c0:c0 + Cg, rows, cols] += dy[n, f, i, j] * W[f]
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    dx = np.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + Wd]) if need_dx else None
    return dx, dW, db
