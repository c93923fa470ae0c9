"""Optimizer steps: SGD (momentum, Nesterov) and Adam / AdamW, in place.

Each op reads ``grad`` (never writes it), updates ``param`` and its state
arrays in place and returns nothing. The formulas are torch.optim's, term for
term and in the same order, with dampening = 0, amsgrad off, maximize off.

SGD (torch.optim.SGD)

    g     = grad + weight_decay * param
    buf   = momentum * buf + g                   (when momentum != 0)
    g     = g + momentum * buf   if nesterov,   else   g = buf
    param = param - lr * g

    torch creates the buffer on the first step as a copy of g. Here the
    buffer starts at zeros, and momentum * 0 + g == g exactly, so the two
    agree bit for bit. (This holds because dampening is 0; with dampening d
    torch's first step would still be g, not (1 - d) * g.)

Adam (torch.optim.Adam, https://arxiv.org/abs/1412.6980) and
AdamW (torch.optim.AdamW, https://arxiv.org/abs/1711.05101), step t = 1, 2, ...

    Adam:  g = grad + weight_decay * param       (L2 penalty in the gradient)
    AdamW: g = grad; param = param * (1 - lr * weight_decay)   (decoupled)
    m     = m + (1 - beta1) * (g - m)            (= beta1 * m + (1 - beta1) * g)
    v     = beta2 * v + (1 - beta2) * g * g
    denom = sqrt(v) / sqrt(1 - beta2^t) + eps
    param = param - lr / (1 - beta1^t) * m / denom

The math runs in the parameter's dtype, as in torch: the hyperparameters are
made Python floats, so NumPy keeps a float32 array float32 (NEP 50), while the
scalar factors (bias corrections, step size) are computed in float64.
"""
import numpy as np
from ..contract import check_float, op

__all__ = ["sgd_step", "adam_step"]


def _check_state(name, arg, a, param):
    """``a`` (grad or a state array) has param's shape; a state array also its dtype."""
    if getattr(a, "shape", None) != param.shape:
        raise ValueError(f"{name}: {arg} must have param's shape {param.shape}, "
                         f"got {getattr(a, 'shape', type(a).__name__)}")
    if arg != "grad" and a.dtype != param.dtype:
        raise TypeError(f"{name}: {arg} must be a {param.dtype} array like param, "
                        f"got {a.dtype}")


def _check_sgd(name, param, grad, buf, lr, momentum, weight_decay, nesterov):
    check_float(name, "param", param)
    _check_state(name, "grad", grad, param)
    if buf is not None:
        _check_state(name, "buf", buf, param)


def _check_adam(name, param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay,
                decoupled):
    check_float(name, "param", param)
    _check_state(name, "grad", grad, param)
    _check_state(name, "m", m, param)
    _check_state(name, "v", v, param)


@op(check=_check_sgd)
def sgd_step(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step, in place, as torch.optim.SGD with dampening = 0.

    Parameters
    ----------
    param : np.ndarray
        The parameter, any shape; updated in place.
    grad : np.ndarray
        Its gradient, same shape and dtype; not modified.
    buf : np.ndarray or None
        The momentum buffer, same shape and dtype, updated in place; None
        when momentum == 0. Start it at zeros.
    lr, momentum, weight_decay : float
        Learning rate, momentum factor and L2 penalty.
    nesterov : bool
        Use Nesterov momentum: step along g + momentum * buf.
    """


@op(check=_check_adam)
def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or AdamW) step, in place, as torch.optim.Adam / AdamW.

    Parameters
    ----------
    param : np.ndarray
        The parameter, any shape; updated in place.
    grad : np.ndarray
        Its gradient, same shape and dtype; not modified.
    m, v : np.ndarray
        First and second moment estimates (torch's exp_avg, exp_avg_sq),
        same shape and dtype, updated in place. Start them at zeros.
    step : int
        The number of this step, counting from 1 (for the bias corrections).
    lr, beta1, beta2, eps, weight_decay : float
        Learning rate, moment decay rates, denominator guard and weight decay.
    decoupled : bool
        False: Adam, weight decay is an L2 term added to the gradient.
        True: AdamW, the parameter is shrunk by (1 - lr * weight_decay) first.
    """
