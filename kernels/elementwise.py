"""Kernel lab: activations (forward and backward), softmax and softmax cross-entropy.

The ops and their math are the contracts' (tinynet/ops/activation/__init__.py,
tinynet/ops/loss/__init__.py); tinynet.backends.ref is the reference.
``VARIANTS`` (per elementwise op), ``SOFTMAX_VARIANTS`` and ``XENT_VARIANTS``
number the variants; each is a pair (forward, backward):

- elementwise ops: ``fwd(x, *args) -> (y, cache)``, ``bwd(cache, dy, *args)
  -> dx``, with args the op's (LeakyReLU's slope);
- softmax: the same with args = (axis,);
- softmax cross-entropy: ``fwd(logits, labels, eps) -> (loss, probs)``,
  ``bwd(probs, labels, eps) -> dlogits``.

The rows named tinynet call the production ops of tinynet.backends.cpu, so
they time what tinynet runs.

ReLU, LeakyReLU:
- naive serial: a serial njit loop;
- prange flat (tinynet): the same loop under prange over the flat index;
  numba splits it into one contiguous block per thread and LLVM vectorizes
  each block;
- uint8 mask (ReLU): the forward also writes keep = [x > 0] (1 byte) and the
  backward reads it instead of x (4 bytes): 18 bytes per element instead
  of 20.

Sigmoid, Tanh:
- naive serial, libm exp / tanh;
- prange flat, libm: the call runs one element at a time, the loop does not
  vectorize;
- vector exp in float64: exp and expm1 as range reduction plus a Taylor
  polynomial in plain arithmetic (tinynet.backends.cpu_jit
  ``vector_exp_f64`` / ``vector_expm1_f64``, within 1 ulp), inlined, so the
  loop vectorizes: 8 float64 lanes per AVX-512 instruction;
- vector exp in x's dtype (tinynet): float32 input runs the float32
  polynomial, shorter, on 16 float32 lanes, within 1 ulp of exp.

GELU:
- naive serial, libm erf;
- prange flat, libm erf;
- Phi from the erfc approximation of Numerical Recipes (``erfcc``, relative
  error < 1.2e-7, about one float32 ulp) and the vector exp, in float64;
  float64 input keeps libm erf;
- erfcc in x's dtype: the same in float32 arithmetic for float32 input, in
  512-bit vectors; the backward takes a second exp for the pdf;
- one shared exp (tinynet): Phi(-|v|) = t Q(t) exp(-v^2 / 2) with t = 1 /
  (1 + p |v| / sqrt(2)) and Q a fitted polynomial (``python -m
  kernels.gelu_fit``), and an exp specialized to arguments <= 0 that flushes
  subnormal results: the backward's pdf reuses the same exp(-v^2 / 2), and
  the loop is about half as many instructions.

Softmax along an axis, viewed as (outer, K, inner):
- naive serial: max, sum of exp and the division along the axis;
- prange over (outer, block of columns): each task owns up to 256
  contiguous columns of one outer index (one column of width 1 for rows
  along the last axis); libm exp;
- vector exp in x's dtype (tinynet): dx in x's dtype (the sums stay
  float64), and a task per contiguous row when the axis is the last one.

Softmax cross-entropy (N, K) forward + backward:
- naive serial rows;
- prange rows (tinynet): float64 sums, the row loss in one pass.

``--check`` runs every variant against the float64 reference over the cases
of tinynet.ops.activation.cases and tinynet.ops.loss.cases.

Floor, float32 bytes of the minimal tensors: an activation's forward reads x
and writes y, its backward reads x or y, reads dy and writes dx (5 tensors for
forward + backward); softmax the same per pass; softmax cross-entropy reads
the logits, writes p, reads p, writes dlogits. The bench runs (64, 32, 28, 28)
(softmax along axis 1) and (256, 1000) for softmax, (64, 10) for the
cross-entropy.

The layer rows time the public API, ``y = layer.forward(x); dx =
layer.backward(dy)`` in float32 on the same shapes, against the torch module's
forward + ``backward(dy)``; the loss row times ``tn.SoftmaxCrossEntropy``
forward + backward against ``torch.nn.CrossEntropyLoss``.

    python -m kernels.elementwise --check      every variant against the reference
    python -m kernels.elementwise --bench      timings, % of floor, torch beside them
"""
import math

