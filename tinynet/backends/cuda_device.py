"""Device arrays, allocation and GEMM for the cuda backend.

On a GPU a device array is a CuPy array: numba.cuda kernels take it without
a copy (through DLPack, below), and GEMMs go to cuBLAS through
CuPy's matmul. Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set
before numba is imported) the same code runs on ``SimDeviceArray``, a numpy
array tagged as living on the simulated device, with numpy's GEMMs; the tag
lets layers tell a host array from a device one in the simulator too.

Every kernel launcher takes its block size from ``BLOCK`` (1-D kernels) and
``BLOCK_REDUCE`` (one block per reduced set), and caps its grid at
``MAX_BLOCKS``: every kernel loops grid-stride over its elements or sets, so
any grid covers the work. Tests patch all three small, since the simulator
runs each thread as a Python thread.

Every kernel and every CuPy operation runs on the legacy default stream, in
launch order. A CuPy array enters a numba-cuda (>= 0.30) kernel launch
through ``numba.cuda.cudadrv.devicearray._to_strided_memory_view`` (called by
``numba.cuda.args.InOut.to_device`` from ``_Kernel._prepare_args``), which
takes an object's ``__dlpack__`` before its ``__cuda_array_interface__``:
``StridedMemoryView.from_dlpack`` with the launch's stream, for which CuPy's
``__dlpack__`` at most makes that stream wait on the device for CuPy's
current stream (no host wait; nothing when they are the same stream). So
numba-cuda's CUDA_ARRAY_INTERFACE_SYNC, a host wait per argument on the
``__cuda_array_interface__`` path only, is never read on a launch, and tinynet
leaves it as it is.

numba-cuda warns (NumbaPerformanceWarning "Grid size ... will likely result
in GPU under-utilization") at every launch of fewer than 128 blocks. Small
launches are part of a training step here (the merge of a few sets, a layer
at batch 64), so defining a kernel with ``kernel`` switches that one warning
off (numba-cuda's config CUDA_LOW_OCCUPANCY_WARNINGS = 0), unless
``NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS`` is set in the environment, which then
decides. The switch is numba-cuda's, so it covers every launch in the process.

numba-cuda 0.30.4 dies at its first kernel compile under numpy >= 2.5
(AttributeError: module 'numpy' has no attribute 'row_stack', from
``overload(np.row_stack)`` in numba/cuda/np/arrayobj.py; numba's own cpu
target checks numpy's version there). This module therefore gives numpy
``row_stack`` back, as ``np.vstack``, when numpy lacks it
(``numpy_row_stack_for_numba_cuda``), before any kernel is defined.

``kernel(*signatures)`` is the decorator of every cuda kernel: a lazily
compiled ``numba.cuda.jit`` kernel that is also listed in ``KERNELS`` with
the signatures training launches it with, for the PTX and SASS table
(``python -m kernels.ptx``).

Launches. numba-cuda's own launcher took 51-78 us per launch of a 2-argument
kernel on an H200 and 106-154 us for ``relu_forward`` (3 arrays, an
allocation), against 9-14 us for a CuPy elementwise kernel (``python -m
kernels.gpu_launch --bench``, docs/performance-gpu.md): each array argument
is typed and wrapped through DLPack at every launch, and a training step is
about 50 launches. So by default (``TINYNET_CUDA_LAUNCHER=cupy``) a kernel's
first launch with new argument types goes through numba (which compiles,
links and loads it), and every later launch with those types goes through
CuPy's kernel launcher (``cupy.RawModule`` of the cubin numba linked;
``CupyLaunched``), with the arguments flattened the way numba's kernel ABI
lays them out: an array is 5 + 2 * ndim parameters (meminfo and parent, both
null, the size, the item size, the data pointer, the shape and the strides in
bytes), a boolean one byte. tests/test_cuda_ptx.py checks that layout against
every kernel's PTX parameters, and on an H200 every cuda test passed on it
and ``relu_forward`` took 33 us a launch. A kernel whose compiled code CuPy
cannot load (numba-cuda internals that changed) stays on numba's launcher
for those argument types, with a RuntimeWarning. ``TINYNET_CUDA_LAUNCHER=numba``
keeps every launch on numba's launcher (the lab, ``kernels.gpu_launch``,
races both).
"""
import atexit
import collections
import contextlib
import functools
import os
import shutil
import tempfile
import warnings

