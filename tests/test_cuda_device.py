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


class _Taken(Exception):
    """Raised by the fake array below to say which protocol a launch asked it for."""


class _CupyLikeArray:
    """A device array with CuPy's two export protocols; each raises _Taken naming itself."""
    dtype = np.dtype(np.float32)
    shape = (4,)

    def __dlpack__(self, **kwargs):
        raise _Taken("__dlpack__")

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0

    @property
    def __cuda_array_interface__(self):
        raise _Taken("__cuda_array_interface__")


def test_a_cupy_array_enters_a_launch_through_dlpack():
    """numba-cuda's launch path (_Kernel._prepare_args -> InOut.to_device ->
    _to_strided_memory_view) asks an argument for ``__dlpack__`` before
    ``__cuda_array_interface__``, so CUDA_ARRAY_INTERFACE_SYNC, read only on the
    latter path, is not tinynet's to switch (tinynet/backends/cuda_device.py)."""
    devicearray = pytest.importorskip("numba.cuda.cudadrv.devicearray",
                                      reason="numba-cuda is not installed")
    if not hasattr(devicearray, "_to_strided_memory_view"):
        pytest.skip("not numba-cuda >= 0.30's launch path (numba's own numba.cuda, or the "
                    "simulator)")
    with pytest.raises(_Taken, match="__dlpack__"):
        devicearray._to_strided_memory_view(_CupyLikeArray(), stream=0)


def test_cupy_import_leaves_numba_cuda_config_alone(monkeypatch):
    """Importing CuPy changes no numba-cuda setting (CUDA_ARRAY_INTERFACE_SYNC stays)."""
    import sys
    import types
    from tinynet.backends import cuda_device as device
    config = device._numba_cuda_config()
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(device, "_cupy", None)
    monkeypatch.delenv("NUMBA_CUDA_ARRAY_INTERFACE_SYNC", raising=False)
    monkeypatch.setattr(config, "CUDA_ARRAY_INTERFACE_SYNC", True, raising=False)
    device._import_cupy()
    assert config.CUDA_ARRAY_INTERFACE_SYNC is True


def _define_fill(monkeypatch):
    """A one-line kernel defined by tinynet's ``kernel`` decorator (KERNELS restored after)."""
    from numba import cuda as ncuda
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "KERNELS", [])

    @device.kernel("void(float32[::1])")
    def _fill(a):
        for i in range(ncuda.grid(1), a.size, ncuda.gridsize(1)):
            a[i] = 1
    return _fill


def _occupancy_warnings(launch):
    """The low-occupancy warnings that configuring ``launch()`` gives (nothing runs)."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launch()
    return [w for w in caught if "under-utilization" in str(w.message)]


def test_tinynet_kernels_do_not_warn_about_low_occupancy(monkeypatch):
    """numba-cuda warns at every launch of fewer than 128 blocks; a kernel defined by
    tinynet switches that warning off (the config is restored after the test)."""
    from tinynet.backends import cuda_device as device
    config = device._numba_cuda_config()
    monkeypatch.delenv("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", raising=False)
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 1)
    fill = _define_fill(monkeypatch)
    assert config.CUDA_LOW_OCCUPANCY_WARNINGS == 0
    assert not _occupancy_warnings(lambda: fill[1, 32])


def test_the_environment_decides_the_low_occupancy_warning(monkeypatch):
    """With NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS set, tinynet leaves numba-cuda's setting
    as the environment made it, and a small grid warns again (not in the simulator,
    whose launches never warn)."""
    from tinynet.backends import cuda_device as device
    config = device._numba_cuda_config()
    monkeypatch.setenv("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "1")
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 1)
    fill = _define_fill(monkeypatch)
    assert config.CUDA_LOW_OCCUPANCY_WARNINGS == 1
    if not SIMULATOR:
        assert _occupancy_warnings(lambda: fill[1, 32])


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


def test_numpy_row_stack_is_given_back_only_where_numpy_lacks_it(monkeypatch):
    """numba-cuda 0.30.4 overloads np.row_stack (removed in numpy 2.5) at its first
    compile: the backend aliases np.vstack when the name is missing, and leaves a
    numpy that has it alone. (tests/test_cuda_ptx.py compiles a kernel without it.)"""
    from tinynet.backends import cuda_device as device
    assert hasattr(np, "row_stack")  # importing the backend made sure of it
    if "row_stack" in vars(np):
        monkeypatch.delattr(np, "row_stack")
    assert device.numpy_row_stack_for_numba_cuda() is True
    assert np.row_stack is np.vstack
    assert device.numpy_row_stack_for_numba_cuda() is False
