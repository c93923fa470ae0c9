"""Kernel lab: activations (forward and backward), softmax and softmax cross-entropy.

The ops (tinynet.backends.ref.activation and tinynet.backends.ref.loss, the
reference):

    ReLU       y = max(x, 0)                   dx = dy * [x > 0]
    LeakyReLU  y = x if x > 0 else 0.01 x      dx = dy if x > 0 else 0.01 dy
    Sigmoid    y = 1 / (1 + exp(-x))           dx = dy * y * (1 - y)
    Tanh       y = tanh(x)                     dx = dy * (1 - y^2)
    GELU       y = x Phi(x)                    dx = dy * (Phi(x) + x phi(x))
    Softmax    y = exp(x - m) / sum exp(x - m) dx = y * (dy - sum(dy * y))
    softmax cross-entropy, mean over N, label smoothing eps:
               loss = mean_n (lse_n - sum_k q_nk z_nk),  dlogits = (p - q) / N

Elementwise variants, per op (fwd(x) -> (y, cache), bwd(cache, dy) -> dx):

ReLU, LeakyReLU
  1. naive port: a serial njit loop.
  2. prange flat: the same loop under prange over the flat index; numba splits
     it into one contiguous block per thread and LLVM vectorizes each block.
  3. (ReLU) uint8 mask: the forward also writes keep = [x > 0] (1 byte) and
     the backward reads it instead of x (4 bytes): 18 bytes per element
     instead of 20.
Sigmoid, Tanh
  1. naive port, libm exp / tanh, serial.
  2. prange flat, libm: the call runs one element at a time, the loop does
     not vectorize.
  3. vector exp in float64: exp and expm1 as range reduction plus a Taylor
     polynomial in plain arithmetic (tinynet.backends.cpu.activation
     ``_exp_f64`` / ``_expm1_f64``, within 1 ulp), inlined, so the loop
     vectorizes: 8 float64 lanes per AVX-512 instruction.
  4. vector exp in x's dtype: float32 input runs ``_exp_f32``, a shorter
     polynomial on 16 float32 lanes, within 1 ulp of exp.
GELU
  1. naive port, libm erf, serial.
  2. prange flat, libm erf.
  3. Phi from the erfc approximation of Numerical Recipes (``erfcc``, relative
     error < 1.2e-7, about one float32 ulp) and the vector exp, in float64;
     float64 input keeps libm erf (variant 2).
  4. variant 3 in float32 arithmetic for float32 input.

Softmax over axis 1 of (64, 32, 28, 28) and of (256, 1000):

1. naive port: serial; max, sum of exp and the division along the axis.
2. prange over (n, block of columns): each task owns up to 256 contiguous
   columns of one sample (one column of width 1 for (N, K)); libm exp.
3. as 2 with the vector exp in x's dtype and dx in x's dtype (the sums stay
   float64), and a task per contiguous row when the axis is the last one.

Softmax cross-entropy (N, K) forward + backward:

1. naive port: serial rows.
2. prange over rows (float64 sums, the row loss in one pass).

The variant marked (tn) is tinynet's: the lab runs the production op of
tinynet.backends.cpu itself, so it times what tinynet runs.

Floor, float32 bytes of the minimal tensors: an activation's forward reads x
and writes y, its backward reads x or y, reads dy and writes dx (5 tensors for
forward + backward); softmax the same per pass; softmax cross-entropy reads
the logits, writes p, reads p, writes dlogits.

The layer rows time the public API, ``y = layer.forward(x); dx =
layer.backward(dy)`` in float32 on the same shapes, against the torch module's
forward + ``backward(dy)``; the loss row times ``tn.SoftmaxCrossEntropy``
forward + backward against ``torch.nn.CrossEntropyLoss``.

    python -m kernels.elementwise --check      every variant against the reference
    python -m kernels.elementwise --bench      timings, % of floor, torch beside them
"""
import math
import statistics

import numpy as np
import numba

import tinynet as tn
from tinynet.backends import cpu, ref
from tinynet.backends.cpu.activation import _exp_f64, _expm1_f64
from tinynet.backends.cpu.jit import njit_kernel
from kernels.common import Row, lab_main, median_time, tensor_bytes, try_torch

