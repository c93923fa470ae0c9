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
