"""Optimizer steps on the GPU: fused SGD (momentum, Nesterov) and Adam / AdamW, in place.

The ops of tinynet/ops/optim/__init__.py, term for term (torch.optim with
dampening = 0, amsgrad off):

SGD:    g = grad + weight_decay * param;  buf = momentum * buf + g  (momentum != 0)
        g = g + momentum * buf if nesterov else buf;  param = param - lr * g
Adam:   g = grad + weight_decay * param                  (AdamW: g = grad and
                                                          param *= 1 - lr * weight_decay)
        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
        param = param - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        (https://arxiv.org/abs/1412.6980, https://arxiv.org/abs/1711.05101)

Each step is one kernel over the flat parameter that reads grad and updates
param and its state in registers, one thread per element (grid-stride), so
each thread touches only its own elements. The math runs in the parameter's
dtype, as torch: the scalar factors are computed on the host in float64 and
passed in that dtype.
"""
import math

from numba import cuda

from ..contract import implements
from .. import optim
from ...backends import cuda_device as dev

__all__ = ["sgd_step", "adam_step"]


@dev.kernel("void({f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, boolean, boolean, boolean)")
def _sgd(p, g, buf, lr, momentum, weight_decay, has_decay, has_buf, nesterov):
    # Parallel axis: the flat element; each thread updates only its own p[e] and buf[e].
    for e in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[e]
        if has_decay:
            d = d + weight_decay * p[e]
        if has_buf:
            b = momentum * buf[e] + d
            buf[e] = b
            d = d + momentum * b if nesterov else b
        p[e] = p[e] - lr * d


@dev.kernel("void({f}[::1], {f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, {f}, {f}, {f}, {f}, "
            "{f}, boolean)")
def _adam(p, g, m, v, shrink, l2, one_minus_beta1, beta2, one_minus_beta2, neg_step_size,
          bias_correction2_sqrt, eps, has_l2):
    # Parallel axis: the flat element; each thread updates only its own p[e], m[e], v[e].
    for e in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pe = p[e] * shrink
        d = g[e]
        if has_l2:
            d = d + l2 * pe
        me = m[e] + one_minus_beta1 * (d - m[e])
        ve = beta2 * v[e] + one_minus_beta2 * d * d
        m[e] = me
        v[e] = ve
        denom = math.sqrt(ve) / bias_correction2_sqrt + eps
        p[e] = pe + neg_step_size * me / denom


def _flat(opname, name, a, param):
    """``a`` as a flat view, after checking it is a device array like ``param``."""
    dev.require_device(opname, **{name: a})
    if a.shape != param.shape or a.dtype != param.dtype:
        raise ValueError(f"{opname}: {name} must have param's shape {param.shape} and dtype "
                         f"{param.dtype}, got {a.shape} {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{opname}: {name} must be C-contiguous (it is updated in place)")
    return a.reshape(-1)


@implements(optim.sgd_step)
def sgd_step(param, grad, buf, lr, momentum, weight_decay, nesterov):
    p = _flat("sgd_step", "param", param, param)
    g = _flat("sgd_step", "grad", grad, param)
    has_buf = buf is not None
    # Without momentum the kernel never reads buf; grad stands in for it.
    b = _flat("sgd_step", "buf", buf, param) if has_buf else g
    dt = param.dtype.type
    _sgd[dev.grid_1d(p.size)](p, g, b, dt(lr), dt(momentum), dt(weight_decay),
                              float(weight_decay) != 0.0, has_buf, bool(nesterov))


@implements(optim.adam_step)
def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    p = _flat("adam_step", "param", param, param)
    g = _flat("adam_step", "grad", grad, param)
    m, v = _flat("adam_step", "m", m, param), _flat("adam_step", "v", v, param)
    lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
    weight_decay = float(weight_decay)
    bias_correction1 = 1 - beta1 ** int(step)
    bias_correction2_sqrt = (1 - beta2 ** int(step)) ** 0.5
    decay = weight_decay != 0.0
    shrink = 1 - lr * weight_decay if decoupled and decay else 1.0
    dt = param.dtype.type
    _adam[dev.grid_1d(p.size)](p, g, m, v, dt(shrink), dt(weight_decay), dt(1 - beta1), dt(beta2),
                               dt(1 - beta2), dt(-lr / bias_correction1),
                               dt(bias_correction2_sqrt), dt(float(eps)),
                               decay and not decoupled)
