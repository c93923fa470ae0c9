"""Kernel lab: the optimizer steps, SGD (momentum, Nesterov, weight decay) and
Adam / AdamW, as fused in-place kernels.

The ops (tinynet.backends.ref.optim, the reference; torch.optim's formulas):

    SGD:   g = grad + wd * p;  buf = momentum * buf + g;
           g = g + momentum * buf (nesterov) or g = buf;  p = p - lr * g
    Adam:  g = grad + wd * p (Adam) or p = p * (1 - lr * wd) (AdamW);
           m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g;
           p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The ref runs each line as a NumPy expression: a pass over memory per line,
and a temporary per expression. A fused kernel reads each array once and
writes each updated one once. The arithmetic runs in the parameter's dtype
with scalars of that dtype, as torch's CPU kernels do.

Variants, each called once per parameter, as ``Optimizer.step`` does:

1. naive port: a serial Numba loop per parameter, everything in one pass.
   Numba's default error model checks every float division for a zero
   divisor (to raise ZeroDivisionError), and that branch keeps LLVM from
   vectorizing Adam's loop.
2. the same loop with ``error_model="numpy"``: a division by zero gives
   inf or NaN as in IEEE arithmetic (as in torch), and the loop vectorizes.
   SGD has no division: its variant 1 already vectorizes and stands for 2.
3. parallel: 2 with prange over the elements (numba hands each thread one
   contiguous block).
4. size dispatch: 2 below 65536 elements, where waking the thread pool
   costs more than the work, 3 above.

One launch for all parameters? Outside the kernel, a call costs about 3 us
(checks, flat views, the scalars, numba's dispatch; tinynet caches Adam's
scalars once per step), plus about 10 us to wake the thread pool for the one
large array: some 50 us over the 12 arrays below, next to the 150-250 us of
the kernels and the many milliseconds of the rest of a training step
(python -m kernels.step). One launch would need every parameter inside one
flat buffer (Parameter.data as views into it, broken as soon as a layer or
.to() replaces an array) or a numba typed List rebuilt whenever an array is
replaced. The gain does not pay for that contract: one call per parameter.

The workload is the reference CNN's parameter set (conv 32x1x3x3, 32;
BatchNorm 32, 32; conv 64x32x3x3, 64; BatchNorm 64, 64; dense 128x3136, 128;
dense 10x128, 10: 421,834 parameters in 12 arrays), float32, one full step
over all of them.

Floor (bytes each step must move): Adam reads p, g, m, v and writes p, m, v
(7 arrays); SGD with momentum reads p, g, buf and writes p, buf (5); plain
SGD reads p, g and writes p (3).

torch: torch.optim.SGD / Adam / AdamW on CPU tensors with the same options,
timed with its default (a for-loop of tensor ops per parameter on CPU),
foreach=True (one multi-tensor call per op) and fused=True (one fused kernel
per parameter); the ratio column compares with the fastest of the three.
The row "tn.optim.<name>.step (cpu)" is the public API: the Optimizer's
Python loop and checks around the promoted kernels.

    python -m kernels.optim --check     every variant against the reference
    python -m kernels.optim --bench     timings, % of floor, torch beside them
"""
import numpy as np
import numba

from tinynet.backends import ref
from kernels.common import Row, lab_main, median_time, try_torch
from tinynet.backends.cpu.jit import njit_kernel

SHAPES = [(32, 1, 3, 3), (32,), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (64,),
          (128, 3136), (128,), (10, 128), (10,)]
SERIAL_BELOW = 65536


