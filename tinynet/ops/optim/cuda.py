"""Optimizer steps as fused in-place numba.cuda kernels (the math: tinynet/ops/optim/__init__.py).

Each step is one kernel over the flat parameter, one thread per element
(grid-stride), that reads grad and updates param and its state in
registers; each thread touches only its own elements. Its body is the
contract's element update (``sgd_update``, ``adam_update``) compiled as a
device function, the same code the cpu kernels inline. The math runs in the
parameter's dtype, as torch: the scalar factors are computed on the host in
float64 (``adam_scalars``) and passed in that dtype.
"""
from numba import cuda

from ..contract import implements
from .. import optim
from ...backends import cuda_device as dev

__all__ = ["sgd_step", "adam_step"]

if dev.SIMULATOR:
    # The simulator runs a kernel as Python, and calls a device function through
    # its module swap on every element (an Adam step on 20,000 elements took 18 s
    # that way); it runs the contract's functions as plain Python instead.
    _sgd_element, _adam_element = optim.sgd_update, optim.adam_update
else:
    _sgd_element = cuda.jit(device=True, inline=True)(optim.sgd_update)
    _adam_element = cuda.jit(device=True, inline=True)(optim.adam_update)


@dev.kernel("void({f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, boolean, boolean, boolean)")
def _sgd(p, g, buf, lr, momentum, weight_decay, has_decay, has_buf, nesterov):
    # Parallel axis: the flat element; each thread updates only its own p[e] and buf[e].
    for e in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        _sgd_element(p, g, buf, e, lr, momentum, weight_decay, has_decay, has_buf, nesterov)


@dev.kernel("void({f}[::1], {f}[::1], {f}[::1], {f}[::1], {f}, {f}, {f}, {f}, {f}, {f}, {f}, "
            "{f}, boolean)")
def _adam(p, g, m, v, shrink, l2, one_minus_beta1, beta2, one_minus_beta2, neg_step_size,
          bias_correction2_sqrt, eps, has_l2):
    # Parallel axis: the flat element; each thread updates only its own p[e], m[e], v[e].
    for e in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        _adam_element(p, g, m, v, e, shrink, l2, one_minus_beta1, beta2, one_minus_beta2,
                      neg_step_size, bias_correction2_sqrt, eps, has_l2)


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
    scalars = optim.adam_scalars(param.dtype, int(step), float(lr), float(beta1), float(beta2),
                                 float(eps), float(weight_decay), bool(decoupled))
    _adam[dev.grid_1d(p.size)](p, g, m, v, *scalars, bool(scalars[1] != 0))
