"""Optimizer steps as fused in-place Numba kernels (the math: tinynet/ops/optim/__init__.py).

A kernel makes one pass over memory: Adam reads param, grad, m and v once and
writes param, m and v once, where the NumPy reference makes a pass (and a
temporary) per line. Its body is the contract's element update
(``sgd_update``, ``adam_update``), compiled with ``inline="always"`` into a
loop over the flat arrays. The arithmetic runs in the parameter's dtype with
the scalar factors computed in float64 and cast to that dtype
(``adam_scalars``), as torch's CPU kernels and the ref backend do, so a
float32 parameter stays float32.

The kernels compile with ``error_model="numpy"`` (njit_kernel's default): a
float division by zero gives inf or NaN (IEEE, as in torch) instead of a
check for ZeroDivisionError, and without that check LLVM vectorizes Adam's
loop (6x faster). Arrays under ``SERIAL_BELOW`` elements run the serial
kernel, where waking the thread pool costs more than the work; larger ones
run the parallel one. Promoted from the lab (kernels/optim.py).
"""
import numba
import numpy as np

from .. import optim
from ..contract import implements
from ...backends.cpu_jit import njit_kernel

__all__ = ["sgd_step", "adam_step"]

SERIAL_BELOW = 65536
"""Arrays with fewer elements than this run the serial kernel, larger ones the parallel one."""

_sgd_element = njit_kernel(inline="always")(optim.sgd_update)
_adam_element = njit_kernel(inline="always")(optim.adam_update)


@njit_kernel()
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    for e in range(p.size):
        _sgd_element(p, g, buf, e, lr, momentum, weight_decay, weight_decay != 0, has_buf,
                     nesterov)


@njit_kernel(parallel=True)
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e] and buf[e].
    for e in numba.prange(p.size):
        _sgd_element(p, g, buf, e, lr, momentum, weight_decay, weight_decay != 0, has_buf,
                     nesterov)


@njit_kernel()
def _adam_serial(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                 neg_step_size, bias_correction2_sqrt, eps):
    for e in range(p.size):
        _adam_element(p, g, m, v, e, shrink, weight_decay, one_minus_beta1, beta2,
                      one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, weight_decay != 0)


@njit_kernel(parallel=True)
def _adam_parallel(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                   neg_step_size, bias_correction2_sqrt, eps):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e], m[e] and v[e].
    for e in numba.prange(p.size):
        _adam_element(p, g, m, v, e, shrink, weight_decay, one_minus_beta1, beta2,
                      one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, weight_decay != 0)


def _flat(name, arg, a):
    """A flat view of the array ``a``, updated in place through it.

    TypeError unless ``a`` is a numpy array; ValueError unless it is
    C-contiguous (else the view would be a copy).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: {arg} must be a numpy array, got {type(a).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: {arg} must be C-contiguous of shape {a.shape}")
    return a.reshape(-1)


def _flat_grad(grad, param):
    """grad as a flat array of param's dtype (a copy only when it must be)."""
    if grad.dtype != param.dtype or not grad.flags.c_contiguous:
        grad = np.ascontiguousarray(grad, dtype=param.dtype)
    return grad.reshape(-1)


@implements(optim.sgd_step)
def sgd_step(param, grad, buf, lr, momentum, weight_decay, nesterov):
    p = _flat("sgd_step", "param", param)
    g = _flat_grad(grad, param)
    has_buf = buf is not None
    buf = _flat("sgd_step", "buf", buf) if has_buf else np.empty(0, param.dtype)
    dt = param.dtype.type
    kernel = _sgd_serial if p.size < SERIAL_BELOW else _sgd_parallel
    kernel(p, g, buf, dt(lr), dt(momentum), dt(weight_decay), has_buf, bool(nesterov))


@implements(optim.adam_step)
def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    p = _flat("adam_step", "param", param)
    g = _flat_grad(grad, param)
    m, v = _flat("adam_step", "m", m), _flat("adam_step", "v", v)
    scalars = optim.adam_scalars(param.dtype, int(step), float(lr), float(beta1), float(beta2),
                                 float(eps), float(weight_decay), bool(decoupled))
    kernel = _adam_serial if p.size < SERIAL_BELOW else _adam_parallel
    kernel(p, g, m, v, *scalars)
