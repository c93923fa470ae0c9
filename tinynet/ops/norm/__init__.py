"""Normalization (BatchNorm, LayerNorm, InstanceNorm, GroupNorm) as one op family: the contract.

Each normalization splits x into sets and normalizes every set by its own
mean and reciprocal standard deviation ("rstd"). x is viewed as (N, C, L),
L being the flattened spatial size, and the layout (``groups``,
``per_channel``) picks the sets (``set_shape``):

- ``per_channel=True`` (BatchNorm): one set per channel c, holding
  x[:, c, :]. S = C sets of M = N*L members each.
- ``per_channel=False`` (LayerNorm, InstanceNorm, GroupNorm): the C channels
  form G groups of C/G consecutive channels; one set per (n, g), holding
  x[n, c, :] for the channels c of group g. S = N*G sets of M = (C/G)*L
  members each, in the order s = n*G + g. InstanceNorm is G = C; LayerNorm
  is G = 1 on an (N', M, 1) view.

Forward, over the M members x of one set:

    mean = sum(x) / M
    var  = sum((x - mean)^2) / M        (biased)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = gamma[c] * xhat + beta[c]    (gamma, beta: one value per channel c)

Backward, with mean(.) taken over the set (docs/backprop.md derives it):

    dxhat     = dy * gamma[c]
    dx        = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dgamma[c] = sum over (n, l) of dy * xhat
    dbeta[c]  = sum over (n, l) of dy

The two mean terms are the gradient that flows through the set's mean and
variance. When mean and rstd are constants (BatchNorm in eval mode, which
uses the running statistics) they vanish: dx = rstd * dxhat.

Every backend accumulates the statistics and the sums in float64 and gets
the variance from deviations (two passes, or shifted sums merged by Chan's
formula), never as E[x^2] - E[x]^2: for float32 data with mean 100 and std
0.1 that difference cancels almost every digit.

Papers:
- BatchNorm    https://arxiv.org/abs/1502.03167
- LayerNorm    https://arxiv.org/abs/1607.06450
- InstanceNorm https://arxiv.org/abs/1607.08022
- GroupNorm    https://arxiv.org/abs/1803.08494
"""
import numpy as np

from ..contract import check_float, check_same_shape, check_shape, op

__all__ = ["set_shape", "check_layout", "norm_stats", "norm_forward", "norm_forward_train",
           "norm_backward"]


def set_shape(shape, groups, per_channel):
    """(S, M): the number of sets of an (N, C, L) array and the members of each.

    Parameters
    ----------
    shape : tuple of int
        (N, C, L).
    groups, per_channel
        The set layout, as in ``norm_stats``.

    Returns
    -------
    (S, M) : tuple of int
        (C, N*L) per channel, (N*G, (C/G)*L) in groups.
    """
    N, C, L = shape
    if per_channel:
        return C, N * L
    return N * groups, (C // groups) * L


def check_layout(name, x, groups, per_channel):
    """Raise unless x is a float (N, C, L) array and, for grouped sets, G divides C.

    Returns S, the number of sets."""
    if x.ndim != 3:
        raise ValueError(f"{name}: x must have shape (N, C, L), got shape {x.shape}")
    C = x.shape[1]
    if not per_channel and (not isinstance(groups, (int, np.integer)) or groups < 1
                            or C % groups != 0):
        raise ValueError(f"{name}: groups must be a positive divisor of C={C}, got {groups}")
    check_float(name, "x", x)
    return set_shape(x.shape, groups, per_channel)[0]


def _check_stats(name, x, groups, per_channel, eps):
    check_layout(name, x, groups, per_channel)


def _check_forward(name, x, mean, rstd, gamma, beta, groups, per_channel):
    S = check_layout(name, x, groups, per_channel)
    C = x.shape[1]
    check_shape(name, "mean", mean, (S,))
    check_shape(name, "rstd", rstd, (S,))
    check_shape(name, "gamma", gamma, (C,))
    check_shape(name, "beta", beta, (C,))


def _check_forward_train(name, x, gamma, beta, groups, per_channel, eps):
    check_layout(name, x, groups, per_channel)
    check_shape(name, "gamma", gamma, (x.shape[1],))
    check_shape(name, "beta", beta, (x.shape[1],))


def _check_backward(name, x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                    need_dx=True):
    S = check_layout(name, x, groups, per_channel)
    check_same_shape(name, "dy", dy, x, what="the shape of x")
    check_shape(name, "mean", mean, (S,))
    check_shape(name, "rstd", rstd, (S,))
    check_shape(name, "gamma", gamma, (x.shape[1],))


@op(check=_check_stats)
def norm_stats(x, groups, per_channel, eps):
    """Mean, biased variance and rstd of every set, accumulated in float64.

    Parameters
    ----------
    x : np.ndarray
        Input viewed as (N, C, L).
    groups : int
        G, the number of channel groups; G must divide C. Ignored when
        ``per_channel`` is True.
    per_channel : bool
        True: one set per channel (S = C). False: one set per (n, g) (S = N*G).
    eps : float
        Added to the variance inside the square root.

    Returns
    -------
    mean, var, rstd : np.ndarray
        float64, shape (S,). var is the biased variance (divided by the set
        size) and rstd = 1 / sqrt(var + eps).
    """


@op(check=_check_forward)
def norm_forward(x, mean, rstd, gamma, beta, groups, per_channel):
    """y = (x - mean) * rstd * gamma + beta, with mean and rstd per set.

    Parameters
    ----------
    x : np.ndarray
        Input (N, C, L).
    mean, rstd : np.ndarray
        Per-set statistics, shape (S,), e.g. from ``norm_stats``.
    gamma, beta : np.ndarray or None
        Per-channel scale and shift, shape (C,); None means no affine step.
    groups, per_channel
        The set layout, as in ``norm_stats``.

    Returns
    -------
    y : np.ndarray
        (N, C, L), the dtype of x.
    """


@op(check=_check_forward_train)
def norm_forward_train(x, gamma, beta, groups, per_channel, eps):
    """The training forward: the statistics of x and y in one call.

    ``norm_stats`` followed by ``norm_forward``; a backend may fuse the two.

    Parameters
    ----------
    x : np.ndarray
        Input (N, C, L).
    gamma, beta : np.ndarray or None
        Per-channel scale and shift, shape (C,); None means no affine step.
    groups, per_channel
        The set layout, as in ``norm_stats``.
    eps : float
        Added to the variance inside the square root.

    Returns
    -------
    y : np.ndarray
        (N, C, L), the dtype of x.
    mean, var, rstd : np.ndarray
        float64, shape (S,), as from ``norm_stats``.
    """


@op(check=_check_backward)
def norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats=False,
                  need_dx=True):
    """Gradients of the normalization with respect to x, gamma and beta.

    Parameters
    ----------
    x, dy : np.ndarray
        Input and upstream gradient, both (N, C, L).
    mean, rstd : np.ndarray
        The per-set statistics the forward pass used, shape (S,).
    gamma : np.ndarray or None
        Per-channel scale, shape (C,); None when the layer has no affine step.
    groups, per_channel
        The set layout, as in ``norm_stats``.
    fixed_stats : bool
        True when mean and rstd did not come from x (BatchNorm in eval mode):
        then dx = rstd * dxhat.
    need_dx : bool
        False skips dx (returned as None), e.g. for a first layer.

    Returns
    -------
    dx : np.ndarray or None
        (N, C, L), the dtype of x; None when ``need_dx`` is False.
    dgamma, dbeta : np.ndarray or None
        (C,), the dtype of x; both None when gamma is None.
    """
