"""The cuda backend's device layer: it imports anywhere, and says why it cannot run.

These run in every mode. Without the simulator and without a GPU (CI) the
backend must import and refuse with a reason; under the simulator the
device arrays are tagged numpy arrays.
"""
import numpy as np
import pytest

from cudasim import SIMULATOR, requires_cuda, requires_cudasim


def test_package_imports_and_exposes_the_backend_interface():
    from tinynet.backends import cuda
    assert cuda.NAME == "cuda" and cuda.DEVICE == "cuda"
    for name in ("check_available", "to_device", "to_host", "array_module", "is_native",
                 "asarray"):
        assert callable(getattr(cuda, name)), name


def _gpu_visible():
    try:
        from numba import cuda as ncuda
        return ncuda.is_available()
    except Exception:
        return False


@pytest.mark.skipif(SIMULATOR or _gpu_visible(), reason="needs a machine with no GPU and no "
                    "simulator (the normal CI run)")
def test_without_a_gpu_check_available_says_what_to_change():
    from tinynet.backends import cuda
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM=1|numba-cuda|GPU"):
        cuda.check_available()
    assert not hasattr(cuda, "dense_forward"), "ops must not load where they cannot run"


@requires_cudasim
def test_simulator_device_arrays_round_trip():
    from tinynet.backends import cuda
    from tinynet.backends import cuda_device as device
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    xd = cuda.to_device(x)
    assert cuda.is_native(xd) and not cuda.is_native(x)
    assert cuda.array_module() is np
    back = cuda.to_host(xd)
    assert type(back) is np.ndarray and back.dtype == np.int64
    np.testing.assert_array_equal(back, x)
    assert cuda.asarray(xd) is xd
    assert cuda.asarray(x, np.float32).dtype == np.float32
    assert device.is_device_array(device.zeros((2,), np.float32))


@requires_cudasim
def test_block_size_must_suit_the_reduction(monkeypatch):
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "BLOCK_REDUCE", 6)
    with pytest.raises(ValueError, match="BLOCK_REDUCE must be a power of two"):
        device.grid_sets(4)


@requires_cuda
def test_every_ref_op_has_a_cuda_implementation():
    from tinynet.backends import cuda
    from tinynet.ops import contract
    missing = sorted(set(contract.REGISTRY) - set(contract.implementations(cuda)))
    assert not missing, f"cuda backend lacks {missing}"
    for name in contract.implementations(cuda):
        assert getattr(cuda, name).contract_ref is contract.REGISTRY[name], name


def test_out_of_device_memory_says_what_to_change(monkeypatch):
    """CuPy's OutOfMemoryError becomes a MemoryError naming the array and the remedy."""
    import types
    from tinynet.backends import cuda_device as device

    class OutOfMemoryError(Exception):
        pass

    def empty(shape, dtype):
        raise OutOfMemoryError("out of memory allocating 4194304 bytes")
    fake = types.SimpleNamespace(empty=empty, zeros=empty,
                                 cuda=types.SimpleNamespace(memory=types.SimpleNamespace(
                                     OutOfMemoryError=OutOfMemoryError)))
    monkeypatch.setattr(device, "SIMULATOR", False)
    monkeypatch.setattr(device, "_cupy", fake)
    with pytest.raises(MemoryError, match=r"shape \(1024, 1024\) float32 \(4.0 MiB\); use a "
                                          r"smaller batch size"):
        device.empty((1024, 1024), np.float32)


@pytest.mark.skipif(SIMULATOR, reason="the GPU path's numba-cuda config (not the simulator's)")
def test_gpu_path_turns_off_the_per_argument_stream_sync(monkeypatch):
    """One stream orders every launch, so numba-cuda's host wait on the stream a CuPy
    array names, per argument and launch, is switched off when CuPy is first used."""
    import sys
    import types
    config = pytest.importorskip("numba.cuda.core.config", reason="numba-cuda is not installed "
                                 "(pip install \"numba-cuda[cu13]\"); numba's own numba.cuda has no core.config")
    from tinynet.backends import cuda_device as device
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(device, "_cupy", None)
    monkeypatch.delenv("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", raising=False)
    monkeypatch.setattr(config, "CUDA_ARRAY_INTERFACE_SYNC", True)
    device._import_cupy()
    assert config.CUDA_ARRAY_INTERFACE_SYNC is False


def test_kernels_compile_uncached_where_no_cache_directory_is_writable(monkeypatch):
    from numba import cuda as ncuda
    from tinynet.backends import cuda_device as device
    jit = ncuda.jit

    def refusing_jit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return jit(*args, **kwargs)
    monkeypatch.setattr(ncuda, "jit", refusing_jit)
    monkeypatch.setattr(device, "KERNELS", [])

    @device.kernel("void(float32[::1])")
    def _fill(a):
        for i in range(ncuda.grid(1), a.size, ncuda.gridsize(1)):
            a[i] = 1
    assert device.KERNELS[0].name == "_fill" and device.KERNELS[0].dispatcher is _fill
