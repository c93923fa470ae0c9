"""GPU lab: launch overhead, microseconds per numba.cuda kernel launch.

A small-CNN training step is dozens of launches, so the host-side cost of
one launch bounds the step time at small batches. Timed by the wall clock
over ``LAUNCHES`` back-to-back launches of a kernel on a 1-element array,
then one synchronize (the GPU finishes each tiny kernel faster than the host
issues the next, so this is the host's cost per launch):

1. lazy: ``numba.cuda.jit`` without a signature, as the cuda backend's
   kernels (compiled on first launch; every launch types its arguments and
   looks up the specialization);
2. explicit signature: ``numba.cuda.jit("void(float32[::1], float32)")``;
3. a cuda backend op, ``relu_forward`` of a 1-element array: the launch plus
   the output allocation and the op's checks, through CuPy's launcher
   (``TINYNET_CUDA_LAUNCHER=cupy``, the backend's default: every launch
   after a kernel's first; cuda_device.CupyLaunched);
4. the same op on numba's launcher (``TINYNET_CUDA_LAUNCHER=numba``);
5. a CuPy elementwise kernel (``cupy.multiply(a, 2, out=a)``) for scale.

    python -m kernels.gpu_launch --check    # also under NUMBA_ENABLE_CUDASIM=1
    python -m kernels.gpu_launch --bench    # a GPU
"""
import functools
import time

import numpy as np
from numba import cuda

from kernels.common import GpuRow, assert_close, lab_main, sync
from tinynet.backends import cuda as tcuda
from tinynet.backends import cuda_device, ref

LAUNCHES = 2000


def _scale(a, s):
    # Parallel axis: the flat index; each thread writes its own a[i].
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] *= s


_lazy = cuda.jit(_scale)


@functools.lru_cache(maxsize=1)
def _explicit():
    """_scale compiled for its one signature (eagerly, so at first use, not at import)."""
    return cuda.jit("void(float32[::1], float32)")(_scale)


def _per_launch(fn, launches):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(launches):
        fn()
    sync()
    return (time.perf_counter() - t0) / launches


def _on_launcher(name, fn):
    """``fn`` with the cuda backend's kernels on launcher ``name`` ("cupy" or "numba")."""
    def run():
        with cuda_device.use_launcher(name):
            return fn()
    return run


def _variants(a):
    import cupy as cp
    explicit = _explicit()
    relu = lambda: tcuda.relu_forward(a)  # noqa: E731
    return [("1 numba.cuda.jit, lazy", lambda: _lazy[1, 32](a, np.float32(1.0))),
            ("2 numba.cuda.jit, explicit signature",
             lambda: explicit[1, 32](a, np.float32(1.0))),
            ("3 tinynet relu_forward (launch + alloc), CuPy's launcher",
             _on_launcher("cupy", relu)),
            ("4 tinynet relu_forward (launch + alloc), numba's launcher",
             _on_launcher("numba", relu)),
            ("5 CuPy elementwise", lambda: cp.multiply(a, 2, out=a))]


def check():
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    for name, kernel in (("lazy", _lazy), ("explicit", _explicit())):
        a = tcuda.to_device(x)
        kernel[1, 4](a, np.float32(2.0))
        assert_close(a, 2 * x, name)
    for launcher in cuda_device.LAUNCHERS:
        y = _on_launcher(launcher, lambda: tcuda.relu_forward(tcuda.to_device(x)))()
        assert_close(y, ref.relu_forward(x), f"relu_forward, {launcher}'s launcher")


def bench():
    a = tcuda.to_device(np.ones(1, np.float32))
    return [GpuRow("launch, 1 element", f"{name} [us/launch: {1e6 * s:.1f}]", s)
            for name, fn in _variants(a) for s in [_per_launch(fn, LAUNCHES)]]


def main(argv=None):
    return lab_main("gpu_launch", check, bench, argv, device="cuda")


if __name__ == "__main__":
    main()
