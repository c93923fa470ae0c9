"""The cuda backend's device layer: it imports anywhere, and says why it cannot run.

These run in every mode. Without the simulator and without a GPU (CI) the
backend must import and refuse with a reason; under the simulator the
device arrays are tagged numpy arrays.
"""
import types

import numpy as np
import pytest

from cudasim import SIMULATOR, requires_cuda, requires_cudasim

try:  # a module global, which the simulator swaps for its own numba.cuda at a launch
    from numba import cuda as _cuda
except ImportError:  # numba without numba-cuda: the tests that launch are skipped
    _cuda = None


def _fill_ones(a):
    for i in range(_cuda.grid(1), a.size, _cuda.gridsize(1)):
        a[i] = 1


def _axpy(a, s, flag):
    for i in range(_cuda.grid(1), a.size, _cuda.gridsize(1)):
        a[i] = a[i] * s + (1 if flag else 0)


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
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "KERNELS", [])
    return device.kernel("void(float32[::1])")(_fill_ones)


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
    as the environment made it, and a small grid warns again on numba's launcher
    (not in the simulator, whose launches never warn; CuPy's never warns)."""
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "LAUNCHER", "numba")
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
    assert device.KERNELS[0].name == "_fill" and device.KERNELS[0].dispatcher is _fill.dispatcher


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


# -- the launcher: numba's first, CuPy's after (cuda_device.CupyLaunched) ----------

class _Array:
    """What flat_kernel_args reads of a CuPy array."""

    class data:
        ptr = 4096

    shape, strides, size, itemsize = (2, 3), (12, 4), 6, 4


def test_arguments_are_flattened_as_numba_lays_them_out():
    from numba.core import types
    from tinynet.backends import cuda_device as device
    argtypes = (types.Array(types.float32, 2, "C"), types.boolean, types.float32,
                types.float64, types.int64, types.uint64)
    packers = [device.arg_packer(t) for t in argtypes]
    flat = device.flat_kernel_args(packers, (_Array(), True, 0.5, 0.25, -3, 7))
    assert [int(v) for v in flat[:9]] == [0, 0, 6, 4, 4096, 2, 3, 12, 4]
    assert [v.dtype.name for v in flat] == ["uint64", "uint64"] + ["int64", "int64"] + \
        ["uint64"] + ["int64"] * 4 + ["uint8", "float32", "float64", "int64", "uint64"]
    assert flat[9:] == (1, 0.5, 0.25, -3, 7)
    # Types CuPy's launcher is not given (the launch stays on numba's).
    assert device.arg_packer(types.complex64) is None
    assert device.arg_packer(types.UniTuple(types.int64, 2)) is None


@requires_cuda
@pytest.mark.cuda
def test_each_launch_is_watched_once(monkeypatch):
    """watch_launches sees a tinynet kernel's launch once, on either launcher."""
    from tinynet.backends import cuda_device as device
    fill = _define_fill(monkeypatch)
    a = device.zeros(5, np.float32)
    seen = []
    with device.watch_launches(lambda fn, args: seen.append(fn.__name__)):
        for _ in range(3):
            fill[1, 32](a)
    fill[1, 32](a)  # after the block: not watched
    assert seen == ["_fill_ones"] * 3
    assert device.to_host(a).tolist() == [1.0] * 5


@requires_cudasim
@pytest.mark.cuda
def test_the_simulator_and_the_numba_setting_launch_through_numba(monkeypatch):
    from tinynet.backends import cuda_device as device
    fill = _define_fill(monkeypatch)
    a = device.zeros(4, np.float32)
    fill[1, 32](a)
    fill[1, 32](a)
    assert fill.launchers == {}  # nothing was built for CuPy's launcher
    assert device.to_host(a).tolist() == [1.0] * 4
    assert fill.py_func.__name__ == "_fill_ones" and fill.py_func is device.KERNELS[0].py_func


requires_gpu = pytest.mark.skipif(
    SIMULATOR or requires_cuda.args[0],
    reason="needs a GPU: CuPy's launcher is not used under the simulator")


