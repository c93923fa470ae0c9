"""Every cuda kernel compiles to PTX for cc 8.0 and 9.0 and assembles to SASS
without spills and within the shared memory of a block (``kernels/ptx.py``).

Runs in the PTX mode of .ci/run (TINYNET_PTX_CHECK=1), which installs the
ptxas of numba-cuda's toolkit version; it needs no GPU and must run without
the simulator.
"""
import os

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("TINYNET_PTX_CHECK") != "1" or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
    reason="PTX/SASS check: run with TINYNET_PTX_CHECK=1 and without NUMBA_ENABLE_CUDASIM "
           "(pip install 'numba-cuda[cu13]' nvidia-cuda-nvcc==13.5.37; see .ci/run)")


def test_every_kernel_assembles_without_spills_for_cc80_and_cc90():
    from kernels import ptx
    from tinynet.backends import cuda_device as device
    rows = ptx.kernel_resources()
    built = {(r["kernel"], r["signature"], r["arch"]) for r in rows}
    for k in device.KERNELS:
        name, templates = k.name, k.signatures
        for sig in device.signatures_of(templates):
            for arch in ("sm_80", "sm_90"):
                assert (name, sig, arch) in built, f"{name} {sig} {arch} was not built"
    assert all(r["registers"] > 0 for r in rows)
    assert ptx.problems(rows) == []


def test_problems_flags_spills_and_shared_memory():
    from kernels import ptx
    row = dict(module="m", kernel="k", signature="void()", arch="sm_90", registers=255,
               smem=ptx.SHARED_PER_BLOCK + 1, stack=0, spill_stores=8, spill_loads=0)
    assert len(ptx.problems([row])) == 2


def test_kernels_compile_under_a_numpy_without_row_stack():
    """numpy 2.5 removed np.row_stack, which numba-cuda 0.30.4's typing registries
    overload at the first compile; importing the cuda backend gives it back, so a
    kernel compiles. The numpy here may still have it: the child deletes it first."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np
        if "row_stack" in vars(np):
            del np.row_stack
        import tinynet.backends.cuda_device
        from numba import cuda

        def fill(a):
            i = cuda.grid(1)
            if i < a.size:
                a[i] = 1.0
        ptx, _ = cuda.compile_ptx(fill, "void(float32[::1])", cc=(9, 0))
        print("compiled", ".entry" in ptx)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["compiled", "True"]


class _StandIn:
    """An array as flat_kernel_args reads it (a CuPy array's attributes), for a
    numba Array type: no GPU needed."""

    class _Data:
        ptr = 0x7F0000000000

    def __init__(self, ty):
        import numpy as np
        self.shape = (3,) * ty.ndim
        self.itemsize = np.dtype(str(ty.dtype)).itemsize
        self.size = 3 ** ty.ndim
        self.strides = tuple(self.itemsize * 3 ** (ty.ndim - 1 - i) for i in range(ty.ndim))
        self.data = self._Data()


def test_cupy_launches_pass_the_parameters_numba_compiled():
    """For every kernel and declared signature, the parameters that CuPy's launcher
    is given (flat_kernel_args) match the PTX entry's .param list one for one in
    width and in float or integer kind, the ABI numba compiled the kernel for."""
    import re

    from numba import cuda
    from numba.core import sigutils
    from kernels import ptx
    device = ptx._kernels()
    checked = 0
    for k in device.KERNELS:
        for sig in device.signatures_of(k.signatures):
            argtypes = sigutils.normalize_signature(sig)[0]
            packers = [device.arg_packer(t) for t in argtypes]
            assert None not in packers, f"{k.name} {sig}: a type CuPy's launcher cannot pass"
            values = [_StandIn(t) if p == "array" else 1 for t, p in zip(argtypes, packers)]
            flat = device.flat_kernel_args(packers, values)
            text, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
            entry = re.search(r"\.entry\s+\S+\((.*?)\)", text, re.S).group(1)
            params = re.findall(r"\.param\s+\.([a-z])(\d+)", entry)
            assert len(params) == len(flat), f"{k.name} {sig}: {len(params)} != {len(flat)}"
            for i, ((kind, bits), value) in enumerate(zip(params, flat)):
                want = ("f" if kind == "f" else "i", int(bits) // 8)
                got = ("f" if value.dtype.kind == "f" else "i", value.dtype.itemsize)
                assert got == want, f"{k.name} {sig} parameter {i}: {got} != .{kind}{bits}"
            checked += 1
    assert checked >= 80


def test_every_cuda_kernel_cache_is_keyed_by_the_files_it_calls_into():
    """Each kernel's disk cache (cuda_device.kernel_cache) adds jit_cache's digest of
    the device functions it calls from other files to numba-cuda's index key, so an
    edit to cuda_reduce.py or an op family's element update recompiles it."""
    from kernels import ptx
    from tinynet.backends import jit_cache
    device = ptx._kernels()

    class Codegen:
        def magic_tuple(self):
            return ("nvptx64-nvidia-cuda", "sm_90", "")
    for k in device.KERNELS:
        cache = k.dispatcher._cache
        assert isinstance(cache, jit_cache.DependencyKeyed), k.name
        key = cache._index_key((), Codegen())
        assert key[-1] == ("dependencies", jit_cache.dependency_digest(k.py_func)), k.name
    reached = {k.name: [f.split("tinynet/")[-1] for f in jit_cache.dependency_files(k.py_func)]
               for k in device.KERNELS}
    assert "backends/cuda_reduce.py" in reached["_set_moments"]
    assert "ops/optim/__init__.py" in reached[next(n for n in reached if "adam" in n)]