import numpy as np

__all__ = ["SIMULATOR", "SimDeviceArray", "check_available", "xp", "is_device_array",
           "to_device", "to_host", "empty", "zeros", "empty_like", "matmul",
           "BLOCK", "BLOCK_REDUCE", "MAX_BLOCKS", "REDUCE_SHARED", "WARP_SHUFFLE",
           "grid_1d", "grid_sets", "require_device", "kernel", "Kernel", "KERNELS",
           "FLOAT_TYPES", "signatures_of", "watch_launches", "watch_gemms", "launch_sizes",
           "quiet_low_occupancy_warnings", "numpy_row_stack_for_numba_cuda",
           "CupyLaunched", "LAUNCHER", "LAUNCHERS", "use_launcher", "cubin_bytes", "kernel_cache",
           "flat_kernel_args", "arg_packer"]

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"

# Threads per block for 1-D elementwise kernels and for block reductions.
BLOCK = 256
BLOCK_REDUCE = 256
# The grid cap of the grid-stride kernels (a launch covers any size with it).
MAX_BLOCKS = 65535
# float64 slots of each shared-memory reduction array; BLOCK_REDUCE <= REDUCE_SHARED.
REDUCE_SHARED = 256
# Block reductions use warp shuffles on a GPU; the simulator has no shfl_*_sync,
# so there they reduce through shared memory alone.
WARP_SHUFFLE = not SIMULATOR
# The float types a kernel signature template's "{f}" stands for.
FLOAT_TYPES = ("float32", "float64")


def numpy_row_stack_for_numba_cuda():
    """Give numpy ``row_stack`` back as ``np.vstack`` (what numpy < 2.5 defined it
    as) when numpy lacks it, and return whether it did.

    numba-cuda 0.30.4 registers an overload of ``np.row_stack`` without checking
    numpy's version when it loads its typing registries at the first kernel
    compile; numpy 2.5 removed the name, so on a GPU with numpy 2.5 every kernel
    compile raised AttributeError. Nothing else of numpy is touched.
    """
    if hasattr(np, "row_stack"):
        return False
    np.row_stack = np.vstack
    return True


numpy_row_stack_for_numba_cuda()


class SimDeviceArray(np.ndarray):
    """A numpy array that stands for a device array under the CUDA simulator."""


_cupy = None


def _import_cupy():
    global _cupy
    if _cupy is None:
        import cupy
        _cupy = cupy
    return _cupy


def _numba_cuda_config():
    """The config module that numba.cuda's launches read: numba-cuda's
    ``numba.cuda.core.config``, or numba's own for the numba.cuda built into numba."""
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba.core import config
    return config


def quiet_low_occupancy_warnings():
    """Switch off numba-cuda's low-occupancy NumbaPerformanceWarning (a grid of
    fewer than 128 blocks) unless ``NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS`` is set
    in the environment; every other warning stays as it is."""
    if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" in os.environ:
        return
    _numba_cuda_config().CUDA_LOW_OCCUPANCY_WARNINGS = 0


def check_available():
    """Raise RuntimeError saying what to install or change unless kernels can run.

    Needs numba-cuda and either the simulator or a visible GPU with CuPy.
    """
    try:
        from numba import cuda
    except ImportError as e:
        raise RuntimeError("the cuda backend needs numba-cuda: pip install 'tinynet[cuda13]' "
                           f"(or [cuda12]); {e}") from e
    if SIMULATOR:
        return
    try:
        available = cuda.is_available()
    except Exception as e:  # the driver raises its own error types
        raise RuntimeError(f"the cuda backend found no usable GPU: {e}") from e
    if not available:
        raise RuntimeError("the cuda backend found no GPU (numba.cuda.is_available() is False); "
                           "run on a machine with an NVIDIA GPU and driver, or set "
                           "NUMBA_ENABLE_CUDASIM=1 before importing tinynet to use the simulator")
    try:
        _import_cupy()
    except ImportError as e:
        raise RuntimeError("the cuda backend needs CuPy for device arrays and cuBLAS: "
                           f"pip install 'tinynet[cuda13]' (or [cuda12]); {e}") from e