@njit_kernel()
def _sgd_serial(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    for e in range(p.size):
        d = g[e]
        if weight_decay != 0:
            d = d + weight_decay * p[e]
        if has_buf:
            b = momentum * buf[e] + d
            buf[e] = b
            d = d + momentum * b if nesterov else b
        p[e] = p[e] - lr * d


@njit_kernel(parallel=True)
def _sgd_parallel(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e] and buf[e].
    for e in numba.prange(p.size):
        d = g[e]
        if weight_decay != 0:
            d = d + weight_decay * p[e]
        if has_buf:
            b = momentum * buf[e] + d
            buf[e] = b
            d = d + momentum * b if nesterov else b
        p[e] = p[e] - lr * d


@njit_kernel(error_model="python")
def _adam_serial_checked(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2,
                         one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps):
    for e in range(p.size):
        d = g[e]
        q = p[e] * shrink
        if weight_decay != 0:
            d = d + weight_decay * q
        mm = m[e] + one_minus_beta1 * (d - m[e])
        vv = beta2 * v[e] + one_minus_beta2 * d * d
        m[e] = mm
        v[e] = vv
        p[e] = q + neg_step_size * mm / (np.sqrt(vv) / bias_correction2_sqrt + eps)


@njit_kernel(error_model="numpy")
def _adam_serial(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                 neg_step_size, bias_correction2_sqrt, eps):
    for e in range(p.size):
        d = g[e]
        q = p[e] * shrink
        if weight_decay != 0:
            d = d + weight_decay * q
        mm = m[e] + one_minus_beta1 * (d - m[e])
        vv = beta2 * v[e] + one_minus_beta2 * d * d
        m[e] = mm
        v[e] = vv
        p[e] = q + neg_step_size * mm / (np.sqrt(vv) / bias_correction2_sqrt + eps)


@njit_kernel(parallel=True, error_model="numpy")
def _adam_parallel(p, g, m, v, shrink, weight_decay, one_minus_beta1, beta2, one_minus_beta2,
                   neg_step_size, bias_correction2_sqrt, eps):
    # Parallel axis: elements; numba gives each thread one contiguous block,
    # and iteration e writes only p[e], m[e] and v[e].
    for e in numba.prange(p.size):
        d = g[e]
        q = p[e] * shrink
        if weight_decay != 0:
            d = d + weight_decay * q
        mm = m[e] + one_minus_beta1 * (d - m[e])
        vv = beta2 * v[e] + one_minus_beta2 * d * d
        m[e] = mm
        v[e] = vv
        p[e] = q + neg_step_size * mm / (np.sqrt(vv) / bias_correction2_sqrt + eps)


def _sgd_args(param, buf, lr, momentum, weight_decay, nesterov):
    dt = param.dtype.type
    has_buf = buf is not None
    buf = buf.reshape(-1) if has_buf else np.empty(0, param.dtype)
    return buf, dt(lr), dt(momentum), dt(weight_decay), has_buf, bool(nesterov)


def _adam_args(param, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """The scalars of one step, computed in float64 (as torch) and cast to the
    parameter's dtype. AdamW's decay becomes shrink = 1 - lr * wd on p, Adam's
    an L2 term wd * p on g; the unused one is 1 or 0."""
    dt = param.dtype.type
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    shrink = 1 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    return (dt(shrink), dt(l2), dt(1 - beta1), dt(beta2), dt(1 - beta2),
            dt(-lr / bias_correction1), dt(bias_correction2_sqrt), dt(eps))


def sgd_v1(param, grad, buf, lr, momentum, weight_decay, nesterov):
    _sgd_serial(param.reshape(-1), grad.reshape(-1),
                *_sgd_args(param, buf, lr, momentum, weight_decay, nesterov))


def sgd_v3(param, grad, buf, lr, momentum, weight_decay, nesterov):
    _sgd_parallel(param.reshape(-1), grad.reshape(-1),
                  *_sgd_args(param, buf, lr, momentum, weight_decay, nesterov))


def sgd_v4(param, grad, buf, lr, momentum, weight_decay, nesterov):
    if param.size < SERIAL_BELOW:
        sgd_v1(param, grad, buf, lr, momentum, weight_decay, nesterov)
    else:
        sgd_v3(param, grad, buf, lr, momentum, weight_decay, nesterov)


def adam_v1(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    _adam_serial_checked(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                         *_adam_args(param, step, lr, beta1, beta2, eps, weight_decay,
                                     decoupled))


def adam_v2(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    _adam_serial(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                 *_adam_args(param, step, lr, beta1, beta2, eps, weight_decay, decoupled))


def adam_v3(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    _adam_parallel(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                   *_adam_args(param, step, lr, beta1, beta2, eps, weight_decay, decoupled))


def adam_v4(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    if param.size < SERIAL_BELOW:
        adam_v2(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
    else:
        adam_v3(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


SGD_VARIANTS = {"1 serial": sgd_v1, "3 parallel": sgd_v3, "4 size dispatch": sgd_v4}
ADAM_VARIANTS = {"1 serial, division checked": adam_v1, "2 serial": adam_v2,
                 "3 parallel": adam_v3, "4 size dispatch": adam_v4}

SGD_OPTIONS = [dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False),
               dict(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False),
               dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
               dict(lr=0.1, momentum=0.0, weight_decay=0.1, nesterov=False)]
ADAM_OPTIONS = [dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                     decoupled=False),
                dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1,
                     decoupled=False),
                dict(lr=1e-2, beta1=0.5, beta2=0.9, eps=1e-8, weight_decay=0.3,
                     decoupled=True)]


def _arrays(rng, shape, dtype, count):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


def check():
    rng = np.random.default_rng(0)
    for shape in [(7,), (3, 5, 11), (0,), (SERIAL_BELOW + 123,), (263, 257)]:
        for dtype in (np.float32, np.float64):
            tol = 1e-5 if dtype == np.float32 else 1e-13
            for kw in SGD_OPTIONS:
                for name, step_fn in SGD_VARIANTS.items():
                    p, g, buf = _arrays(rng, shape, dtype, 3)
                    p_ref, buf_ref = p.copy(), buf.copy()
                    use_buf = kw["momentum"] != 0
                    for _ in range(3):
                        ref.sgd_step(p_ref, g, buf_ref if use_buf else None, **kw)
                        step_fn(p, g, buf if use_buf else None, **kw)
                    np.testing.assert_allclose(p, p_ref, rtol=tol, atol=tol,
                                               err_msg=f"sgd {name} {kw}")
                    assert p.dtype == dtype
            for kw in ADAM_OPTIONS:
                for name, step_fn in ADAM_VARIANTS.items():
                    p, g = _arrays(rng, shape, dtype, 2)
                    m, v = np.zeros_like(p), np.zeros_like(p)
                    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
                    for t in range(1, 4):
                        ref.adam_step(p_ref, g, m_ref, v_ref, t, **kw)
                        step_fn(p, g, m, v, t, **kw)
                    for got, want, what in ((p, p_ref, "p"), (m, m_ref, "m"), (v, v_ref, "v")):
                        np.testing.assert_allclose(got, want, rtol=tol, atol=tol,
                                                   err_msg=f"adam {name} {kw} {what}")
                        assert got.dtype == dtype


def _torch_step_time(torch, cls, options, impl, values, grads):
    """Median time of one torch optimizer step over the parameter set."""
    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g)
    opt = cls(params, **options, **impl)
    return median_time(opt.step, repeat=30)


def _model_step(step_fn, params, grads, states, kw, adam):
    """One step of ``step_fn`` over every parameter, as Optimizer.step runs it."""
    def run():
        for p, g, state in zip(params, grads, states):
            if adam:
                step_fn(p, g, *state, 10, **kw)
            else:
                step_fn(p, g, state, **kw)
    return run


def _public_step(optimizer_name, options, values, grads):
    """One step through the public API (tn.optim on the cpu backend)."""
    import tinynet as tn
    params = [tn.Parameter(v) for v in values]
    for p, g in zip(params, grads):
        p.grad[...] = g
    with tn.use_backend("cpu"):
        optimizer = getattr(tn.optim, optimizer_name)(params, **options)
        return median_time(optimizer.step, repeat=30)


def bench():
    rng = np.random.default_rng(0)
    torch = try_torch()
    dtype = np.float32
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    n = sum(v.size for v in values)
    rows = []
    impls = {"torch default": {}, "torch foreach": {"foreach": True},
             "torch fused": {"fused": True}}
    # (label, arrays moved, op options, optimizer name, its options)
    cases = [
        ("SGD", 3, dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False),
         "SGD", dict(lr=0.1)),
        ("SGD momentum nesterov wd", 5,
         dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
         "SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)),
        ("Adam", 7, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                         decoupled=False),
         "Adam", dict(lr=1e-3)),
        ("AdamW wd", 7, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2,
                             decoupled=True),
         "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    ]
    for label, arrays, kw, name, options in cases:
        floor = arrays * n * np.dtype(dtype).itemsize
        t_torch = {}
        if torch is not None:
            for impl_name, impl in impls.items():
                t_torch[impl_name] = _torch_step_time(torch, getattr(torch.optim, name),
                                                      options, impl, values, grads)
        t_best_torch = min(t_torch.values()) if t_torch else None
        params = [v.copy() for v in values]
        adam = name.startswith("Adam")
        if adam:
            states = [(np.zeros_like(v), np.zeros_like(v)) for v in values]
            variants = {"0 ref (numpy)": ref.adam_step, **ADAM_VARIANTS}
        else:
            states = [np.zeros_like(v) if kw["momentum"] else None for v in values]
            variants = {"0 ref (numpy)": ref.sgd_step, **SGD_VARIANTS}
        for variant, step_fn in variants.items():
            run = _model_step(step_fn, params, grads, states, kw, adam)
            rows.append(Row(label, variant, median_time(run, repeat=30), floor,
                            torch_seconds=t_best_torch))
        rows.append(Row(label, f"tn.optim.{name}.step (cpu)",
                        _public_step(name, options, values, grads), floor,
                        torch_seconds=t_best_torch))
        for impl_name, seconds in t_torch.items():
            rows.append(Row(label, impl_name, seconds, floor))
    return rows


if __name__ == "__main__":
    lab_main("optim", check, bench)
