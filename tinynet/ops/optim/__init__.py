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

The element updates ``sgd_update`` and ``adam_update`` are these equations
for one element, written once: the cpu kernels compile them with
``numba.njit`` (inlined into their loops), the cuda kernel with
``numba.cuda.jit(device=True)``. ``adam_scalars`` computes Adam's scalar
factors for both. An edit to an element update recompiles the kernels of
cpu.py and cuda.py that inline it on their next call: their cache keys hash
this file too (tinynet/backends/jit_cache.py).
"""
import functools
import math

from ..contract import check_float, op

__all__ = ["sgd_step", "adam_step", "sgd_update", "adam_update", "adam_scalars"]


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
    param, grad : np.ndarray
        The parameter (any shape, updated in place) and its gradient (same
        shape and dtype, read only).
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


def sgd_update(p, g, buf, e, lr, momentum, weight_decay, has_decay, has_buf, nesterov):
    """The SGD step of element ``e``, in place, in torch's order of operations.

    Parameters
    ----------
    p, g, buf : 1-d arrays
        The flat parameter (updated), its gradient (read) and momentum buffer
        (updated; never read unless ``has_buf``), one dtype.
    e : int
        The element.
    lr, momentum, weight_decay : scalars of p's dtype
    has_decay, has_buf, nesterov : bool
        Weight decay on (``weight_decay != 0``), momentum on
        (``momentum != 0``), and Nesterov's step.
    """
    d = g[e]
    if has_decay:
        d = d + weight_decay * p[e]
    if has_buf:
        b = momentum * buf[e] + d
        buf[e] = b
        d = d + momentum * b if nesterov else b
    p[e] = p[e] - lr * d


def adam_update(p, g, m, v, e, shrink, l2, one_minus_beta1, beta2, one_minus_beta2,
                neg_step_size, bias_correction2_sqrt, eps, has_l2):
    """The Adam / AdamW step of element ``e``, in place, in torch's order of operations.

    Parameters
    ----------
    p, g, m, v : 1-d arrays
        The flat parameter, its gradient (read only) and moments, one dtype.
    e : int
        The element.
    shrink, l2, one_minus_beta1, beta2, one_minus_beta2, neg_step_size,
    bias_correction2_sqrt, eps : scalars of p's dtype
        The factors of one step, ``adam_scalars``.
    has_l2 : bool
        ``l2 != 0``: add the L2 term.
    """
    d = g[e]
    q = p[e] * shrink
    if has_l2:
        d = d + l2 * q
    mm = m[e] + one_minus_beta1 * (d - m[e])
    vv = beta2 * v[e] + one_minus_beta2 * d * d
    m[e] = mm
    v[e] = vv
    p[e] = q + neg_step_size * mm / (math.sqrt(vv) / bias_correction2_sqrt + eps)


@functools.lru_cache(maxsize=8)
def adam_scalars(dtype, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """The scalar factors of one Adam step, the arguments of ``adam_update`` after ``e``.

    Computed in float64, as torch, and cast to ``dtype``; cached, so once per
    step and dtype rather than once per parameter. AdamW's decay is
    shrink = 1 - lr * weight_decay on the parameter, Adam's an L2 term on the
    gradient; the unused one is 1 or 0 (and p * 1 is exact).

    Parameters
    ----------
    dtype : np.dtype
        The parameter's dtype.
    step : int
    lr, beta1, beta2, eps, weight_decay : float
    decoupled : bool
        As ``adam_step`` (hashable values: ints, floats, bools).

    Returns
    -------
    tuple of 8 ``dtype`` scalars
        (shrink, l2, 1 - beta1, beta2, 1 - beta2, -lr / (1 - beta1^t),
        sqrt(1 - beta2^t), eps).
    """
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    shrink = 1 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    dt = dtype.type
    return (dt(shrink), dt(l2), dt(1 - beta1), dt(beta2), dt(1 - beta2),
            dt(-lr / bias_correction1), dt(bias_correction2_sqrt), dt(eps))
