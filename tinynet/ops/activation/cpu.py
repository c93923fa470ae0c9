"""The activation ops on the cpu backend: Numba kernels.

The ops and their math: the contract, tinynet/ops/activation/__init__.py.

The elementwise ops run one flat loop over the C-order elements under prange,
which numba splits into one contiguous block per thread and LLVM vectorizes;
each iteration writes only its own element, so the loops are free of races.
ReLU and LeakyReLU give the ref's bits.

Sigmoid, Tanh and Softmax take exp and expm1 from ``tinynet.backends.cpu_jit``
(``vector_exp``, ``vector_expm1``: no libm call, so the loops vectorize), in
the input's precision, within 1 ulp. float32 GELU writes Phi(-|v|) = t Q(t)
exp(-v^2 / 2), t = 1 / (1 + p |v| / sqrt(2)), with Q a polynomial fitted by
``python -m kernels.gelu_fit`` (relative error 1.14e-7, the module explains
the form), and ``vector_exp_normal_f32``, an exp of arguments <= 0 with one
scaling and a degree-5 polynomial (9.5e-8). The backward's pdf exp(-v^2 / 2) / sqrt(2 pi) is
the same exponential, so forward and backward take one exp and one division
per element. Results are within about 1 float32 ulp on average and 4.5e-6
relative at worst for |v| <= 13 (rounding v^2 / 2 to float32 dominates
there); where exp(-v^2 / 2) is subnormal (|v| > 13.19) Phi is exactly 0 or 1,
so GELU's subnormal results are 0. float64 GELU calls libm's erf, in the
ref's order of operations. These loops are compute-bound, so their kernels
ask for 512-bit vectors (``wide_vectors()``, where the CPU has AVX-512;
numba's default is 256): ``python -m kernels.elementwise --bench``, run
before and after, took Softmax over the channels of (64, 32, 28, 28) from
1.57 to 1.41 ms on an Intel Xeon. On (64, 32, 28, 28) float32 the shared exp
took the GELU forward + backward from 1.61 to 0.67 ms (the lab's variants 4
and 5, same command).

Softmax views x as (outer, K, inner), K the softmax axis, and sums in float64:
one task per contiguous row when the axis is the last one, otherwise one task
per block of neighbouring columns of one outer index.

NaN propagates as in the ref: relu(NaN) = NaN and a NaN in a softmax row makes
the whole row NaN. Every op returns fresh arrays; backward ops return dy's
dtype (x or y is read in dy's dtype).

Promoted from the lab (kernels/elementwise.py), which times these kernels
against the variants they replaced.
"""
import math

import numpy as np
from numba import prange

from .. import activation
from ..contract import implements
from ...backends.cpu_jit import (njit_kernel, vector_exp, vector_exp_normal_f32, vector_expm1,
                                 wide_vectors)

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "gelu_forward", "gelu_backward", "softmax_forward", "softmax_backward"]

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_F32_INV_SQRT2 = np.float32(1.0 / _SQRT2)
_F32_INV_SQRT_2PI = np.float32(1.0 / _SQRT_2PI)
# Softmax over a strided axis: about this many neighbouring columns per task,
# forward and backward. The backward does less per element and ran faster
# with whole rows: over dim 1 of (64, 32, 28, 28), 0.41 ms against 0.47 at
# 256 columns (``python -m kernels.elementwise --bench``, before and after).
_SOFTMAX_COLUMNS = 256
_SOFTMAX_BACKWARD_COLUMNS = 1024
_SIMD_LANES = 16  # float32 lanes of a 512-bit vector (wide_vectors)


def _unary(kernel, x):
    """Run ``kernel(x_flat, y_flat)`` on a fresh output of x's shape and dtype."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernel(x.reshape(-1), y.reshape(-1))
    return y


def _binary(kernel, x, dy, *args):
    """Run ``kernel(x_flat, dy_flat, *args, dx_flat)``; x is read in dy's dtype."""
    dy = np.ascontiguousarray(dy)
    x = np.ascontiguousarray(x, dy.dtype)
    dx = np.empty_like(dy)
    kernel(x.reshape(-1), dy.reshape(-1), *args, dx.reshape(-1))
    return dx


@njit_kernel(parallel=True)
def _relu_forward(x, y):
    zero = x.dtype.type(0)
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        v = x[i]
        y[i] = zero if v <= 0 else v


