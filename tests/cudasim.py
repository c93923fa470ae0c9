"""Helpers of the cuda backend's tests (every test marked ``cuda``).

The tests run the cuda kernels on a GPU when one is usable, and otherwise
under numba's CUDA simulator, which must be switched on before numba is
imported, so it cannot be turned on from inside a test run:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda

With neither, these tests are skipped, and say so (``requires_cuda``).
``small_blocks`` patches the block sizes and the grid cap small, so that the
tiny shapes span several blocks, are not multiples of a block, and every
grid-stride loop runs more than once: under the simulator, which runs each
GPU thread as a Python thread, blocks of 8 threads and reductions of 4 (a
shared-memory tree); on a GPU, reductions of 64 threads (two warps, so the
warp-shuffle path and its cross-warp step both run).
"""
import os

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"



def _cuda_runs():
    """True when the cuda backend can run here: the simulator, or a usable GPU."""
    if SIMULATOR:
        return True
    from tinynet.backends import cuda
    try:
        cuda.check_available()
    except RuntimeError:
        return False
    return True


requires_cuda = pytest.mark.skipif(
    not _cuda_runs(),
    reason="cuda backend test: needs a GPU, or the CUDA simulator set before numba is "
           "imported (NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda)")
requires_cudasim = pytest.mark.skipif(
    not SIMULATOR, reason="cuda simulator test: run with NUMBA_ENABLE_CUDASIM=1 set before "
                          "numba is imported")

FLOATS = (np.float32, np.float64)
# Tolerances of a float32 or float64 cuda result against the float64 reference.
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}


@pytest.fixture
def small_blocks(monkeypatch):
    """Small blocks, at most 3 blocks per launch, and BatchNorm sets split into a
    few parts (see the module docstring)."""
    from tinynet.backends import cuda_device as device
    from tinynet.ops.norm import cuda as norm
    monkeypatch.setattr(device, "BLOCK", 8 if SIMULATOR else 32)
    monkeypatch.setattr(device, "BLOCK_REDUCE", 4 if SIMULATOR else 64)
    monkeypatch.setattr(device, "MAX_BLOCKS", 3)
    monkeypatch.setattr(norm, "TARGET_BLOCKS", 16)
    return device


def D(a, dtype=None):
    """A host array on the (simulated) device, optionally cast."""
    from tinynet.backends import cuda
    return cuda.to_device(a if dtype is None else np.asarray(a, dtype=dtype))


def H(a):
    """A device array back on the host (None stays None)."""
    from tinynet.backends import cuda
    if a is None:
        return None
    assert cuda.is_device_array(a), f"expected a device array, got {type(a).__name__}"
    return cuda.to_host(a)


def assert_matches(got, want, dtype, what, scale=1.0, out_dtype=None):
    """A cuda result (a device array of ``out_dtype``, default ``dtype``, or None)
    against the float64 reference, within TOL[dtype] (atol times ``scale``)."""
    if want is None:
        assert got is None, f"{what}: expected None"
        return
    got = H(got)
    out_dtype = np.dtype(dtype if out_dtype is None else out_dtype)
    assert got.dtype == out_dtype, f"{what}: dtype {got.dtype} != {out_dtype}"
    assert got.shape == np.shape(want), f"{what}: shape {got.shape} != {np.shape(want)}"
    tol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64),
                               rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=what)
