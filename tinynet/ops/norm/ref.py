"""The NumPy reference of the normalization ops (tinynet/ops/norm/__init__.py).

How it computes: in float64 throughout, on an (S, M) view of x with one set
per row (a transposed copy for per-channel sets), reducing along the rows:
the statistics in two passes (the mean, then the mean of the squared
deviations from it), the backward's two set means of dxhat and dxhat * xhat
from xhat recomputed from x. y, dx, dgamma and dbeta are cast back to the
dtype of x; the statistics stay float64.
"""
import numpy as np

from .. import norm
from ..contract import implements

__all__ = ["norm_stats", "norm_forward", "norm_forward_train", "norm_backward"]


def _to_sets(a, groups, per_channel):
    """View an (N, C, L) array as (S, M): one row per set, its members along the row."""
    N, C, L = a.shape
    if per_channel:
        return a.transpose(1, 0, 2).reshape(C, N * L)
    return a.reshape(N * groups, (C // groups) * L)


def _from_sets(s, shape, per_channel):
    """Inverse of ``_to_sets``: an (S, M) array back to (N, C, L)."""
    N, C, L = shape
    if per_channel:
        return s.reshape(C, N, L).transpose(1, 0, 2)
    return s.reshape(N, C, L)


def _xhat(x, mean, rstd, groups, per_channel):
    """xhat = (x - mean) * rstd of every member, in float64, shape (N, C, L)."""
    xs = _to_sets(x.astype(np.float64), groups, per_channel)
    return _from_sets((xs - mean[:, None]) * rstd[:, None], x.shape, per_channel)


@implements(norm.norm_stats)
def norm_stats(x, groups, per_channel, eps):
    xs = _to_sets(x.astype(np.float64), groups, per_channel)
    # Two passes: the mean first, then the mean squared deviation from it.
    mean = xs.mean(axis=1)
    var = np.square(xs - mean[:, None]).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    return mean, var, rstd


@implements(norm.norm_forward)
def norm_forward(x, mean, rstd, gamma, beta, groups, per_channel):
    y = _xhat(x, np.asarray(mean, np.float64), np.asarray(rstd, np.float64), groups, per_channel)
    if gamma is not None:
        y = y * gamma[None, :, None]
    if beta is not None:
        y = y + beta[None, :, None]
    return np.ascontiguousarray(y, dtype=x.dtype)


@implements(norm.norm_forward_train)
def norm_forward_train(x, gamma, beta, groups, per_channel, eps):
    mean, var, rstd = norm_stats(x, groups, per_channel, eps)
    y = norm_forward(x, mean, rstd, gamma, beta, groups, per_channel)
    return y, mean, var, rstd


@implements(norm.norm_backward)
def norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                  need_dx=True):
    rstd = np.asarray(rstd, np.float64)
    xhat = _xhat(x, np.asarray(mean, np.float64), rstd, groups, per_channel)
    dy = dy.astype(np.float64)
    dxhat = dy if gamma is None else dy * gamma[None, :, None]

    # dx of every set from its two means, of dxhat and of dxhat * xhat.
    dx = None
    if need_dx:
        dxhat_s = _to_sets(dxhat, groups, per_channel)
        if fixed_stats:
            dx_s = rstd[:, None] * dxhat_s
        else:
            xhat_s = _to_sets(xhat, groups, per_channel)
            mean_dxhat = dxhat_s.mean(axis=1, keepdims=True)
            mean_dxhat_xhat = (dxhat_s * xhat_s).mean(axis=1, keepdims=True)
            dx_s = rstd[:, None] * (dxhat_s - mean_dxhat - xhat_s * mean_dxhat_xhat)
        dx = np.ascontiguousarray(_from_sets(dx_s, x.shape, per_channel), dtype=x.dtype)

    if gamma is None:
        return dx, None, None
    # Per channel, over (n, l), whatever the set layout.
    dgamma = (dy * xhat).sum(axis=(0, 2)).astype(x.dtype)
    dbeta = dy.sum(axis=(0, 2)).astype(x.dtype)
    return dx, dgamma, dbeta