SHAPE = (64, 32, 28, 28)
SOFTMAX_2D_SHAPE = (256, 1000)
XENT_SHAPE = (64, 10)
SLOPE = 0.01
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _flat_unary(kernel):
    """fwd(x) -> (y, x) running ``kernel(x_flat, y_flat)``; the cache is x."""
    def fwd(x):
        y = np.empty_like(x)
        kernel(x.reshape(-1), y.reshape(-1))
        return y, x
    return fwd


def _flat_unary_cache_y(kernel):
    """fwd(x) -> (y, y) running ``kernel(x_flat, y_flat)``; the cache is y."""
    def fwd(x):
        y = np.empty_like(x)
        kernel(x.reshape(-1), y.reshape(-1))
        return y, y
    return fwd


def _flat_binary(kernel, *args):
    """bwd(cache, dy) -> dx running ``kernel(cache_flat, dy_flat, *args, dx_flat)``."""
    def bwd(cache, dy):
        dx = np.empty_like(dy)
        kernel(cache.reshape(-1), dy.reshape(-1), *args, dx.reshape(-1))
        return dx
    return bwd


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


def relu_fwd_v3(x):
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


def leaky_fwd_v1(x):
    y = np.empty_like(x)
    _leaky_fwd_serial(x.reshape(-1), x.dtype.type(SLOPE), y.reshape(-1))
    return y, x


def leaky_bwd_v1(x, dy):
    dx = np.empty_like(dy)
    _leaky_bwd_serial(x.reshape(-1), dy.reshape(-1), dy.dtype.type(SLOPE), dx.reshape(-1))
    return dx


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
        z = _exp_f64(-abs(v))
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
        m = _expm1_f64(-2.0 * abs(v))
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
    # Numerical Recipes' erfcc, as tinynet's _phi_cdf_f32, in float64.
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
    half_erfc = 0.5 * t * _exp_f64(p - z * z)
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
        pdf = _exp_f64(-0.5 * v * v) * INV_SQRT_2PI
        g = np.float64(dy[i]) * (_phi_cdf_vec64(v) + v * pdf)
        dx[i] = g if v == v else v


def gelu_fwd_v3(x):
    # erfcc is accurate to float32 only: float64 input keeps libm erf (variant 2).
    kernel = _gelu_fwd_vec64 if x.dtype == np.float32 else _gelu_fwd_libm
    return _flat_unary(kernel)(x)


def gelu_bwd_v3(x, dy):
    kernel = _gelu_bwd_vec64 if dy.dtype == np.float32 else _gelu_bwd_libm
    return _flat_binary(kernel)(x, dy)


def _cache_y(forward):
    """fwd(x) -> (y, y) for an op whose backward reads its output."""
    def fwd(x):
        y = forward(x)
        return y, y
    return fwd


VARIANTS = {
    "relu": {
        "1 naive serial": (_flat_unary(_relu_fwd_serial), _flat_binary(_relu_bwd_serial)),
        "2 prange flat (tn)": (lambda x: (cpu.relu_forward(x), x), cpu.relu_backward),
        "3 prange, uint8 mask": (relu_fwd_v3, _flat_binary(_relu_bwd_mask)),
    },
    "leaky_relu": {
        "1 naive serial": (leaky_fwd_v1, leaky_bwd_v1),
        "2 prange flat (tn)": (lambda x: (cpu.leaky_relu_forward(x, SLOPE), x),
                               lambda x, dy: cpu.leaky_relu_backward(x, dy, SLOPE)),
    },
    "sigmoid": {
        "1 naive serial": (_flat_unary_cache_y(_sigmoid_fwd_serial),
                           _flat_binary(_sigmoid_bwd_serial)),
        "2 prange flat, libm exp": (_flat_unary_cache_y(_sigmoid_fwd_libm),
                                    cpu.sigmoid_backward),
        "3 vector exp, float64": (_flat_unary_cache_y(_sigmoid_fwd_vec64), cpu.sigmoid_backward),
        "4 vector exp, x dtype (tn)": (_cache_y(cpu.sigmoid_forward), cpu.sigmoid_backward),
    },
    "tanh": {
        "1 naive serial": (_flat_unary_cache_y(_tanh_fwd_serial), _flat_binary(_tanh_bwd_serial)),
        "2 prange flat, libm tanh": (_flat_unary_cache_y(_tanh_fwd_libm), cpu.tanh_backward),
        "3 vector expm1, float64": (_flat_unary_cache_y(_tanh_fwd_vec64), cpu.tanh_backward),
        "4 vector expm1, x dtype (tn)": (_cache_y(cpu.tanh_forward), cpu.tanh_backward),
    },
    "gelu": {
        "1 naive serial": (_flat_unary(_gelu_fwd_serial), _flat_binary(_gelu_bwd_serial)),
        "2 prange flat, libm erf": (_flat_unary(_gelu_fwd_libm), _flat_binary(_gelu_bwd_libm)),
        "3 erfcc + vector exp, f64": (gelu_fwd_v3, gelu_bwd_v3),
        "4 erfcc, x dtype (tn)": (lambda x: (cpu.gelu_forward(x), x), cpu.gelu_backward),
    },
}

