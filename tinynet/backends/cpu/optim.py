"""Optimizer steps: SGD (momentum, Nesterov) and Adam / AdamW, as fused in-place
Numba kernels.

Each op reads ``grad`` (never writes it), updates ``param`` and its state
arrays in place and returns nothing. The formulas are torch.optim's (and the
ref backend's), with dampening = 0, amsgrad off, maximize off:

SGD (torch.optim.SGD)
    g     = grad + weight_decay * param
    buf   = momentum * buf + g                   (when momentum != 0)
    g     = g + momentum * buf   if nesterov,   else   g = buf
    param = param - lr * g

Adam (torch.optim.Adam, https://arxiv.org/abs/1412.6980) and
AdamW (torch.optim.AdamW, https://arxiv.org/abs/1711.05101), step t = 1, 2, ...
    Adam:  g = grad + weight_decay * param       (L2 penalty in the gradient)
    AdamW: g = grad; param = param * (1 - lr * weight_decay)   (decoupled)
    m     = m + (1 - beta1) * (g - m)
    v     = beta2 * v + (1 - beta2) * g * g
    param = param - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

A kernel makes one pass over memory: Adam reads param, grad, m and v once and
writes param, m and v once; the NumPy reference makes a pass (and a
temporary) per line. The arithmetic runs in the parameter's dtype with the
scalar factors (bias corrections, step size, 1 - beta) computed in float64
and cast to that dtype, as torch's CPU kernels and the ref backend do, so a
float32 parameter stays float32.

The kernels compile with ``error_model="numpy"``: a float division by zero
gives inf or NaN (IEEE, as in torch) instead of a check for
ZeroDivisionError, and without that check LLVM vectorizes Adam's loop (6x
faster). Arrays under 65536 elements run the serial kernel, where waking the
thread pool costs more than the work; larger ones run the parallel one.

Promoted from kernels/optim.py variant 4 (``python -m kernels.optim --bench``):
variant 2 (serial, vectorized) below 65536 elements, variant 3 (parallel)
above.
"""
import functools

import numba
import numpy as np

from .jit import njit_kernel

__all__ = ["sgd_step", "adam_step"]

SERIAL_BELOW = 65536


@njit_kernel(inline="always")
def _sgd_element(p, g, buf, e, lr, momentum, weight_decay, has_buf, nesterov):
    """SGD update of element e (torch's order of operations)."""
    d = g[e]
    if weight_decay != 0:
        d = d + weight_decay * p[e]
    if has_buf:
        b = momentum * buf[e] + d
        buf[e] = b
        d = d + momentum * b if nesterov else b
    p[e] = p[e] - lr * d


@njit_kernel()
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    for e in range(p.size):
        _sgd_element(p, g, buf, e, lr, momentum, weight_decay, has_buf, nesterov)


@njit_kernel(parallel=True)
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e] and buf[e].
    for e in numba.prange(p.size):
        _sgd_element(p, g, buf, e, lr, momentum, weight_decay, has_buf, nesterov)


@njit_kernel(inline="always")
def _adam_element(p, g, m, v, e, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                  neg_step_size, bias_correction2_sqrt, eps):
    """Adam / AdamW update of element e (shrink = 1 - lr * wd for AdamW, else 1)."""
    d = g[e]
    q = p[e] * shrink
    if weight_decay != 0:
        d = d + weight_decay * q
    mm = m[e] + one_minus_beta1 * (d - m[e])
    vv = beta2 * v[e] + one_minus_beta2 * d * d
    m[e] = mm
    v[e] = vv
    p[e] = q + neg_step_size * mm / (np.sqrt(vv) / bias_correction2_sqrt + eps)


@njit_kernel()
def _adam_serial(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                 neg_step_size, bias_correction2_sqrt, eps):
    for e in range(p.size):
        _adam_element(p, g, m, v, e, shrink, weight_decay, one_minus_beta1, beta2,
                      one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps)


@njit_kernel(parallel=True)
def _adam_parallel(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                   neg_step_size, bias_correction2_sqrt, eps):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e], m[e] and v[e].
    for e in numba.prange(p.size):
        _adam_element(p, g, m, v, e, shrink, weight_decay, one_minus_beta1, beta2,
                      one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps)