@requires_gpu
@pytest.mark.cuda
def test_later_launches_go_through_cupy_on_a_gpu(monkeypatch):
    """On a GPU the first launch with new argument types compiles through numba; the
    next ones go through CuPy's launcher with the same results; a numba device
    array stays on numba's launcher."""
    import cupy
    from numba import cuda as ncuda
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "LAUNCHER", "cupy")
    monkeypatch.setattr(device, "KERNELS", [])
    axpy = device.kernel("void(float32[::1], float32, boolean)")(_axpy)
    a = cupy.ones(1000, np.float32)
    axpy[4, 128](a, np.float32(2.0), True)      # numba: 3
    [(key, launcher)] = axpy.launchers.items()
    raw, packers = launcher
    assert isinstance(raw, cupy.RawKernel)
    axpy[4, 128](a, np.float32(2.0), False)     # CuPy: 6
    axpy[4, 128](a[::2], np.float32(0.5), True)  # strided: new types, numba: 4 on evens
    axpy[4, 128](a[1::2], np.float32(1.0), True)  # strided again, CuPy: 7 on odds
    host = cupy.asnumpy(a)
    assert host[1::2].tolist() == [7.0] * 500 and host[::2].tolist() == [4.0] * 500
    assert len(axpy.launchers) == 2
    b = ncuda.to_device(np.ones(10, np.float32))
    axpy[1, 32](b, np.float32(3.0), False)
    axpy[1, 32](b, np.float32(3.0), False)
    assert b.copy_to_host().tolist() == [9.0] * 10
    assert "numba" in axpy.launchers.values()


def test_a_cubin_is_read_from_bytes_or_an_object_codes_bytes_or_path(tmp_path):
    """numba-cuda's linker returns bytes (the driver's linker) or, with cuda-core
    (as on the H200 image), an ObjectCode whose ``code`` is bytes or a path."""
    import types
    from tinynet.backends import cuda_device as device
    path = tmp_path / "k.cubin"
    path.write_bytes(b"from a file")
    assert device.cubin_bytes(b"plain") == b"plain"
    assert device.cubin_bytes(types.SimpleNamespace(code=b"object code")) == b"object code"
    assert device.cubin_bytes(types.SimpleNamespace(code=str(path))) == b"from a file"
    with pytest.raises(TypeError, match="cannot read a cubin from int"):
        device.cubin_bytes(3)


def test_use_launcher_switches_and_restores(monkeypatch):
    from tinynet.backends import cuda_device as device
    monkeypatch.setattr(device, "LAUNCHER", "numba")
    with device.use_launcher("cupy"):
        assert device.LAUNCHER == "cupy"
        with pytest.raises(RuntimeError):
            with device.use_launcher("numba"):
                assert device.LAUNCHER == "numba"
                raise RuntimeError("inside")
        assert device.LAUNCHER == "cupy"
    assert device.LAUNCHER == "numba"
    with pytest.raises(ValueError, match="use_launcher: name must be 'cupy' or 'numba', got 'x'"):
        with device.use_launcher("x"):
            pass


def test_the_launcher_setting_is_checked_at_import():
    import subprocess
    import sys
    code = "import tinynet.backends.cuda_device as d; print(d.LAUNCHER)"
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True,  # noqa: E731
                                     text=True, env=env)
    import os
    env = {k: v for k, v in os.environ.items() if k != "TINYNET_CUDA_LAUNCHER"}
    assert run(env).stdout.strip() == "cupy"
    assert run(dict(env, TINYNET_CUDA_LAUNCHER="numba")).stdout.strip() == "numba"
    bad = run(dict(env, TINYNET_CUDA_LAUNCHER="fast"))
    assert bad.returncode != 0
    assert "TINYNET_CUDA_LAUNCHER must be 'cupy' or 'numba', got 'fast'" in bad.stderr


class _FakeCupy:
    """Just enough of CuPy for CupyLaunched's bookkeeping: arrays with the
    attributes it reads, and a RawModule that records the launches it is given."""

    class ndarray:
        def __init__(self, n, ptr, step=1):
            self.dtype, self.ndim, self.size, self.itemsize = np.dtype(np.float32), 1, n, 4
            self.shape, self.strides = (n,), (4 * step,)
            self.data = types.SimpleNamespace(ptr=ptr)
            self.flags = types.SimpleNamespace(c_contiguous=step == 1, f_contiguous=step == 1)

    def __init__(self):
        self.launches, self.loaded = [], []

    def RawModule(self, path):
        with open(path, "rb") as f:
            self.loaded.append(f.read())
        fake = self

        class Module:
            def get_function(self, name):
                return lambda grid, block, args: fake.launches.append((name, grid, block, args))
        return Module()