REF = {
    "relu": (ref.relu_forward, lambda x, y, dy: ref.relu_backward(x, dy)),
    "leaky_relu": (lambda x: ref.leaky_relu_forward(x, SLOPE),
                   lambda x, y, dy: ref.leaky_relu_backward(x, dy, SLOPE)),
    "sigmoid": (ref.sigmoid_forward, lambda x, y, dy: ref.sigmoid_backward(y, dy)),
    "tanh": (ref.tanh_forward, lambda x, y, dy: ref.tanh_backward(y, dy)),
    "gelu": (ref.gelu_forward, lambda x, y, dy: ref.gelu_backward(x, dy)),
}

LAYERS = {
    "relu": (lambda: tn.ReLU(), lambda torch: torch.nn.ReLU()),
    "leaky_relu": (lambda: tn.LeakyReLU(SLOPE), lambda torch: torch.nn.LeakyReLU(SLOPE)),
    "sigmoid": (lambda: tn.Sigmoid(), lambda torch: torch.nn.Sigmoid()),
    "tanh": (lambda: tn.Tanh(), lambda torch: torch.nn.Tanh()),
    "gelu": (lambda: tn.GELU(), lambda torch: torch.nn.GELU()),
}


# Softmax along axis 1 ------------------------------------------------------------

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