def xp():
    """The array module of device arrays: CuPy on a GPU, numpy under the simulator."""
    return np if SIMULATOR else _import_cupy()


def is_device_array(a):
    """True when ``a`` is a device array of this backend."""
    if SIMULATOR:
        return isinstance(a, SimDeviceArray)
    cp = _cupy
    return cp is not None and isinstance(a, cp.ndarray)


def to_device(a, dtype=None):
    """Copy a host array (any dtype, e.g. int64 labels) to a C-contiguous device array."""
    if is_device_array(a):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    host = np.ascontiguousarray(a, dtype=dtype)
    if SIMULATOR:
        return host.copy().view(SimDeviceArray)
    return _import_cupy().asarray(host)


def to_host(a):
    """Copy a device array to a fresh numpy array; a numpy array is returned as is."""
    if SIMULATOR:
        if isinstance(a, SimDeviceArray):
            return np.array(a.view(np.ndarray), copy=True)
        return np.asarray(a)
    cp = _cupy
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.asnumpy(a)
    return np.asarray(a)


def _allocate(what, shape, dtype):
    """CuPy's ``what`` (empty or zeros); out of device memory is a MemoryError saying what to do."""
    cp = _import_cupy()
    try:
        return getattr(cp, what)(shape, dtype)
    except cp.cuda.memory.OutOfMemoryError as e:
        shape = tuple(int(n) for n in np.atleast_1d(shape))
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raise MemoryError(f"cuda backend: out of device memory allocating an array of shape "
                          f"{shape} {np.dtype(dtype)} ({nbytes / 2**20:.1f} MiB); use a smaller "
                          f"batch size or model, or drop references to device arrays that are "
                          f"no longer needed ({e})") from e


def empty(shape, dtype):
    """An uninitialized C-contiguous device array."""
    if SIMULATOR:
        return np.empty(shape, dtype).view(SimDeviceArray)
    return _allocate("empty", shape, dtype)


def zeros(shape, dtype):
    """A zero-filled C-contiguous device array."""
    if SIMULATOR:
        return np.zeros(shape, dtype).view(SimDeviceArray)
    return _allocate("zeros", shape, dtype)


def empty_like(a):
    return empty(a.shape, a.dtype)


@contextlib.contextmanager
def launch_sizes(block=None, block_reduce=None, max_blocks=None):
    """Within the block, launch with these sizes instead of ``BLOCK``,
    ``BLOCK_REDUCE`` and ``MAX_BLOCKS`` (None keeps one as it is).

    Small blocks and a small grid cap make tiny test shapes span several
    blocks and run every grid-stride loop more than once (the tests' and the
    lab's ``small_blocks``). ``block_reduce`` must be a power of two of at
    most ``REDUCE_SHARED``.
    """
    global BLOCK, BLOCK_REDUCE, MAX_BLOCKS
    saved = BLOCK, BLOCK_REDUCE, MAX_BLOCKS
    BLOCK = block or BLOCK
    BLOCK_REDUCE = block_reduce or BLOCK_REDUCE
    MAX_BLOCKS = max_blocks or MAX_BLOCKS
    try:
        yield
    finally:
        BLOCK, BLOCK_REDUCE, MAX_BLOCKS = saved


_GEMM_WATCHERS = []


def matmul(a, b):
    """a @ b on the device: cuBLAS through CuPy, numpy under the simulator."""
    for watcher in _GEMM_WATCHERS:
        watcher(a, b)
    return a @ b


@contextlib.contextmanager
def watch_gemms(callback):
    """Within the block, call ``callback(a, b)`` at every ``matmul`` (a cuBLAS GEMM
    on a GPU), before it runs; with ``watch_launches``, what the lab counts as
    the launches of a training step (python -m kernels.step --device cuda)."""
    _GEMM_WATCHERS.append(callback)
    try:
        yield
    finally:
        _GEMM_WATCHERS.remove(callback)