class _FakeDispatcher:
    """numba's side: each launch through it is recorded; it 'compiles' an overload
    for the argument types of each first launch."""

    def __init__(self):
        self.overloads, self.launches = {}, []

    def typeof_pyval(self, a):
        from numba.core import types as nt
        if isinstance(a, _FakeCupy.ndarray):
            return nt.Array(nt.float32, 1, "C" if a.flags.c_contiguous else "A")
        return {float: nt.float64, bool: nt.boolean, np.float32: nt.float32}.get(type(a), nt.pyobject)

    def __getitem__(self, config):
        def launch(*args):
            self.launches.append((config, args))
            argtypes = tuple(self.typeof_pyval(a) for a in args)
            self.overloads.setdefault(argtypes, types.SimpleNamespace(
                argument_types=argtypes, entry_name="_k_entry", cooperative=False,
                launch_config_sensitive=False,
                _codelibrary=types.SimpleNamespace(
                    get_cubin=lambda: types.SimpleNamespace(code=b"cubin bytes"))))
        return launch


def _fake_gpu(monkeypatch):
    """(cuda_device, a stand-in CuPy, a stand-in numba dispatcher), with the
    module set as on a GPU with LAUNCHER "cupy"."""
    from tinynet.backends import cuda_device as device
    cupy = _FakeCupy()
    monkeypatch.setattr(device, "_cupy", cupy)
    monkeypatch.setattr(device, "SIMULATOR", False)
    monkeypatch.setattr(device, "LAUNCHER", "cupy")
    numba_side = _FakeDispatcher()
    return device, cupy, numba_side


def test_cupys_launcher_takes_over_after_numbas_first_launch(monkeypatch):
    """With LAUNCHER "cupy" on a GPU: the first launch with new argument types goes
    to numba, which compiles; later ones go to the RawKernel of numba's cubin
    with the arguments flattened; new types (a strided array) start again on
    numba; arrays CuPy's launcher is not given stay on numba's for good."""
    device, cupy, numba_side = _fake_gpu(monkeypatch)
    k = device.CupyLaunched(numba_side, py_func=None)
    a = cupy.ndarray(8, ptr=1024)
    k[2, 32](a, np.float32(0.5), True)
    assert len(numba_side.launches) == 1 and cupy.launches == []
    k[2, 32](a, np.float32(0.5), False)
    k[3, 64](a, np.float32(2.0), True)
    assert len(numba_side.launches) == 1 and cupy.loaded == [b"cubin bytes"]
    name, grid, block, args = cupy.launches[-1]
    assert (name, grid, block) == ("_k_entry", (3,), (64,))
    assert [int(v) for v in args[:7]] == [0, 0, 8, 4, 1024, 8, 4]
    assert args[7:] == (2.0, 1) and args[7].dtype == np.float32 and args[8].dtype == np.uint8
    strided = cupy.ndarray(4, ptr=2048, step=2)
    k[1, 32](strided, np.float32(1.0), True)      # new types: numba first
    k[1, 32](strided, np.float32(1.0), True)      # then CuPy's, strides in bytes
    assert len(numba_side.launches) == 2 and int(cupy.launches[-1][3][6]) == 8
    host = np.zeros(3, np.float32)                # not a CuPy array: numba's, always
    k[1, 32](host, 1.0, True)
    k[1, 32](host, 1.0, True)
    assert len(numba_side.launches) == 4 and len(cupy.launches) == 3
    monkeypatch.setattr(device, "LAUNCHER", "numba")  # the other setting: numba's, always
    k[2, 32](a, np.float32(0.5), True)
    assert len(numba_side.launches) == 5 and len(cupy.launches) == 3


def test_a_kernel_cupy_cannot_load_stays_on_numbas_launcher_with_a_warning(monkeypatch):
    """Where CuPy's launcher cannot read numba's compiled kernel (numba-cuda's
    internals changed, as its cuda-core linker's ObjectCode once did), the kernel
    keeps numba's launcher for those argument types, says so once, and runs."""
    device, cupy, numba_side = _fake_gpu(monkeypatch)
    k = device.CupyLaunched(numba_side, py_func=_axpy)
    a = cupy.ndarray(8, ptr=1024)
    numba_side[1, 32](a, np.float32(1.0), True)   # compile first, then break its cubin
    compiled = next(iter(numba_side.overloads.values()))
    compiled._codelibrary.get_cubin = lambda: 3
    with pytest.warns(RuntimeWarning, match="_axpy stays on numba's launcher for these argument "
                                            "types: CuPy's launcher could not load numba's "
                                            "compiled kernel \\(TypeError: cuda launcher: "
                                            "cannot read a cubin from int\\)"):
        k[2, 32](a, np.float32(0.5), True)
    k[2, 32](a, np.float32(0.5), True)
    assert len(numba_side.launches) == 3 and cupy.launches == []
    assert list(k.launchers.values()) == ["numba"]