def _axis1(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def softmax_fwd_v1(x):
    y = np.empty_like(x)
    _softmax_fwd_serial(_axis1(x), _axis1(y))
    return y, y


def softmax_bwd_v1(y, dy):
    dx = np.empty_like(dy)
    _softmax_bwd_serial(_axis1(y), _axis1(dy), _axis1(dx))
    return dx


def softmax_fwd_v2(x):
    y = np.empty_like(x)
    _softmax_fwd_libm(_axis1(x), _axis1(y), 256)
    return y, y


SOFTMAX_VARIANTS = {
    "1 naive serial": (softmax_fwd_v1, softmax_bwd_v1),
    "2 prange blocks, libm exp": (softmax_fwd_v2, lambda y, dy: cpu.softmax_backward(y, dy, 1)),
    "3 vector exp, x dtype (tn)": (_cache_y(lambda x: cpu.softmax_forward(x, 1)),
                                   lambda y, dy: cpu.softmax_backward(y, dy, 1)),
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


def xent_fwd_v1(logits, labels, eps):
    probs = np.empty_like(logits)
    return _xent_fwd_serial(logits, labels, eps, probs), probs


def xent_bwd_v1(probs, labels, eps):
    dlogits = np.empty_like(probs)
    _xent_bwd_serial(probs, labels, eps, dlogits)
    return dlogits


XENT_VARIANTS = {
    "1 naive serial": (xent_fwd_v1, xent_bwd_v1),
    "2 prange rows (tn)": (cpu.softmax_xent_forward, cpu.softmax_xent_backward),
}


# check -------------------------------------------------------------------------------

def _close(name, got, want, dtype):
    tol = 2e-6 if dtype == np.float32 else 1e-12
    assert got.dtype == dtype, name
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def check():
    rng = np.random.default_rng(0)
    for shape in [(3, 7, 5, 3), (1001,), (2, 5, 1)]:
        for dtype in (np.float32, np.float64):
            x = (3 * rng.standard_normal(shape)).astype(dtype)
            x.flat[0] = np.nan
            dy = rng.standard_normal(shape).astype(dtype)
            for op, variants in VARIANTS.items():
                ref_fwd, ref_bwd = REF[op]
                x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
                y_ref = ref_fwd(x64)
                dx_ref = ref_bwd(x64, y_ref, dy64)
                for name, (fwd, bwd) in variants.items():
                    y, cache = fwd(x)
                    _close(f"{op} {name} y {shape}", y, y_ref, dtype)
                    _close(f"{op} {name} dx {shape}", bwd(cache, dy), dx_ref, dtype)
    for shape in [(13, 7), (3, 5, 4, 3), (2, 3, 300)]:
        for dtype in (np.float32, np.float64):
            x = (3 * rng.standard_normal(shape)).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            y_ref = ref.softmax_forward(x.astype(np.float64), 1)
            dx_ref = ref.softmax_backward(y_ref, dy.astype(np.float64), 1)
            for name, (fwd, bwd) in SOFTMAX_VARIANTS.items():
                y, cache = fwd(x)
                _close(f"softmax {name} y {shape}", y, y_ref, dtype)
                _close(f"softmax {name} dx {shape}", bwd(cache, dy), dx_ref, dtype)
    for eps in (0.0, 0.1):
        for dtype in (np.float32, np.float64):
            logits = (3 * rng.standard_normal((13, 7))).astype(dtype)
            labels = rng.integers(0, 7, 13)
            loss_ref, p_ref = ref.softmax_xent_forward(logits.astype(np.float64), labels, eps)
            d_ref = ref.softmax_xent_backward(p_ref, labels, eps)
            for name, (fwd, bwd) in XENT_VARIANTS.items():
                loss, p = fwd(logits, labels, eps)
                assert abs(loss - loss_ref) <= 1e-6 * abs(loss_ref), (name, loss, loss_ref)
                _close(f"xent {name} p", p, p_ref, dtype)
                _close(f"xent {name} dlogits", bwd(p, labels, eps), d_ref, dtype)


# bench -------------------------------------------------------------------------------

def _race(fns, rounds=5, repeat=15):
    """Median over rounds of each fn's median time; the fns take turns each round,
    so a burst of load from another process hits them alike."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_time(fn, repeat=repeat))
    return {name: statistics.median(t) for name, t in times.items()}


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


def _bench_family(rows, label, variants, x, dy, torch_module, layer):
    """Race every variant's fwd, bwd and fwd+bwd, torch's, and the public layer's."""
    torch = try_torch()
    fns = {}
    for name, (fwd, bwd) in variants.items():
        cache = fwd(x)[1]
        fns[(name, "fwd")] = lambda fwd=fwd: fwd(x)
        fns[(name, "bwd")] = lambda bwd=bwd, cache=cache: bwd(cache, dy)
        # y stays alive through the backward pass, as in a network.
        fns[(name, "fwd+bwd")] = lambda fwd=fwd, bwd=bwd: (
            lambda yc: (yc[0], bwd(yc[1], dy)))(fwd(x))
    if torch is not None:
        for part, fn in _torch_fns(torch, torch_module(torch), x, dy).items():
            fns[("torch", part)] = fn
    fns[("layer", "fwd+bwd")] = _layer_fn(layer, x, dy)
    t = _race(fns)
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
    t = _race(fns, repeat=200)
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
        make_layer, torch_module = LAYERS[op]
        _bench_family(rows, op, variants, x, dy, torch_module, make_layer())
    _bench_family(rows, "softmax dim=1", SOFTMAX_VARIANTS, x, dy,
                  lambda torch: torch.nn.Softmax(dim=1), tn.Softmax(dim=1))
    x2 = rng.standard_normal(SOFTMAX_2D_SHAPE).astype(np.float32)
    dy2 = rng.standard_normal(SOFTMAX_2D_SHAPE).astype(np.float32)
    _bench_family(rows, "softmax (256,1000)", SOFTMAX_VARIANTS, x2, dy2,
                  lambda torch: torch.nn.Softmax(dim=1), tn.Softmax(dim=1))
    _bench_xent(rows)
    return rows


if __name__ == "__main__":
    lab_main("elementwise", check, bench)
