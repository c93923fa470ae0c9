"""The NumPy reference of the optimizer steps (the math: tinynet/ops/optim/__init__.py).

Each line of the contract's equations is one NumPy expression on the whole
array, in place where the equation updates a state: readable, one pass over
memory (and a temporary) per line. The arithmetic runs in the parameter's
dtype: the hyperparameters are Python floats, so NumPy (NEP 50) keeps a
float32 array float32; the bias corrections and the step size are Python
floats (float64).
"""
import numpy as np

from .. import optim
from ..contract import implements

__all__ = ["sgd_step", "adam_step"]


@implements(optim.sgd_step)
def sgd_step(param, grad, buf, lr, momentum, weight_decay, nesterov):
    lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)
    g = grad
    if weight_decay != 0:
        g = grad + weight_decay * param
    if buf is not None:
        # buf = momentum * buf + g
        buf *= momentum
        buf += g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


@implements(optim.adam_step)
def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
    eps, weight_decay = float(eps), float(weight_decay)
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = grad + weight_decay * param
    # moment estimates
    m += (1 - beta1) * (g - m)
    v *= beta2
    v += (1 - beta2) * g * g
    # bias-corrected step
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    denom = np.sqrt(v) / bias_correction2 ** 0.5 + eps
    param += -step_size * m / denom