import numpy as np
import numba

import tinynet as tn
from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import (njit_kernel, vector_exp_f32, vector_exp_f64, vector_expm1_f64,
                                      wide_vectors)
from tinynet.ops.activation import cases as activation_cases
from tinynet.ops.loss import cases as loss_cases
from kernels.common import Row, lab_main, race, tensor_bytes, try_torch

FLOATS = (np.float32, np.float64)
SHAPE = (64, 32, 28, 28)
SOFTMAX_2D_SHAPE = (256, 1000)
XENT_SHAPE = (64, 10)
SLOPE = 0.01
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _flat_unary(kernel, cache_y=False):
    """fwd(x, *args) -> (y, cache) running ``kernel(x_flat, *args, y_flat)``, the
    args in x's dtype; the cache is y when ``cache_y``, else x."""
    def fwd(x, *args):
        y = np.empty_like(x)
        kernel(x.reshape(-1), *(x.dtype.type(a) for a in args), y.reshape(-1))
        return y, (y if cache_y else x)
    return fwd


def _flat_binary(kernel):
    """bwd(cache, dy, *args) -> dx running ``kernel(cache_flat, dy_flat, *args, dx_flat)``,
    the args in dy's dtype."""
    def bwd(cache, dy, *args):
        dx = np.empty_like(dy)
        kernel(cache.reshape(-1), dy.reshape(-1), *(dy.dtype.type(a) for a in args),
               dx.reshape(-1))
        return dx
    return bwd


def _tinynet(op, cache_y=False):
    """(fwd, bwd) of the production op ``<op>_forward`` / ``<op>_backward`` of
    tinynet.backends.cpu; the cache is y when ``cache_y``, else x."""
    forward = getattr(cpu, f"{op}_forward")

    def fwd(x, *args):
        y = forward(x, *args)
        return y, (y if cache_y else x)
    return fwd, getattr(cpu, f"{op}_backward")


# ReLU ------------------------------------------------------------------------

@njit_kernel()
def _relu_fwd_serial(x, y):
    for i in range(x.size):
        y[i] = 0.0 if x[i] <= 0 else x[i]


@njit_kernel()
def _relu_bwd_serial(x, dy, dx):
    for i in range(x.size):
        dx[i] = 0.0 if x[i] <= 0 else dy[i]


@njit_kernel(parallel=True)
def _relu_fwd_mask(x, y, keep):
    # Parallel axis: the flat index i; iteration i writes only y[i], keep[i].
    for i in numba.prange(x.size):
        v = x[i]
        k = not v <= 0
        keep[i] = k
        y[i] = v if k else 0.0


