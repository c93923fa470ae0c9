"""Weight normalization of a weight tensor, one norm per output unit.

Salimans and Kingma 2016, https://arxiv.org/abs/1602.07868. The weight of a
Dense (O, I) or Conv2D (O, C, KH, KW) layer is reparametrized by a direction
v of the weight's shape and a length g of shape (O, 1) or (O, 1, 1, 1), as
torch.nn.utils.parametrizations.weight_norm with dim=0:

    forward:   n_o = ||v_o|| = sqrt(sum over the row o of v^2)
               w_o = g_o * v_o / n_o
    backward:  dg_o = sum(dw_o * v_o) / n_o
               dv_o = (g_o / n_o) * (dw_o - (dg_o / n_o) * v_o)

Here v_o is the row of v that belongs to output unit o (all its input
weights, flattened) and dw is the gradient of the loss with respect to w.
The gradient dv is dw with its component along v_o removed, scaled by
g / ||v||: a step on v never changes ||v|| to first order. docs/backprop.md
derives both lines.

Every backend views v as (O, K), K the fan-in (I, or C * KH * KW), and sums
each row in float64; ``vnorm`` stays float64 between the two passes.
"""
import numpy as np

from ..contract import op

__all__ = ["weightnorm_forward", "weightnorm_backward"]


def _check_vg(fname, v, g):
    """Raise unless v is (O, ...) with 2 or 4 dims and g is (O, 1, ...) of v's dtype."""
    if v.ndim not in (2, 4):
        raise ValueError(f"{fname}: v must have shape (O, I) or (O, C, KH, KW), "
                         f"got shape {v.shape}")
    expected = (v.shape[0],) + (1,) * (v.ndim - 1)
    if tuple(g.shape) != expected:
        raise ValueError(f"{fname}: g must have shape {expected} for v of shape {v.shape}, "
                         f"got shape {g.shape}")
    if v.dtype not in (np.float32, np.float64) or g.dtype != v.dtype:
        raise TypeError(f"{fname}: v and g must be float32 or float64 of one dtype, "
                        f"got {v.dtype} and {g.dtype}")


def _check_backward(fname, v, g, vnorm, dw):
    _check_vg(fname, v, g)
    if tuple(vnorm.shape) != (v.shape[0],):
        raise ValueError(f"{fname}: vnorm must have shape ({v.shape[0]},), "
                         f"got shape {vnorm.shape}")
    if tuple(dw.shape) != tuple(v.shape) or dw.dtype != v.dtype:
        raise ValueError(f"{fname}: dw must have v's shape {v.shape} and dtype "
                         f"{v.dtype}, got shape {dw.shape} and dtype {dw.dtype}")


@op(check=_check_vg)
def weightnorm_forward(v, g):
    """w = g * v / ||v||, the norm taken over each output unit's row of v.

    Parameters
    ----------
    v : np.ndarray
        Direction, (O, I) or (O, C, KH, KW), float32 or float64.
    g : np.ndarray
        Length, (O, 1) or (O, 1, 1, 1), v's dtype.

    Returns
    -------
    w : np.ndarray
        The weight, v's shape and dtype.
    vnorm : np.ndarray
        ||v_o||, float64 (O,), for the backward pass.
    """


@op(check=_check_backward)
def weightnorm_backward(v, g, vnorm, dw):
    """Gradients of w = g * v / ||v|| with respect to v and g.

    Parameters
    ----------
    v : np.ndarray
        Direction, (O, I) or (O, C, KH, KW).
    g : np.ndarray
        Length, (O, 1) or (O, 1, 1, 1).
    vnorm : np.ndarray
        ||v_o|| from ``weightnorm_forward``, (O,).
    dw : np.ndarray
        Gradient with respect to w, v's shape.

    Returns
    -------
    dv : np.ndarray
        v's shape and dtype: (g / n) * (dw - (dg / n) * v).
    dg : np.ndarray
        g's shape, v's dtype: sum(dw * v) / n per output unit.
    """