def grid_1d(n, block=None):
    """(blocks, threads) for ``n`` elements at ``block`` (default ``BLOCK``)
    threads per block, one element per thread up to ``MAX_BLOCKS`` blocks."""
    block = block or BLOCK
    return min(MAX_BLOCKS, max(1, (n + block - 1) // block)), block


def grid_sets(tasks):
    """(blocks, threads) for a block reduction over ``tasks`` sets or parts of sets."""
    block = BLOCK_REDUCE
    if block > REDUCE_SHARED or block & (block - 1) or (WARP_SHUFFLE and block % 32):
        raise ValueError(f"cuda backend: BLOCK_REDUCE must be a power of two <= {REDUCE_SHARED}"
                         f"{' and a multiple of 32' if WARP_SHUFFLE else ''}, got {block}")
    return min(MAX_BLOCKS, max(1, tasks)), block


def require_device(opname, **arrays):
    """Raise TypeError unless every array given (None is skipped) is a device array."""
    for name, a in arrays.items():
        if a is not None and not is_device_array(a):
            raise TypeError(f"{opname}: {name} is a {type(a).__module__}.{type(a).__name__} "
                            "on the host; the cuda backend takes device arrays "
                            "(tn.to_device(x), model.to('cuda'))")


Kernel = collections.namedtuple("Kernel", "module name py_func signatures dispatcher")
Kernel.__doc__ = ("A cuda kernel: its module, name, Python function, signature templates "
                  "and dispatcher.")
# Every cuda kernel, in definition order.
KERNELS = []


# "numba": every launch through numba-cuda's; "cupy": launches after a kernel's
# first (per argument types) through CuPy's (module docstring).
LAUNCHERS = ("numba", "cupy")
LAUNCHER = os.environ.get("TINYNET_CUDA_LAUNCHER", "cupy")
if LAUNCHER not in LAUNCHERS:
    raise ValueError(f"cuda backend: TINYNET_CUDA_LAUNCHER must be 'cupy' or 'numba', "
                     f"got {LAUNCHER!r}")


@contextlib.contextmanager
def use_launcher(name):
    """Within the block, launch the cuda backend's kernels through launcher
    ``name`` ("numba" or "cupy"; ``LAUNCHER``), then restore the previous one."""
    global LAUNCHER
    if name not in LAUNCHERS:
        raise ValueError(f"use_launcher: name must be 'cupy' or 'numba', got {name!r}")
    saved, LAUNCHER = LAUNCHER, name
    try:
        yield
    finally:
        LAUNCHER = saved


_ARRAY = "array"   # arg_packer's answer for an array argument
_NUMBA = "numba"   # a launcher-cache entry: these argument types stay on numba's launcher
_NULL = np.uint64(0)


def arg_packer(ty):
    """How a kernel argument of numba type ``ty`` is passed to CuPy's launcher:
    ``_ARRAY`` (flattened by ``flat_kernel_args``), the numpy scalar type its
    value is converted to (numba's kernel ABI: a boolean is one byte), or None
    for a type this launcher does not pass (the launch then stays on numba's)."""
    from numba.core import types
    if isinstance(ty, types.Array):
        return _ARRAY
    if ty == types.boolean:
        return np.uint8
    if isinstance(ty, (types.Float, types.Integer)):
        return np.dtype(str(ty)).type
    return None


def flat_kernel_args(packers, args):
    """The parameters of a numba.cuda kernel launch, as numpy scalars in the order
    of numba's kernel ABI (``numba.cuda.dispatcher._Kernel._prepare_args``): per
    array (any object with size, itemsize, data.ptr, shape and strides in
    bytes: a CuPy array) meminfo and parent (null), size, itemsize, the data
    pointer, then each extent and each stride; per scalar its ``packers`` type."""
    out = []
    for packer, a in zip(packers, args):
        if packer is _ARRAY:
            out += (_NULL, _NULL, np.int64(a.size), np.int64(a.itemsize),
                    np.uint64(a.data.ptr))
            out += [np.int64(n) for n in a.shape]
            out += [np.int64(n) for n in a.strides]
        else:
            out.append(packer(a))
    return tuple(out)


def _arg_key(a):
    """What decides the numba type of a launch argument: a CuPy array's dtype,
    ndim and contiguity (its layout), else the Python type (numba types a
    Python int as int64, a float as float64, a numpy scalar as its dtype)."""
    if type(a) is _cupy.ndarray:
        return (a.dtype.num, a.ndim, a.flags.c_contiguous, a.flags.f_contiguous)
    return type(a)


@functools.lru_cache(maxsize=1)
def _cubin_dir():
    """A folder for this process's cubins (CuPy loads a module from a file), removed
    at exit."""
    path = tempfile.mkdtemp(prefix="tinynet-cubin-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class CupyLaunched:
    """A numba.cuda kernel (``dispatcher``) whose launches go through CuPy's launcher
    once numba has compiled it for the argument types, when ``LAUNCHER`` is
    "cupy" (module docstring).

    ``kernel[blocks, threads](*args)`` as with numba; ``py_func`` is the
    kernel's Python function; every other attribute is the dispatcher's.
    Launches go to numba's launcher with ``LAUNCHER == "numba"``,
    under the simulator, for a launch configuration other than (blocks,
    threads) ints, and for argument types CuPy's launcher is not given (arrays
    that are not CuPy's, types without an ``arg_packer``).
    """

    def __init__(self, dispatcher, py_func):
        self.dispatcher = dispatcher
        self.py_func = py_func
        self.launchers = {}   # _arg_key tuple -> (cupy.RawKernel, packers) or _NUMBA

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)

    def __getitem__(self, config):
        if (SIMULATOR or LAUNCHER != "cupy" or type(config) is not tuple or len(config) != 2
                or not all(type(n) is int for n in config)):
            launch = _numba_launch(self.dispatcher, config)
        else:
            launch = functools.partial(self._launch, config[0], config[1])
        if not _WATCHERS:
            return launch

        def watched(*args):
            for watcher in _WATCHERS:
                watcher(self.py_func, args)
            return launch(*args)
        return watched

    def _launch(self, blocks, threads, *args):
        key = tuple(map(_arg_key, args)) if _cupy is not None else None
        launcher = self.launchers.get(key)
        if launcher is None or launcher is _NUMBA:
            _numba_launch(self.dispatcher, (blocks, threads))(*args)
            if launcher is None and key is not None:
                try:
                    self.launchers[key] = self._cupy_launcher(args)
                except Exception as error:  # numba-cuda internals it reads changed
                    self.launchers[key] = _NUMBA
                    name = getattr(self.py_func, "__name__", "a kernel")
                    warnings.warn(f"cuda backend: {name} stays on numba's launcher for "
                                  f"these argument types: CuPy's launcher could not load "
                                  f"numba's compiled kernel ({type(error).__name__}: {error})",
                                  RuntimeWarning, stacklevel=3)
            return
        raw, packers = launcher
        raw((blocks,), (threads,), flat_kernel_args(packers, args))

    def _cupy_launcher(self, args):
        """(cupy.RawKernel, packers) for numba's compiled kernel of ``args``' types,
        or _NUMBA where this launcher cannot pass them."""
        argtypes = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        compiled = self.dispatcher.overloads.get(argtypes)
        if compiled is None or getattr(compiled, "cooperative", False) or \
                getattr(compiled, "launch_config_sensitive", False):
            return _NUMBA
        packers = tuple(arg_packer(t) for t in compiled.argument_types)
        for packer, a in zip(packers, args):
            if packer is None or (packer is _ARRAY and type(a) is not _cupy.ndarray):
                return _NUMBA
        fd, path = tempfile.mkstemp(suffix=".cubin", dir=_cubin_dir())
        with os.fdopen(fd, "wb") as f:
            f.write(cubin_bytes(compiled._codelibrary.get_cubin()))
        raw = _cupy.RawModule(path=path).get_function(compiled.entry_name)
        return raw, packers


def cubin_bytes(cubin):
    """The bytes of a linked cubin as numba-cuda's linker returns it: bytes from
    the driver's linker, or a ``cuda.core`` ObjectCode whose ``code`` is the
    bytes or a file's path (the linker numba-cuda 0.30.4 uses with cuda-core)."""
    if isinstance(cubin, (bytes, bytearray)):
        return bytes(cubin)
    code = getattr(cubin, "code", None)
    if isinstance(code, (bytes, bytearray, memoryview)):
        return bytes(code)
    if isinstance(code, str):
        with open(code, "rb") as f:
            return f.read()
    raise TypeError(f"cuda launcher: cannot read a cubin from {type(cubin).__name__}")


@functools.lru_cache(maxsize=1)
def _kernel_cache_class():
    from numba.cuda.dispatcher import CUDACache

    from .jit_cache import DependencyKeyed

    class KernelCache(DependencyKeyed, CUDACache):
        """numba-cuda's kernel cache, keyed also by the kernel's dependencies."""
    return KernelCache


def kernel_cache(fn):
    """numba-cuda's disk cache for the kernel ``fn`` (what ``cuda.jit(cache=True)``
    installs), with ``jit_cache.dependency_digest`` in its index key, so that an
    edit to a device function in another file (cuda_reduce.py, an op family's
    ``__init__.py``) recompiles the kernels that call it."""
    return _kernel_cache_class()(fn)


def kernel(*signatures):
    """Decorator of a cuda kernel: ``numba.cuda.jit``, compiled on first launch
    for the argument types it meets, and listed in ``KERNELS``. Its launches
    do not warn about low occupancy (``quiet_low_occupancy_warnings``).

    Returns a ``CupyLaunched`` kernel (launched as ``k[blocks, threads](*args)``).
    Compiled kernels are cached on disk (``cache=True``: the ``__pycache__``
    beside the source, else numba's user cache directory), so a new process
    skips the compile; where no directory is writable numba refuses caching
    at decoration, and the kernel is then compiled in each process instead.

    Parameters
    ----------
    *signatures : str
        The signatures training launches the kernel with, for the PTX table;
        ``{f}`` in a template stands for float32 and for float64, e.g.
        ``"void({f}[::1], {f}[::1], int64)"``.
    """
    from numba import cuda
    quiet_low_occupancy_warnings()

    def decorate(fn):
        try:
            dispatcher = cuda.jit(cache=True)(fn)
        except RuntimeError:
            dispatcher = cuda.jit(fn)
        else:
            if not SIMULATOR:
                # Keyed also by the device functions it calls from other files.
                dispatcher._cache = kernel_cache(fn)
        KERNELS.append(Kernel(fn.__module__, fn.__name__, fn, signatures, dispatcher))
        return CupyLaunched(dispatcher, fn)
    return decorate


# watch_launches: the callbacks, and numba's own __getitem__ of each dispatcher type
# it patched (for kernels that are not tinynet's, e.g. the labs' variants).
_WATCHERS = []
_UNWATCHED = {}


def _numba_launch(dispatcher, config):
    """``dispatcher[config]`` through numba's own __getitem__, unwatched: a
    CupyLaunched kernel reports its launches to the watchers itself."""
    getitem = _UNWATCHED.get(type(dispatcher))
    return getitem(dispatcher, config) if getitem else dispatcher[config]


@contextlib.contextmanager
def watch_launches(callback):
    """Within the block, call ``callback(py_func, args)`` at every numba.cuda kernel
    launch (any kernel, the lab's too), before the kernel runs, once per launch
    whichever launcher runs it."""
    if not KERNELS:
        raise RuntimeError("watch_launches: no cuda kernel is defined yet")
    dispatcher_type = type(KERNELS[0].dispatcher)
    getitem = _UNWATCHED.setdefault(dispatcher_type, dispatcher_type.__getitem__)

    def watched_getitem(self, config):
        launch = getitem(self, config)
        py_func = getattr(self, "py_func", None) or self.fn

        def watched_launch(*args):
            for watcher in _WATCHERS:
                watcher(py_func, args)
            return launch(*args)
        return watched_launch
    _WATCHERS.append(callback)
    dispatcher_type.__getitem__ = watched_getitem
    try:
        yield
    finally:
        _WATCHERS.remove(callback)
        if not _WATCHERS:
            dispatcher_type.__getitem__ = _UNWATCHED.pop(dispatcher_type)


def signatures_of(templates):
    """The concrete signatures of ``kernel``'s templates, "{f}" expanded."""
    out = []
    for t in templates:
        for f in (FLOAT_TYPES if "{f}" in t else (None,)):
            sig = t.format(f=f) if f else t
            if sig not in out:
                out.append(sig)
    return out
