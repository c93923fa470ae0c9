"""The activation ops on the cuda backend: numba.cuda kernels and their launchers.

The ops and their math: the contract, tinynet/ops/activation/__init__.py.

Each elementwise op is one grid-stride kernel over the flat array, built by
``_unary`` / ``_binary`` from a scalar device function, so the loop is
written once; each thread writes only its own elements. GELU computes in
float64 (libm erf and exp) and casts back. NaN propagates as in the ref
(relu(NaN) is NaN).

Softmax views x as (outer, K, inner), K the softmax axis. One thread per
(outer, inner) row walks its K members with stride inner (neighbouring
threads read neighbouring addresses when inner > 1), sums in float64 and
writes only its own row.
"""
import math

import numpy as np
from numba import cuda, float64

from ..contract import implements
from .. import activation
from ...backends import cuda_device as dev

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "gelu_forward", "gelu_backward", "softmax_forward", "softmax_backward"]

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _unary(name, fn):
    """A grid-stride kernel y[i] = fn(x[i], a) over flat arrays, a a scalar of x's dtype."""
    def kernel(x, a, y):
        # Parallel axis: the flat index; each thread writes only its own y[i].
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            y[i] = fn(x[i], a)
    kernel.__name__ = kernel.__qualname__ = name
    return dev.kernel("void({f}[::1], {f}, {f}[::1])")(kernel)


def _binary(name, fn):
    """A grid-stride kernel dx[i] = fn(u[i], dy[i], a) over flat arrays."""
    def kernel(u, dy, a, dx):
        # Parallel axis: the flat index; each thread writes only its own dx[i].
        for i in range(cuda.grid(1), u.size, cuda.gridsize(1)):
            dx[i] = fn(u[i], dy[i], a)
    kernel.__name__ = kernel.__qualname__ = name
    return dev.kernel("void({f}[::1], {f}[::1], {f}, {f}[::1])")(kernel)


@cuda.jit(device=True, inline=True)
def _relu(x, zero):
    return x if x > 0 or x != x else zero


@cuda.jit(device=True, inline=True)
def _relu_grad(x, dy, zero):
    return zero if x <= 0 else dy


@cuda.jit(device=True, inline=True)
def _leaky(x, slope):
    # A NaN x is returned as it is (its bits), as the ref's x * slope gives it on the
    # host; the GPU's multiply would give the canonical NaN instead.
    return x * slope if x <= 0 else x


@cuda.jit(device=True, inline=True)
def _leaky_grad(x, dy, slope):
    return dy if x > 0 else dy * slope


@cuda.jit(device=True, inline=True)
def _sigmoid(x, one):
    z = math.exp(-abs(x))
    return one / (one + z) if x >= 0 else z / (one + z)


@cuda.jit(device=True, inline=True)
def _sigmoid_grad(y, dy, one):
    return dy * y * (one - y)


@cuda.jit(device=True, inline=True)
def _tanh(x, a):
    return math.tanh(x)


@cuda.jit(device=True, inline=True)
def _tanh_grad(y, dy, one):
    return dy * (one - y * y)


@cuda.jit(device=True, inline=True)
def _gelu(x, a):
    x64 = float64(x)
    return x64 * (0.5 * (1.0 + math.erf(x64 * _SQRT1_2)))


@cuda.jit(device=True, inline=True)
def _gelu_grad(x, dy, a):
    x64 = float64(x)
    cdf = 0.5 * (1.0 + math.erf(x64 * _SQRT1_2))
    pdf = math.exp(-0.5 * x64 * x64) * _INV_SQRT_2PI
    return float64(dy) * (cdf + x64 * pdf)


_relu_forward = _unary("_relu_forward", _relu)
_relu_backward = _binary("_relu_backward", _relu_grad)
_leaky_forward = _unary("_leaky_forward", _leaky)
_leaky_backward = _binary("_leaky_backward", _leaky_grad)
_sigmoid_forward = _unary("_sigmoid_forward", _sigmoid)
_sigmoid_backward = _binary("_sigmoid_backward", _sigmoid_grad)
_tanh_forward = _unary("_tanh_forward", _tanh)
_tanh_backward = _binary("_tanh_backward", _tanh_grad)
_gelu_forward = _unary("_gelu_forward", _gelu)
_gelu_backward = _binary("_gelu_backward", _gelu_grad)