@njit_kernel(parallel=True)
def _relu_bwd_mask(keep, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in numba.prange(dy.size):
        dx[i] = dy[i] if keep[i] else 0.0


def relu_fwd_mask(x):
    y = np.empty_like(x)
    keep = np.empty(x.shape, np.uint8)
    _relu_fwd_mask(x.reshape(-1), y.reshape(-1), keep.reshape(-1))
    return y, keep


# LeakyReLU -------------------------------------------------------------------

@njit_kernel()
def _leaky_fwd_serial(x, slope, y):
    for i in range(x.size):
        y[i] = x[i] if x[i] > 0 else x[i] * slope


@njit_kernel()
def _leaky_bwd_serial(x, dy, slope, dx):
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


# Sigmoid ---------------------------------------------------------------------

@njit_kernel()
def _sigmoid_fwd_serial(x, y):
    for i in range(x.size):
        v = np.float64(x[i])
        z = math.exp(-abs(v))
        y[i] = 1.0 / (1.0 + z) if v >= 0 else z / (1.0 + z)


@njit_kernel(parallel=True)
def _sigmoid_fwd_libm(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        z = math.exp(-abs(v))
        y[i] = 1.0 / (1.0 + z) if v >= 0 else z / (1.0 + z)


@njit_kernel(parallel=True)
def _sigmoid_fwd_vec64(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        z = vector_exp_f64(-abs(v))
        y[i] = (1.0 if v >= 0 else z) / (1.0 + z)


@njit_kernel()
def _sigmoid_bwd_serial(y, dy, dx):
    for i in range(y.size):
        dx[i] = dy[i] * y[i] * (1 - y[i])


# Tanh ------------------------------------------------------------------------

@njit_kernel()
def _tanh_fwd_serial(x, y):
    for i in range(x.size):
        y[i] = math.tanh(np.float64(x[i]))


@njit_kernel(parallel=True)
def _tanh_fwd_libm(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        y[i] = math.tanh(np.float64(x[i]))


@njit_kernel(parallel=True)
def _tanh_fwd_vec64(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        m = vector_expm1_f64(-2.0 * abs(v))
        y[i] = math.copysign(-m / (2.0 + m), v)


@njit_kernel()
def _tanh_bwd_serial(y, dy, dx):
    for i in range(y.size):
        dx[i] = dy[i] * (1 - y[i] * y[i])


# GELU ------------------------------------------------------------------------

@njit_kernel()
def _gelu_fwd_serial(x, y):
    for i in range(x.size):
        v = np.float64(x[i])
        y[i] = v * (0.5 + 0.5 * math.erf(v * SQRT1_2))


@njit_kernel()
def _gelu_bwd_serial(x, dy, dx):
    for i in range(x.size):
        v = np.float64(x[i])
        cdf = 0.5 + 0.5 * math.erf(v * SQRT1_2)
        dx[i] = np.float64(dy[i]) * (cdf + v * math.exp(-0.5 * v * v) * INV_SQRT_2PI)


@njit_kernel(parallel=True)
def _gelu_fwd_libm(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        y[i] = v * (0.5 + 0.5 * math.erf(v * SQRT1_2))


@njit_kernel(parallel=True)
def _gelu_bwd_libm(x, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        cdf = 0.5 + 0.5 * math.erf(v * SQRT1_2)
        dx[i] = np.float64(dy[i]) * (cdf + v * math.exp(-0.5 * v * v) * INV_SQRT_2PI)


@njit_kernel(inline="always")
def _phi_cdf_vec64(v):
    # Numerical Recipes' erfcc, as tinynet's float32 GELU, in float64.
    z = abs(v) * SQRT1_2
    t = 1.0 / (1.0 + 0.5 * z)
    p = -0.82215223 + t * 0.17087277
    p = 1.48851587 + t * p
    p = -1.13520398 + t * p
    p = 0.27886807 + t * p
    p = -0.18628806 + t * p
    p = 0.09678418 + t * p
    p = 0.37409196 + t * p
    p = 1.00002368 + t * p
    p = -1.26551223 + t * p
    half_erfc = 0.5 * t * vector_exp_f64(p - z * z)
    return 1.0 - half_erfc if v >= 0 else half_erfc


@njit_kernel(parallel=True)
def _gelu_fwd_vec64(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        g = v * _phi_cdf_vec64(v)
        y[i] = g if v == v else v


@njit_kernel(parallel=True)
def _gelu_bwd_vec64(x, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in numba.prange(x.size):
        v = np.float64(x[i])
        pdf = vector_exp_f64(-0.5 * v * v) * INV_SQRT_2PI
        g = np.float64(dy[i]) * (_phi_cdf_vec64(v) + v * pdf)
        dx[i] = g if v == v else v


@njit_kernel(inline="always")
def _phi_cdf_erfcc_f32(v):
    # erfcc in float32 arithmetic: the cdf alone, with its own exp.
    f32 = np.float32
    z = abs(v) * f32(SQRT1_2)
    t = f32(1) / (f32(1) + f32(0.5) * z)
    p = f32(-0.82215223) + t * f32(0.17087277)
    p = f32(1.48851587) + t * p
    p = f32(-1.13520398) + t * p
    p = f32(0.27886807) + t * p
    p = f32(-0.18628806) + t * p
    p = f32(0.09678418) + t * p
    p = f32(0.37409196) + t * p
    p = f32(1.00002368) + t * p
    p = f32(-1.26551223) + t * p
    half_erfc = f32(0.5) * t * vector_exp_f32(p - z * z)
    return f32(1) - half_erfc if v >= 0 else half_erfc


@njit_kernel(parallel=True)
def _gelu_fwd_erfcc_f32(x, y):
    # Parallel axis: the flat index i; iteration i writes only y[i].
    for i in numba.prange(x.size):
        wide_vectors()
        v = x[i]
        g = v * _phi_cdf_erfcc_f32(v)
        y[i] = g if v == v else v


@njit_kernel(parallel=True)
def _gelu_bwd_erfcc_f32(x, dy, dx):
    # Parallel axis: the flat index i; iteration i writes only dx[i].
    for i in numba.prange(x.size):
        wide_vectors()
        v = x[i]
        pdf = vector_exp_f32(np.float32(-0.5) * v * v) * np.float32(INV_SQRT_2PI)
        g = dy[i] * (_phi_cdf_erfcc_f32(v) + v * pdf)
        dx[i] = g if v == v else v


def _gelu_by_dtype(fwd_f32, bwd_f32):
    """(fwd, bwd) running the float32 kernels on float32 input and libm's
    erf on float64 (the erfcc approximation is accurate to float32 only)."""
    def fwd(x):
        return _flat_unary(fwd_f32 if x.dtype == np.float32 else _gelu_fwd_libm)(x)

    def bwd(x, dy):
        return _flat_binary(bwd_f32 if dy.dtype == np.float32 else _gelu_bwd_libm)(x, dy)
    return fwd, bwd


VARIANTS = {
    "relu": {
        "1 naive serial": (_flat_unary(_relu_fwd_serial), _flat_binary(_relu_bwd_serial)),
        "2 tinynet, prange flat": _tinynet("relu"),
        "3 prange, uint8 mask": (relu_fwd_mask, _flat_binary(_relu_bwd_mask)),
    },
    "leaky_relu": {
        "1 naive serial": (_flat_unary(_leaky_fwd_serial), _flat_binary(_leaky_bwd_serial)),
        "2 tinynet, prange flat": _tinynet("leaky_relu"),
    },
    "sigmoid": {
        "1 naive serial": (_flat_unary(_sigmoid_fwd_serial, cache_y=True),
                           _flat_binary(_sigmoid_bwd_serial)),
        "2 prange flat, libm exp": (_flat_unary(_sigmoid_fwd_libm, cache_y=True),
                                    cpu.sigmoid_backward),
        "3 vector exp, float64": (_flat_unary(_sigmoid_fwd_vec64, cache_y=True),
                                  cpu.sigmoid_backward),
        "4 tinynet, vector exp, x dtype": _tinynet("sigmoid", cache_y=True),
    },
    "tanh": {
        "1 naive serial": (_flat_unary(_tanh_fwd_serial, cache_y=True),
                           _flat_binary(_tanh_bwd_serial)),
        "2 prange flat, libm tanh": (_flat_unary(_tanh_fwd_libm, cache_y=True),
                                     cpu.tanh_backward),
        "3 vector expm1, float64": (_flat_unary(_tanh_fwd_vec64, cache_y=True),
                                    cpu.tanh_backward),
        "4 tinynet, vector expm1, x dtype": _tinynet("tanh", cache_y=True),
    },
    "gelu": {
        "1 naive serial": (_flat_unary(_gelu_fwd_serial), _flat_binary(_gelu_bwd_serial)),
        "2 prange flat, libm erf": (_flat_unary(_gelu_fwd_libm), _flat_binary(_gelu_bwd_libm)),
        "3 erfcc + vector exp, f64": _gelu_by_dtype(_gelu_fwd_vec64, _gelu_bwd_vec64),
        "4 erfcc + vector exp, x dtype": _gelu_by_dtype(_gelu_fwd_erfcc_f32, _gelu_bwd_erfcc_f32),
        "5 tinynet, one shared exp": _tinynet("gelu"),
    },
}

LAYERS = {
    "relu": ((), lambda: tn.ReLU(), lambda torch: torch.nn.ReLU()),
    "leaky_relu": ((SLOPE,), lambda: tn.LeakyReLU(SLOPE), lambda torch: torch.nn.LeakyReLU(SLOPE)),
    "sigmoid": ((), lambda: tn.Sigmoid(), lambda torch: torch.nn.Sigmoid()),
    "tanh": ((), lambda: tn.Tanh(), lambda torch: torch.nn.Tanh()),
    "gelu": ((), lambda: tn.GELU(), lambda torch: torch.nn.GELU()),
}
"""The bench's args of each op, its layer and the torch module."""


# Softmax along an axis ------------------------------------------------------------

@njit_kernel()
def _softmax_fwd_serial(x, y):
    outer, k, inner = x.shape
    for o in range(outer):
        for j in range(inner):
            m = x[o, 0, j]
            for c in range(1, k):
                if x[o, c, j] > m or x[o, c, j] != x[o, c, j]:
                    m = x[o, c, j]
            s = 0.0
            for c in range(k):
                s += math.exp(np.float64(x[o, c, j]) - m)
            for c in range(k):
                y[o, c, j] = math.exp(np.float64(x[o, c, j]) - m) / s


@njit_kernel()
def _softmax_bwd_serial(y, dy, dx):
    outer, k, inner = y.shape
    for o in range(outer):
        for j in range(inner):
            s = 0.0
            for c in range(k):
                s += np.float64(dy[o, c, j]) * y[o, c, j]
            for c in range(k):
                dx[o, c, j] = y[o, c, j] * (dy[o, c, j] - s)


@njit_kernel(parallel=True)
def _softmax_fwd_libm(x, y, columns):
    outer, k, inner = x.shape
    blocks = (inner + columns - 1) // columns
    # Parallel axis: tasks (o, block of columns); a task writes only its own
    # columns y[o, :, j0:j0 + width].
    for t in numba.prange(outer * blocks):
        o = t // blocks
        j0 = (t % blocks) * columns
        width = min(columns, inner - j0)
        m = np.empty(width)
        s = np.zeros(width)
        for j in range(width):
            m[j] = x[o, 0, j0 + j]
        for c in range(1, k):
            for j in range(width):
                v = np.float64(x[o, c, j0 + j])
                if v > m[j] or v != v:
                    m[j] = v
        for c in range(k):
            for j in range(width):
                e = math.exp(np.float64(x[o, c, j0 + j]) - m[j])
                s[j] += e
                y[o, c, j0 + j] = e
        for c in range(k):
            for j in range(width):
                y[o, c, j0 + j] = y[o, c, j0 + j] / s[j]


def _axis_view(a, axis):
    """``a`` viewed as (outer, K, inner) around ``axis``."""
    axis %= a.ndim
    return a.reshape(math.prod(a.shape[:axis]), a.shape[axis], math.prod(a.shape[axis + 1:]))


def softmax_fwd_serial(x, axis):
    y = np.empty_like(x)
    _softmax_fwd_serial(_axis_view(x, axis), _axis_view(y, axis))
    return y, y


def softmax_bwd_serial(y, dy, axis):
    dx = np.empty_like(dy)
    _softmax_bwd_serial(_axis_view(y, axis), _axis_view(dy, axis), _axis_view(dx, axis))
    return dx


def softmax_fwd_blocks(x, axis):
    y = np.empty_like(x)
    _softmax_fwd_libm(_axis_view(x, axis), _axis_view(y, axis), 256)
    return y, y


SOFTMAX_VARIANTS = {
    "1 naive serial": (softmax_fwd_serial, softmax_bwd_serial),
    "2 prange blocks, libm exp": (softmax_fwd_blocks, cpu.softmax_backward),
    "3 tinynet, vector exp, x dtype": _tinynet("softmax", cache_y=True),
}


# Softmax cross-entropy -------------------------------------------------------------

@njit_kernel()
def _xent_fwd_serial(logits, labels, eps, probs):
    n, k = logits.shape
    total = 0.0
    for r in range(n):
        m = np.float64(logits[r, 0])
        for c in range(1, k):
            if logits[r, c] > m or logits[r, c] != logits[r, c]:
                m = np.float64(logits[r, c])
        s = 0.0
        sum_z = 0.0
        for c in range(k):
            z = logits[r, c] - m
            s += math.exp(z)
            sum_z += z
        lse = math.log(s)
        total += (1.0 - eps) * (lse - (logits[r, labels[r]] - m)) + eps * (lse - sum_z / k)
        for c in range(k):
            probs[r, c] = math.exp(logits[r, c] - m - lse)
    return total / n


@njit_kernel()
def _xent_bwd_serial(probs, labels, eps, dlogits):
    n, k = probs.shape
    for r in range(n):
        for c in range(k):
            q = eps / k + (1.0 - eps if c == labels[r] else 0.0)
            dlogits[r, c] = (probs[r, c] - q) / n


def xent_fwd_serial(logits, labels, eps):
    probs = np.empty_like(logits)
    return _xent_fwd_serial(logits, labels, eps, probs), probs


def xent_bwd_serial(probs, labels, eps):
    dlogits = np.empty_like(probs)
    _xent_bwd_serial(probs, labels, eps, dlogits)
    return dlogits


XENT_VARIANTS = {
    "1 naive serial": (xent_fwd_serial, xent_bwd_serial),
    "2 tinynet, prange rows": (cpu.softmax_xent_forward, cpu.softmax_xent_backward),
}


# check -------------------------------------------------------------------------------

def _close(name, got, want, dtype):
    tol = 2e-6 if dtype == np.float32 else 1e-12
    assert got.dtype == dtype, name
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def _check_pair(label, fwd, bwd, x, dy, args, y_ref, dx_ref):
    """One variant's y and dx (its backward reading its own cache) against the reference."""
    with np.errstate(all="ignore"):
        y, cache = fwd(x, *args)
        dx = bwd(cache, dy, *args)
    _close(f"{label} y", y, y_ref, x.dtype)
    _close(f"{label} dx", dx, dx_ref, x.dtype)


def check():
    rng = np.random.default_rng(0)
    for case in activation_cases.ELEMENTWISE:
        forward = getattr(ref, f"{case.op}_forward")
        backward = getattr(ref, f"{case.op}_backward")
        for shape in activation_cases.SHAPES:
            for dtype in FLOATS:
                x, dy = shape.draw(rng, dtype)
                x64 = x.astype(np.float64)
                with np.errstate(all="ignore"):
                    y_ref = forward(x64, *case.args)
                    dx_ref = backward(y_ref if case.reads_y else x64, dy.astype(np.float64),
                                      *case.args)
                for name, (fwd, bwd) in VARIANTS[case.op].items():
                    _check_pair(f"{case.name} {name} {shape.name}", fwd, bwd, x, dy, case.args,
                                y_ref, dx_ref)
    for case in activation_cases.SOFTMAX:
        for dtype in FLOATS:
            x = (3 * rng.standard_normal(case.shape)).astype(dtype)
            dy = rng.standard_normal(case.shape).astype(dtype)
            y_ref = ref.softmax_forward(x.astype(np.float64), case.axis)
            dx_ref = ref.softmax_backward(y_ref, dy.astype(np.float64), case.axis)
            for name, (fwd, bwd) in SOFTMAX_VARIANTS.items():
                _check_pair(f"softmax {name} {case.name}", fwd, bwd, x, dy, (case.axis,),
                            y_ref, dx_ref)
    for case in loss_cases.XENT:
        for eps in loss_cases.SMOOTHING:
            for dtype in FLOATS:
                logits, labels = case.draw(rng, dtype)
                loss_ref, p_ref = ref.softmax_xent_forward(logits.astype(np.float64), labels, eps)
                d_ref = ref.softmax_xent_backward(p_ref, labels, eps)
                for name, (fwd, bwd) in XENT_VARIANTS.items():
                    label = f"xent {name} {case.name} eps={eps}"
                    loss, p = fwd(logits, labels, eps)
                    assert math.isclose(loss, loss_ref, rel_tol=1e-6, abs_tol=1e-12), \
                        (label, loss, loss_ref)
                    _close(f"{label} p", p, p_ref, dtype)
                    _close(f"{label} dlogits", bwd(p, labels, eps), d_ref, dtype)


# bench -------------------------------------------------------------------------------

def _torch_fns(torch, module, x, dy):
    """torch forward, backward alone (autograd.grad on a kept graph) and both."""
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)
    yt = module(xt)

    def both():
        xt.grad = None
        module(xt).backward(dyt)

    return {"fwd": lambda: module(xt),
            "bwd": lambda: torch.autograd.grad(yt, xt, dyt, retain_graph=True),
            "fwd+bwd": both}


def _layer_fn(layer, x, dy):
    def step():
        y = layer.forward(x)
        dx = layer.backward(dy)
        return y, dx
    return step


def _bench_family(rows, label, variants, x, dy, args, torch_module, layer):
    """Race every variant's fwd, bwd and fwd+bwd, torch's, and the public layer's."""
    torch = try_torch()
    fns = {}
    for name, (fwd, bwd) in variants.items():
        cache = fwd(x, *args)[1]
        fns[(name, "fwd")] = lambda fwd=fwd: fwd(x, *args)
        fns[(name, "bwd")] = lambda bwd=bwd, cache=cache: bwd(cache, dy, *args)
        # y stays alive through the backward pass, as in a network.
        fns[(name, "fwd+bwd")] = lambda fwd=fwd, bwd=bwd: (
            lambda yc: (yc[0], bwd(yc[1], dy, *args)))(fwd(x, *args))
    if torch is not None:
        for part, fn in _torch_fns(torch, torch_module(torch), x, dy).items():
            fns[("torch", part)] = fn
    fns[("layer", "fwd+bwd")] = _layer_fn(layer, x, dy)
    t = race(fns)
    one = tensor_bytes(x)
    floor = {"fwd": 2 * one, "bwd": 3 * one, "fwd+bwd": 5 * one}
    for name in variants:
        for part in ("fwd", "bwd", "fwd+bwd"):
            rows.append(Row(f"{label} {part}", name, t[(name, part)], floor[part],
                            torch_seconds=t.get(("torch", part))))
    rows.append(Row(f"layer {label} fwd+bwd", f"tinynet {tn.backend_name()}",
                    t[("layer", "fwd+bwd")], floor["fwd+bwd"],
                    torch_seconds=t.get(("torch", "fwd+bwd"))))


def _bench_xent(rows):
    torch = try_torch()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(XENT_SHAPE).astype(np.float32)
    labels = rng.integers(0, XENT_SHAPE[1], XENT_SHAPE[0])
    fns = {}
    for name, (fwd, bwd) in XENT_VARIANTS.items():
        fns[name] = lambda fwd=fwd, bwd=bwd: bwd(fwd(logits, labels, 0.0)[1], labels, 0.0)
    loss = tn.SoftmaxCrossEntropy()
    fns["layer"] = lambda: (loss.forward(logits, labels), loss.backward())
    if torch is not None:
        lt = torch.from_numpy(logits).requires_grad_(True)
        target = torch.from_numpy(labels)
        criterion = torch.nn.CrossEntropyLoss()

        def torch_step():
            lt.grad = None
            criterion(lt, target).backward()
        fns["torch"] = torch_step
    t = race(fns, repeat=200)
    floor = 4 * tensor_bytes(logits)
    for name in XENT_VARIANTS:
        rows.append(Row("xent (64,10) fwd+bwd", name, t[name], floor,
                        torch_seconds=t.get("torch")))
    rows.append(Row("layer xent (64,10) fwd+bwd", f"tinynet {tn.backend_name()}",
                    t["layer"], floor, torch_seconds=t.get("torch")))


def bench():
    rows = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    for op, variants in VARIANTS.items():
        args, make_layer, torch_module = LAYERS[op]
        _bench_family(rows, op, variants, x, dy, args, torch_module, make_layer())
    _bench_family(rows, "softmax dim=1", SOFTMAX_VARIANTS, x, dy, (1,),
                  lambda torch: torch.nn.Softmax(dim=1), tn.Softmax(dim=1))
    x2 = rng.standard_normal(SOFTMAX_2D_SHAPE).astype(np.float32)
    dy2 = rng.standard_normal(SOFTMAX_2D_SHAPE).astype(np.float32)
    _bench_family(rows, "softmax (256,1000)", SOFTMAX_VARIANTS, x2, dy2, (1,),
                  lambda torch: torch.nn.Softmax(dim=1), tn.Softmax(dim=1))
    _bench_xent(rows)
    return rows


def main(argv=None):
    return lab_main("elementwise", check, bench, argv)


if __name__ == "__main__":
    main()