@njit_kernel(parallel=True)
def _relu_backward(x, dy, dx):
    zero = dy.dtype.type(0)
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(x.size):
        dx[i] = zero if x[i] <= 0 else dy[i]


@njit_kernel(parallel=True)
def _leaky_relu_forward(x, slope, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else v * slope


@njit_kernel(parallel=True)
def _leaky_relu_backward(x, dy, slope, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@njit_kernel(parallel=True)
def _sigmoid_forward(x, y):
    one = x.dtype.type(1)
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        wide_vectors()
        v = x[i]
        # z = exp(-|x|) <= 1 never overflows.
        z = vector_exp(-abs(v))
        y[i] = (one if v >= 0 else z) / (one + z)


@njit_kernel(parallel=True)
def _sigmoid_backward(y, dy, dx):
    one = dy.dtype.type(1)
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(y.size):
        dx[i] = dy[i] * y[i] * (one - y[i])


@njit_kernel(parallel=True)
def _tanh_forward(x, y):
    two = x.dtype.type(2)
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        wide_vectors()
        v = x[i]
        # tanh|x| = (1 - e) / (1 + e) = -m / (2 + m), e = exp(-2|x|), m = e - 1;
        # expm1 keeps tanh accurate for tiny |x|.
        m = vector_expm1(-two * abs(v))
        y[i] = math.copysign(-m / (two + m), v)


@njit_kernel(parallel=True)
def _tanh_backward(y, dy, dx):
    one = dy.dtype.type(1)
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(y.size):
        dx[i] = dy[i] * (one - y[i] * y[i])


# float32 GELU: Phi(-|v|) = t Q(t) exp(-z^2), z = |v| / sqrt(2), t = 1 / (1 + p z),
# Q(t) = 1/2 + (t - 1) S(t). p and S (float32) and their maximum relative
# error, 1.14e-7, are the output of ``python -m kernels.gelu_fit``, which
# explains the form; the exp is cpu_jit's vector_exp_normal_f32.
_GELU_P = np.float32(0.32995229959487915)
_GELU_S = tuple(np.float32(c) for c in (
    0.4068341851234436, 0.3153759241104126, 0.21473129093647003, 0.1912948340177536,
    -0.013323838822543621, 0.16271744668483734, -0.06772245466709137))
_GS0, _GS1, _GS2, _GS3, _GS4, _GS5, _GS6 = _GELU_S


@njit_kernel(inline="always")
def _gelu_parts_f32(v):
    """(Phi(v), exp(-v^2 / 2)) of a float32 v, vectorizable: one exp, one division.

    Where exp(-v^2 / 2) would be subnormal (|v| > 13.19) it is 0, so Phi(v)
    is exactly 0 or 1 there: GELU's subnormal results become 0. NaN gives NaN.
    """
    z = abs(v) * _F32_INV_SQRT2
    t = np.float32(1) / (np.float32(1) + _GELU_P * z)
    s = _GS6
    s = s * t + _GS5
    s = s * t + _GS4
    s = s * t + _GS3
    s = s * t + _GS2
    s = s * t + _GS1
    s = s * t + _GS0
    q = np.float32(0.5) + (t - np.float32(1)) * s
    # z^2 = v * v / 2 (the halving is exact); 0 where it would be subnormal.
    e = vector_exp_normal_f32(-((np.float32(0.5) * v) * v))
    tail = t * q * e  # Phi(-|v|)
    return (np.float32(1) - tail if v >= np.float32(0) else tail), e


@njit_kernel(parallel=True)
def _gelu_forward_f32(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        wide_vectors()
        v = x[i]
        cdf, _ = _gelu_parts_f32(v)
        y[i] = v * cdf


@njit_kernel(parallel=True)
def _gelu_backward_f32(x, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(x.size):
        wide_vectors()
        v = x[i]
        cdf, e = _gelu_parts_f32(v)
        # The pdf exp(-v^2 / 2) / sqrt(2 pi) shares the cdf's exponential.
        dx[i] = dy[i] * (cdf + v * (e * _F32_INV_SQRT_2PI))


# float64 GELU: libm erf and exp, in the ref's order of operations.
@njit_kernel(parallel=True)
def _gelu_forward_f64(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in prange(x.size):
        v = x[i]
        y[i] = v * (0.5 * (1.0 + math.erf(v / _SQRT2)))


@njit_kernel(parallel=True)
def _gelu_backward_f64(x, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in prange(x.size):
        v = x[i]
        cdf = 0.5 * (1.0 + math.erf(v / _SQRT2))
        # For |x| > 1e154, v * v is inf and the pdf is correctly 0.
        pdf = math.exp(-0.5 * v * v) / _SQRT_2PI
        dx[i] = dy[i] * (cdf + v * pdf)


@implements(activation.relu_forward)
def relu_forward(x):
    return _unary(_relu_forward, x)


@implements(activation.relu_backward)
def relu_backward(x, dy):
    return _binary(_relu_backward, x, dy)


@implements(activation.leaky_relu_forward)
def leaky_relu_forward(x, slope):
    """The slope is rounded to x's dtype, as in the ref."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _leaky_relu_forward(x.reshape(-1), x.dtype.type(slope), y.reshape(-1))
    return y


@implements(activation.leaky_relu_backward)
def leaky_relu_backward(x, dy, slope):
    return _binary(_leaky_relu_backward, x, dy, dy.dtype.type(slope))


@implements(activation.sigmoid_forward)
def sigmoid_forward(x):
    return _unary(_sigmoid_forward, x)


@implements(activation.sigmoid_backward)
def sigmoid_backward(y, dy):
    return _binary(_sigmoid_backward, y, dy)


@implements(activation.tanh_forward)
def tanh_forward(x):
    return _unary(_tanh_forward, x)


@implements(activation.tanh_backward)
def tanh_backward(y, dy):
    return _binary(_tanh_backward, y, dy)


@implements(activation.gelu_forward)
def gelu_forward(x):
    return _unary(_gelu_forward_f32 if x.dtype == np.float32 else _gelu_forward_f64, x)


@implements(activation.gelu_backward)
def gelu_backward(x, dy):
    return _binary(_gelu_backward_f32 if dy.dtype == np.float32 else _gelu_backward_f64, x, dy)


# Softmax kernels view x as (outer, K, inner) and normalize along K. With
# inner == 1 (the softmax axis is the last one, e.g. (N, K) logits) a task is
# one contiguous row; otherwise a task is a block of up to `columns`
# neighbouring columns x[o, :, j0:j1], whose inner loops run along contiguous
# memory. The maximum skips NaN: a NaN then turns exp, the sum and so the
# whole row or column into NaN, as in the ref.

@njit_kernel()
def _softmax_row_forward(x, y):
    """y = softmax(x) of one contiguous row x (K,), summed in float64."""
    wide_vectors()
    k = x.size
    # Four running maxima: each step no longer waits for the previous
    # compare, so the scan runs about 3 times faster than with one.
    m0 = m1 = m2 = m3 = x[0]
    for c in range(0, k - 3, 4):
        m0 = x[c] if x[c] > m0 else m0
        m1 = x[c + 1] if x[c + 1] > m1 else m1
        m2 = x[c + 2] if x[c + 2] > m2 else m2
        m3 = x[c + 3] if x[c + 3] > m3 else m3
    for c in range(k - k % 4, k):
        m0 = x[c] if x[c] > m0 else m0
    m = max(max(m0, m1), max(m2, m3))
    s = 0.0
    for c in range(k):
        e = vector_exp(x[c] - m)
        s += e
        y[c] = e
    r = y.dtype.type(1.0 / s)
    for c in range(k):
        y[c] = y[c] * r


@njit_kernel()
def _softmax_columns_forward(x, y, o, j0, j1):
    """Softmax of the columns x[o, :, j0:j1] along axis 1, into y[o, :, j0:j1]."""
    wide_vectors()
    k = x.shape[1]
    w = j1 - j0
    m = x[o, 0, j0:j1].copy()
    for c in range(1, k):
        xc = x[o, c, j0:j1]
        for j in range(w):
            if xc[j] > m[j]:
                m[j] = xc[j]
    # e = exp(x - m) into y, and its sum per column in float64.
    s = np.zeros(w, dtype=np.float64)
    for c in range(k):
        xc = x[o, c, j0:j1]
        yc = y[o, c, j0:j1]
        for j in range(w):
            e = vector_exp(xc[j] - m[j])
            s[j] += e
            yc[j] = e
    r = (1.0 / s).astype(y.dtype)
    for c in range(k):
        yc = y[o, c, j0:j1]
        for j in range(w):
            yc[j] = yc[j] * r[j]


@njit_kernel()
def _softmax_row_backward(y, dy, dx):
    """dx = y * (dy - sum(dy * y)) of one contiguous row (K,), summed in float64."""
    k = y.size
    s = 0.0
    for c in range(k):
        s += dy[c] * y[c]
    sd = dy.dtype.type(s)
    for c in range(k):
        dx[c] = y[c] * (dy[c] - sd)


@njit_kernel()
def _softmax_columns_backward(y, dy, dx, o, j0, j1):
    """dx[o, :, j0:j1] = y * (dy - sum(dy * y)) along axis 1, summed in float64."""
    k = y.shape[1]
    w = j1 - j0
    s = np.zeros(w, dtype=np.float64)
    for c in range(k):
        yc = y[o, c, j0:j1]
        dyc = dy[o, c, j0:j1]
        for j in range(w):
            s[j] += dyc[j] * yc[j]
    sd = s.astype(dy.dtype)
    for c in range(k):
        yc = y[o, c, j0:j1]
        dyc = dy[o, c, j0:j1]
        dxc = dx[o, c, j0:j1]
        for j in range(w):
            dxc[j] = yc[j] * (dyc[j] - sd[j])


@njit_kernel(inline="always")
def _column_blocks(inner, columns):
    """(blocks, width): ``inner`` columns split into blocks of about ``columns``,
    each ``width`` wide (the last one narrower), width a whole number of
    _SIMD_LANES unless it is all of ``inner``: blocks then start on a vector
    boundary and their loops run without a scalar remainder. Softmax over
    dim 1 of (64, 32, 28, 28) splits its 784 columns into 4 blocks of 208
    instead of 196: its forward went from 0.88 to 0.74 ms (``python -m
    kernels.elementwise --bench``, before and after)."""
    blocks = (inner + columns - 1) // columns
    width = (inner + blocks - 1) // blocks
    width = min(inner, (width + _SIMD_LANES - 1) // _SIMD_LANES * _SIMD_LANES)
    return (inner + width - 1) // width, width


@njit_kernel(parallel=True)
def _softmax_forward(x, y, columns):
    outer, k, inner = x.shape
    if inner == 1:
        x2 = x.reshape(outer, k)
        y2 = y.reshape(outer, k)
        # Parallel axis: the rows o; task o writes only y2[o].
        for o in prange(outer):
            wide_vectors()
            _softmax_row_forward(x2[o], y2[o])
        return
    blocks, width = _column_blocks(inner, columns)
    # Parallel axis: tasks t = (o, block of columns); task t reads x[o, :, j0:j1]
    # and writes only y[o, :, j0:j1], its own columns.
    for t in prange(outer * blocks):
        wide_vectors()
        o = t // blocks
        j0 = (t % blocks) * width
        _softmax_columns_forward(x, y, o, j0, min(j0 + width, inner))


@njit_kernel(parallel=True)
def _softmax_backward(y, dy, dx, columns):
    outer, k, inner = y.shape
    if inner == 1:
        y2 = y.reshape(outer, k)
        dy2 = dy.reshape(outer, k)
        dx2 = dx.reshape(outer, k)
        # Parallel axis: the rows o; task o writes only dx2[o].
        for o in prange(outer):
            _softmax_row_backward(y2[o], dy2[o], dx2[o])
        return
    blocks, width = _column_blocks(inner, columns)
    # Parallel axis: tasks t = (o, block of columns), as in _softmax_forward;
    # task t writes only dx[o, :, j0:j1].
    for t in prange(outer * blocks):
        o = t // blocks
        j0 = (t % blocks) * width
        _softmax_columns_backward(y, dy, dx, o, j0, min(j0 + width, inner))


def _axis_view(a, axis):
    """``a`` viewed as (outer, K, inner) around ``axis``."""
    axis %= a.ndim
    return a.reshape(math.prod(a.shape[:axis]), a.shape[axis], math.prod(a.shape[axis + 1:]))


@implements(activation.softmax_forward)
def softmax_forward(x, axis):
    """Sums in float64."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    if x.size:
        _softmax_forward(_axis_view(x, axis), _axis_view(y, axis), _SOFTMAX_COLUMNS)
    return y


@implements(activation.softmax_backward)
def softmax_backward(y, dy, axis):
    """Sums in float64."""
    dy = np.ascontiguousarray(dy)
    y = np.ascontiguousarray(y, dy.dtype)
    dx = np.empty_like(dy)
    if dy.size:
        _softmax_backward(_axis_view(y, axis), _axis_view(dy, axis), _axis_view(dx, axis),
                          _SOFTMAX_BACKWARD_COLUMNS)
    return dx