def _flat(name, arg, a, param):
    """A flat view of ``a`` (a state array updated in place through it).

    TypeError unless ``a`` is an array of param's dtype; ValueError unless it
    has param's shape and is C-contiguous (else the view would be a copy).
    """
    if not isinstance(a, np.ndarray) or a.dtype != param.dtype:
        raise TypeError(f"{name}: {arg} must be a {param.dtype} array like param, "
                        f"got {getattr(a, 'dtype', type(a).__name__)}")
    if a.shape != param.shape or not a.flags.c_contiguous:
        raise ValueError(f"{name}: {arg} must be C-contiguous of shape {param.shape}, "
                         f"got shape {a.shape}")
    return a.reshape(-1)


def _flat_grad(name, grad, param):
    """grad as a flat array of param's dtype (a copy only when it must be)."""
    if getattr(grad, "shape", None) != param.shape:
        raise ValueError(f"{name}: grad must have param's shape {param.shape}, "
                         f"got {getattr(grad, 'shape', type(grad).__name__)}")
    if grad.dtype != param.dtype or not grad.flags.c_contiguous:
        grad = np.ascontiguousarray(grad, dtype=param.dtype)
    return grad.reshape(-1)


def _check_param(name, param):
    if not isinstance(param, np.ndarray) or param.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: param must be a float32 or float64 array, "
                        f"got {getattr(param, 'dtype', type(param).__name__)}")


@functools.lru_cache(maxsize=8)
def _adam_scalars(dtype, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """The scalar factors of one Adam step in ``dtype``: computed in float64,
    as torch, once per step and dtype rather than once per parameter.

    AdamW's decay is shrink = 1 - lr*wd on the parameter, Adam's an L2 term
    on the gradient; the unused one is 1 or 0 (and p * 1 is exact).
    """
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    shrink = 1 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    dt = dtype.type
    return (dt(shrink), dt(l2), dt(1 - beta1), dt(beta2), dt(1 - beta2),
            dt(-lr / bias_correction1), dt(bias_correction2_sqrt), dt(eps))


def sgd_step(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step, in place, as torch.optim.SGD with dampening = 0.

    Parameters
    ----------
    param : np.ndarray
        The parameter, any shape, C-contiguous float32 or float64; updated
        in place.
    grad : np.ndarray
        Its gradient, same shape; not modified.
    buf : np.ndarray or None
        The momentum buffer, same shape and dtype as param, updated in place;
        None when momentum == 0. Start it at zeros.
    lr, momentum, weight_decay : float
        Learning rate, momentum factor and L2 penalty.
    nesterov : bool
        Use Nesterov momentum: step along g + momentum * buf.
    """
    _check_param("sgd_step", param)
    g = _flat_grad("sgd_step", grad, param)
    p = _flat("sgd_step", "param", param, param)
    has_buf = buf is not None
    buf = _flat("sgd_step", "buf", buf, param) if has_buf else np.empty(0, param.dtype)
    dt = param.dtype.type
    kernel = _sgd_serial if p.size < SERIAL_BELOW else _sgd_parallel
    kernel(p, g, buf, dt(lr), dt(momentum), dt(weight_decay), has_buf, bool(nesterov))


def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or AdamW) step, in place, as torch.optim.Adam / AdamW.

    Parameters
    ----------
    param : np.ndarray
        The parameter, any shape, C-contiguous float32 or float64; updated
        in place.
    grad : np.ndarray
        Its gradient, same shape; not modified.
    m, v : np.ndarray
        First and second moment estimates (torch's exp_avg, exp_avg_sq),
        same shape and dtype as param, updated in place. Start them at zeros.
    step : int
        The number of this step, counting from 1 (for the bias corrections).
    lr, beta1, beta2, eps, weight_decay : float
        Learning rate, moment decay rates, denominator guard and weight decay.
    decoupled : bool
        False: Adam, weight decay is an L2 term added to the gradient.
        True: AdamW, the parameter is shrunk by (1 - lr * weight_decay) first.
    """
    _check_param("adam_step", param)
    g = _flat_grad("adam_step", grad, param)
    p = _flat("adam_step", "param", param, param)
    m, v = _flat("adam_step", "m", m, param), _flat("adam_step", "v", v, param)
    scalars = _adam_scalars(param.dtype, int(step), float(lr), float(beta1), float(beta2),
                            float(eps), float(weight_decay), bool(decoupled))
    kernel = _adam_serial if p.size < SERIAL_BELOW else _adam_parallel
    kernel(p, g, m, v, *scalars)
