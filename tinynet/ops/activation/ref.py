"""The activation ops in NumPy: the reference backend and the tests' oracle.

The ops and their math: the contract, tinynet/ops/activation/__init__.py.
Each op is the contract's equation as whole-array NumPy expressions in the
input's dtype. Sigmoid takes z = exp(-|x|), so exp never overflows; GELU
computes in float64 (erf from ``math.erf`` element by element, as NumPy has
no erf) and casts back; Softmax subtracts the maximum along the axis before
exp.
"""
import math

import numpy as np

from .. import activation
from ..contract import implements

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "gelu_forward", "gelu_backward", "softmax_forward", "softmax_backward"]


# math.erf applied elementwise; it returns an object array, cast to float64.
_erf = np.frompyfunc(math.erf, 1, 1)


def _phi_cdf(x64):
    """Standard normal CDF Phi(x) = 0.5 * (1 + erf(x / sqrt(2))) of a float64 array."""
    return 0.5 * (1.0 + _erf(x64 / math.sqrt(2.0)).astype(np.float64))


@implements(activation.relu_forward)
def relu_forward(x):
    return np.maximum(x, 0)


@implements(activation.relu_backward)
def relu_backward(x, dy):
    return np.where(x <= 0, 0, dy)


@implements(activation.leaky_relu_forward)
def leaky_relu_forward(x, slope):
    return np.where(x > 0, x, x * slope)


@implements(activation.leaky_relu_backward)
def leaky_relu_backward(x, dy, slope):
    return np.where(x > 0, dy, dy * slope)


@implements(activation.sigmoid_forward)
def sigmoid_forward(x):
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


@implements(activation.sigmoid_backward)
def sigmoid_backward(y, dy):
    return dy * y * (1 - y)


@implements(activation.tanh_forward)
def tanh_forward(x):
    return np.tanh(x)


@implements(activation.tanh_backward)
def tanh_backward(y, dy):
    return dy * (1 - y * y)


@implements(activation.gelu_forward)
def gelu_forward(x):
    x64 = x.astype(np.float64)
    y = x64 * _phi_cdf(x64)
    return y.astype(x.dtype)


@implements(activation.gelu_backward)
def gelu_backward(x, dy):
    x64 = x.astype(np.float64)
    # x^2 may overflow to inf for huge x; exp(-inf) = 0 is then the right pdf.
    with np.errstate(over="ignore"):
        pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    dydx = _phi_cdf(x64) + x64 * pdf
    return (dy * dydx).astype(dy.dtype)


@implements(activation.softmax_forward)
def softmax_forward(x, axis):
    # initial=-inf: an empty axis gives an empty y, as torch does
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


@implements(activation.softmax_backward)
def softmax_backward(y, dy, axis):
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))
