"""Kernel lab: the optimizer steps, SGD (momentum, Nesterov, weight decay) and
Adam / AdamW, as fused in-place kernels.

The ops, their math (torch.optim's formulas) and the per-element update
that every kernel here runs are in tinynet/ops/optim/__init__.py; the
reference is tinynet.backends.ref. The ref runs each line of the math as a
NumPy expression: a pass over memory per line, and a temporary per
expression. A fused kernel reads each array once and writes each updated one
once. The arithmetic runs in the parameter's dtype with scalars of that
dtype, as torch's CPU kernels do.

Variants (numbered in SGD_VARIANTS and ADAM_VARIANTS), each called once per
parameter, as ``Optimizer.step`` does. Each is a loop over the flat arrays
whose body is the contract's element update (``sgd_update``,
``adam_update``), inlined:

- serial, division checked: a serial Numba loop compiled with Python's error
  model, which checks every float division for a zero divisor (to raise
  ZeroDivisionError); that branch keeps LLVM from vectorizing Adam's loop.
  SGD has no division: its serial loop vectorizes as it is.
- serial: the same loop with ``error_model="numpy"``: a division by zero
  gives inf or NaN as in IEEE arithmetic (as in torch), and the loop
  vectorizes.
- parallel: the serial loop with prange over the elements (numba hands each
  thread one contiguous block).
- tinynet: the cpu backend's op (tinynet.backends.cpu), promoted from here:
  the serial loop below ``tinynet.ops.optim.cpu.SERIAL_BELOW`` elements,
  where waking the thread pool costs more than the work, the parallel one
  above.

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
import numba
import numpy as np

from kernels.common import Row, lab_main, median_time, try_torch
from tinynet.backends import cpu, ref
from tinynet.backends.cpu_jit import njit_kernel
from tinynet.ops import optim
from tinynet.ops.optim import cases

SHAPES = [(32, 1, 3, 3), (32,), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (64,),
          (128, 3136), (128,), (10, 128), (10,)]

sgd_element = njit_kernel(inline="always")(optim.sgd_update)
adam_element = njit_kernel(inline="always")(optim.adam_update)


def sgd_loop(p, g, buf, lr, momentum, weight_decay, has_buf, nesterov):
    # Parallel axis (when compiled with parallel=True; prange is range
    # otherwise): elements, and iteration e writes only p[e] and buf[e].
    for e in numba.prange(p.size):
        sgd_element(p, g, buf, e, lr, momentum, weight_decay, weight_decay != 0, has_buf,
                    nesterov)


def adam_loop(p, g, m, v, shrink, l2, one_minus_beta1, beta2, one_minus_beta2, neg_step_size,
              bias_correction2_sqrt, eps):
    # Parallel axis (when compiled with parallel=True; prange is range
    # otherwise): elements, and iteration e writes only p[e], m[e] and v[e].
    for e in numba.prange(p.size):
        adam_element(p, g, m, v, e, shrink, l2, one_minus_beta1, beta2, one_minus_beta2,
                     neg_step_size, bias_correction2_sqrt, eps, l2 != 0)


def compiled(loop, **options):
    """``loop`` compiled with njit_kernel's flags and ``options``; not cached on
    disk, since numba's cache would not tell apart compiles of one function
    that differ only in options."""
    return njit_kernel(cache=False, **options)(loop)


def sgd_with(loop):
    """An ``sgd_step`` (the op's arguments) that runs ``loop`` on flat views."""
    def step(param, grad, buf, lr, momentum, weight_decay, nesterov):
        dt = param.dtype.type
        has_buf = buf is not None
        buf = buf.reshape(-1) if has_buf else np.empty(0, param.dtype)
        loop(param.reshape(-1), grad.reshape(-1), buf, dt(lr), dt(momentum), dt(weight_decay),
             has_buf, bool(nesterov))
    return step


def adam_with(loop):
    """An ``adam_step`` (the op's arguments) that runs ``loop`` on flat views."""
    def step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        scalars = optim.adam_scalars(param.dtype, int(step), float(lr), float(beta1),
                                     float(beta2), float(eps), float(weight_decay),
                                     bool(decoupled))
        loop(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), *scalars)
    return step


SGD_VARIANTS = {"1 serial": sgd_with(compiled(sgd_loop)),
                "3 parallel": sgd_with(compiled(sgd_loop, parallel=True)),
                "4 tinynet": cpu.sgd_step}
ADAM_VARIANTS = {"1 serial, division checked": adam_with(compiled(adam_loop,
                                                                  error_model="python")),
                 "2 serial": adam_with(compiled(adam_loop)),
                 "3 parallel": adam_with(compiled(adam_loop, parallel=True)),
                 "4 tinynet": cpu.adam_step}

STEPS = 3


def _tol(dtype):
    """A float32 or float64 result against the float64 reference."""
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


def check():
    rng = np.random.default_rng(0)
    for case in cases.SHAPES:
        for dtype in (np.float32, np.float64):
            for options in cases.SGD:
                kw = options.kwargs()
                for name, step_fn in SGD_VARIANTS.items():
                    p, g, buf = (rng.standard_normal(case.shape) for _ in range(3))
                    use_buf = options.momentum != 0
                    pd, bufd = p.astype(dtype), buf.astype(dtype)
                    for _ in range(STEPS):
                        ref.sgd_step(p, g, buf if use_buf else None, **kw)
                        step_fn(pd, g.astype(dtype), bufd if use_buf else None, **kw)
                    assert pd.dtype == dtype
                    np.testing.assert_allclose(pd, p, **_tol(dtype),
                                               err_msg=f"sgd {name} {options.name} {case.name}")
            for options in cases.ADAM:
                kw = options.kwargs()
                for name, step_fn in ADAM_VARIANTS.items():
                    p, g = (rng.standard_normal(case.shape) for _ in range(2))
                    m, v = np.zeros_like(p), np.zeros_like(p)
                    pd, md, vd = (a.astype(dtype) for a in (p, m, v))
                    for t in range(1, STEPS + 1):
                        ref.adam_step(p, g, m, v, t, **kw)
                        step_fn(pd, g.astype(dtype), md, vd, t, **kw)
                    for a, want, what in ((pd, p, "p"), (md, m, "m"), (vd, v, "v")):
                        assert a.dtype == dtype
                        np.testing.assert_allclose(
                            a, want, **_tol(dtype),
                            err_msg=f"adam {name} {options.name} {case.name} {what}")


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


def main(argv=None):
    lab_main("optim", check, bench, argv)


if __name__ == "__main__":
    main()