def _run_unary(opname, kernel, x, a=1.0):
    dev.require_device(opname, x=x)
    y = dev.empty_like(x)
    kernel[dev.grid_1d(x.size)](x.reshape(-1), x.dtype.type(a), y.reshape(-1))
    return y


def _run_binary(opname, kernel, u, dy, a=1.0):
    dev.require_device(opname, x=u, dy=dy)
    dx = dev.empty_like(dy)
    kernel[dev.grid_1d(u.size)](u.reshape(-1), dy.reshape(-1), dy.dtype.type(a), dx.reshape(-1))
    return dx


@implements(activation.relu_forward)
def relu_forward(x):
    return _run_unary("relu_forward", _relu_forward, x, 0.0)


@implements(activation.relu_backward)
def relu_backward(x, dy):
    return _run_binary("relu_backward", _relu_backward, x, dy, 0.0)


@implements(activation.leaky_relu_forward)
def leaky_relu_forward(x, slope):
    return _run_unary("leaky_relu_forward", _leaky_forward, x, slope)


@implements(activation.leaky_relu_backward)
def leaky_relu_backward(x, dy, slope):
    return _run_binary("leaky_relu_backward", _leaky_backward, x, dy, slope)


@implements(activation.sigmoid_forward)
def sigmoid_forward(x):
    return _run_unary("sigmoid_forward", _sigmoid_forward, x)


@implements(activation.sigmoid_backward)
def sigmoid_backward(y, dy):
    return _run_binary("sigmoid_backward", _sigmoid_backward, y, dy)


@implements(activation.tanh_forward)
def tanh_forward(x):
    return _run_unary("tanh_forward", _tanh_forward, x)


@implements(activation.tanh_backward)
def tanh_backward(y, dy):
    return _run_binary("tanh_backward", _tanh_backward, y, dy)


@implements(activation.gelu_forward)
def gelu_forward(x):
    return _run_unary("gelu_forward", _gelu_forward, x)


@implements(activation.gelu_backward)
def gelu_backward(x, dy):
    return _run_binary("gelu_backward", _gelu_backward, x, dy)


@dev.kernel("void({f}[::1], int64, int64, {f}[::1])")
def _softmax_forward(x, K, inner, y):
    rows = x.size // K
    # Parallel axis: the (outer, inner) rows; each thread writes only its row of y.
    for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
        o = r // inner
        base = o * K * inner + (r - o * inner)
        m = float64(x[base])
        for k in range(1, K):
            v = float64(x[base + k * inner])
            if v > m or v != v:
                m = v
        s = float64(0.0)
        for k in range(K):
            s += math.exp(float64(x[base + k * inner]) - m)
        for k in range(K):
            y[base + k * inner] = math.exp(float64(x[base + k * inner]) - m) / s


@dev.kernel("void({f}[::1], {f}[::1], int64, int64, {f}[::1])")
def _softmax_backward(y, dy, K, inner, dx):
    rows = y.size // K
    # Parallel axis: the (outer, inner) rows; each thread writes only its row of dx.
    for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
        o = r // inner
        base = o * K * inner + (r - o * inner)
        s = float64(0.0)
        for k in range(K):
            s += float64(dy[base + k * inner]) * float64(y[base + k * inner])
        for k in range(K):
            j = base + k * inner
            dx[j] = float64(y[j]) * (float64(dy[j]) - s)


def _axis_view(shape, axis):
    """(K, inner) of the (outer, K, inner) view of ``shape`` along ``axis`` (checked by
    the contract)."""
    axis %= len(shape)
    return shape[axis], int(np.prod(shape[axis + 1:], dtype=np.int64))


@implements(activation.softmax_forward)
def softmax_forward(x, axis):
    dev.require_device("softmax_forward", x=x)
    K, inner = _axis_view(x.shape, axis)
    y = dev.empty_like(x)
    if x.size:
        _softmax_forward[dev.grid_1d(x.size // K)](x.reshape(-1), K, inner, y.reshape(-1))
    return y


@implements(activation.softmax_backward)
def softmax_backward(y, dy, axis):
    dev.require_device("softmax_backward", y=y, dy=dy)
    K, inner = _axis_view(y.shape, axis)
    dx = dev.empty_like(dy)
    if y.size:
        _softmax_backward[dev.grid_1d(y.size // K)](y.reshape(-1), dy.reshape(-1), K, inner,
                                                    dx.reshape(-1))
    return dx
