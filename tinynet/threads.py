"""Thread pools: one default for Numba and BLAS, and one knob for both.

A cpu training step alternates Numba ``prange`` kernels with BLAS GEMMs
(``numpy.matmul`` on the OpenBLAS bundled with numpy). Each runs its own
thread pool. A pool that is idle but still spinning takes cores from the
other one.

The default is numba's **tbb** layer (the ``tbb`` package, a dependency of
tinynet on Linux and Windows x86-64, its wheels' platforms; elsewhere ``pip
install tinynet[tbb]`` asks for it), then omp with
``OMP_WAIT_POLICY=PASSIVE``, then workqueue. ``preload_tbb`` makes numba find
a pip-installed libtbb in a virtual environment. Why, measured on an Intel
Xeon with 2 cores (``python -m kernels.system.threads --rounds 3``, quiet
machine, 2026-12-04): launch = one tiny parallel kernel; a bias+ReLU+sum
kernel on (64, 32, 28, 28) float32 interleaved with a (12544, 288) x (288,
64) float32 GEMM; ratio = interleaved / (kernel + GEMM), best of 3 rounds:

    layer      OMP_WAIT_POLICY  BLAS threads  launch us  kernel ms  GEMM ms  interleaved ms  ratio
    omp        unset            2                 4.3       0.34     1.78            6.97   3.28
    omp        PASSIVE          2                 4.3       0.66     1.80            2.34   0.95
    omp        PASSIVE          1                 4.1       0.67     3.29            3.81   0.96
    tbb        unset            2                 2.4       0.49     1.80            2.30   1.01
    tbb        unset            1                 2.1       0.53     3.26            3.76   0.99
    workqueue  unset            1                93.1       0.56     3.25            3.88   1.02

- omp with libgomp's default wait policy: idle workers spin after each
  kernel and compete with the GEMM that follows and with anything else on
  the machine; interleaving costs three times the sum of its parts.
- omp with ``PASSIVE``: workers sleep at once, so nothing competes, but
  every kernel then pays for waking a sleeping core (the kernel alone takes
  0.66 ms instead of 0.34). A virtual machine whose idle vCPU halts pays
  the most.
- tbb: workers spin a short, bounded while and then sleep. No
  interference (ratio 1.0) and a cheaper wake-up than PASSIVE. In the
  training step (``python -m kernels.system.instep [--model speedrun --norm
  none --batch 256] --rounds 3 --settings "no torch;no torch, omp
  passive;no torch, spin 20k"``, "no torch" being tbb) the reference CNN's
  step took 0.83x and the speedrun model's 0.84x of its time on omp +
  PASSIVE on a quiet machine, and 1.02x and 0.98x with another process
  keeping one core busy, where a bounded omp spin (``OMP_WAIT_POLICY=ACTIVE
  GOMP_SPINCOUNT=20000``) took 1.46x and 1.37x of tbb's time
  (docs/performance.md, Threads).
- workqueue never spins, but each launch costs 30 to 110 us, which adds up
  over the dozens of small kernels in a step, and it aborts when two Python
  threads run parallel kernels at once.

The large GEMMs of Conv2D and Dense run inside numba's pool (single-threaded
BLAS calls from a ``prange``, ``single_threaded_kernel_blas``), so numba's
and BLAS's pools do not take turns on the cores.

When a GNU OpenMP runtime is already loaded (torch imported before tinynet),
numba's omp layer would run on it with the wait policy it read at load
time; the priority is then tbb, workqueue, omp. On tbb every op of the step
stayed within 1.04x of its torch-free time and the step ran at 0.92x
(``python -m kernels.system.instep``, settings "torch first, ..."); on the
workqueue layer the step took 1.14x and the small kernels up to 1.54x, by
its launch cost.

``configure_threading()`` sets that default, each part only when the user has
not set it; ``tinynet.process.apply()`` calls it when the cpu backend first
loads or at ``tn.set_num_threads`` (importing tinynet does not). What is
effective, and when:

- ``NUMBA_THREADING_LAYER`` / ``NUMBA_THREADING_LAYER_PRIORITY``: read when
  numba launches its pool, at the first parallel kernel (or the first
  ``numba.set_num_threads`` / ``numba.get_num_threads``). After that the
  layer is fixed for the process.
- ``OMP_WAIT_POLICY``: read by libgomp when it is loaded, which numba does
  when it launches the omp layer, so setting it from Python works until then.
  It is an environment variable: OpenMP runtimes loaded later in the same
  process (e.g. torch's own libgomp, if torch is imported after tinynet's
  first cpu op) and child processes read it too. Set ``OMP_WAIT_POLICY`` yourself, or import
  torch first, to keep their spinning default.
- ``OPENBLAS_NUM_THREADS``: read when OpenBLAS is loaded, i.e. at
  ``import numpy``; setting it later has no effect. ``set_num_threads`` sets
  the BLAS thread count at run time instead.
- GNU OpenMP is not fork-safe: a child forked after the parent ran a parallel
  kernel is terminated when it runs one itself. Use the "spawn" start method
  for worker processes, or ``NUMBA_THREADING_LAYER=workqueue``.
"""
import os
import sys

import numpy as np
import threadpoolctl

__all__ = ["configure_threading", "preload_tbb", "set_num_threads", "get_num_threads", "blas_info",
           "single_threaded_blas", "single_threaded_kernel_blas", "single_threaded_numpy_blas"]

LAYER_PRIORITY = ("tbb", "omp", "workqueue")
TORCH_FIRST_PRIORITY = ("tbb", "workqueue", "omp")
APPLIED = {}
"""The environment variables ``configure_threading`` set in this process, name
-> value (child processes inherit them; the lab removes them for children
that must start with their own defaults)."""
_NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]  # numba's own default
OMP_WAIT_POLICY = "PASSIVE"


def configure_threading():
    """Apply tinynet's threading default where the user has not chosen.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless ``OMP_WAIT_POLICY`` is set, and
    numba's threading layer priority to tbb, omp, workqueue (numba's own
    order; tbb, workqueue, omp when a spinning GNU OpenMP runtime is already
    loaded), and loads a pip-installed libtbb (``preload_tbb``), unless
    ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` is set or
    ``numba.config`` already names a layer or another priority. Does nothing
    once numba's pool is running, because neither can change then. It does not import numba: when numba is not imported
    yet, numba reads these variables at its import.

    Returns
    -------
    dict
        The settings it applied, name -> value; empty when it applied none.
    """
    numba = sys.modules.get("numba")
    if numba is not None and _numba_pool_running(numba):
        return {}
    applied = {}
    spinning_gomp = _gomp_loaded() and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = applied["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    if not _user_chose_layer(numba):
        # A GNU OpenMP runtime loaded before us (torch imported first, say) has
        # already read its wait policy, and numba's omp layer would bind to it:
        # its spinning workers slowed the step 1.4x to 2.4x while BLAS ran
        # with two threads (python -m kernels.system.instep). TBB (the optional
        # ``tbb`` package) does not share that runtime and kept every op of
        # the step at its torch-free time; the workqueue layer, which never
        # spins either, is the fallback.
        layers = TORCH_FIRST_PRIORITY if spinning_gomp else LAYER_PRIORITY
        priority = " ".join(layers)
        os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = priority
        applied["NUMBA_THREADING_LAYER_PRIORITY"] = priority
        # numba reads its environment at import; update it if that already happened.
        if numba is not None:
            numba.config.THREADING_LAYER_PRIORITY = list(layers)
    if not _user_chose_layer(numba) or "tbb" in _layers_numba_may_take(numba):
        preload_tbb()
    APPLIED.update(applied)
    return applied


def _layers_numba_may_take(numba):
    """The threading layers numba may launch, as the environment and its config say."""
    chosen = os.environ.get("NUMBA_THREADING_LAYER", "") or (
        numba.config.THREADING_LAYER if numba is not None else "")
    if chosen and chosen != "default":
        return [chosen]
    return os.environ.get("NUMBA_THREADING_LAYER_PRIORITY", " ".join(_NUMBA_PRIORITY)).split()


def preload_tbb():
    """Make numba's tbb layer loadable when pip installed TBB into this environment.

    The ``tbb`` wheel puts libtbb.so.12 in ``<prefix>/lib``, which the dynamic
    loader does not search in a virtual environment, so numba's tbbpool
    extension fails to load and numba falls back to the next layer (with
    torch's OpenMP loaded first, the workqueue layer, whose launch cost made
    the small ops of a step 1.3 to 2.3x slower). Loading the library first,
    with RTLD_GLOBAL, lets tbbpool's dependency resolve to it. Nothing is
    loaded when the loader already finds libtbb.so.12 (a system TBB) or no
    environment holds one.

    Returns
    -------
    str or None
        The path loaded, or None.
    """
    import ctypes
    try:
        ctypes.CDLL("libtbb.so.12")
        return None  # the loader finds it by itself
    except OSError:
        pass
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix)):
        path = os.path.join(prefix, "lib", "libtbb.so.12")
        if os.path.isfile(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue  # a broken or foreign library: numba falls back as before
            return path
    return None


def _gomp_loaded():
    """True when a GNU OpenMP runtime (libgomp) is already mapped into this process."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


def _user_chose_layer(numba):
    """True when the environment or numba's config already names a layer or a priority."""
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return True
    return numba is not None and (numba.config.THREADING_LAYER != "default" or
                                  numba.config.THREADING_LAYER_PRIORITY != _NUMBA_PRIORITY)


def _numba_pool_running(numba):
    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def set_num_threads(n):
    """Use ``n`` threads in numba's parallel kernels and in BLAS.

    Numba's count applies to the calling thread, as ``numba.set_num_threads``
    does. The BLAS count is set with threadpoolctl for every BLAS loaded in
    the process (numpy's OpenBLAS, and torch's when torch is imported) and is
    process-wide. When threadpoolctl finds no BLAS, only numba's count changes
    and ``get_num_threads()`` reports ``blas=None``.

    Parameters
    ----------
    n : int
        Threads, 1 <= n <= ``numba.config.NUMBA_NUM_THREADS`` (the pool size,
        fixed by ``NUMBA_NUM_THREADS`` when numba is imported).

    Raises
    ------
    TypeError
        If n is not an int.
    ValueError
        If n is outside 1..NUMBA_NUM_THREADS.
    """
    import numba
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be in 1..{limit} "
                         f"(NUMBA_NUM_THREADS={limit}), got {n}")
    numba.set_num_threads(n)
    threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """Thread counts in use: ``{"numba": int, "blas": int or None}``.

    ``blas`` is the count of numpy's BLAS (see ``blas_info``), or None when
    threadpoolctl finds no BLAS.
    """
    import numba
    info = blas_info()
    return {"numba": numba.get_num_threads(), "blas": info["num_threads"] if info else None}


def blas_info():
    """threadpoolctl's record of numpy's BLAS, or None when none is loaded.

    Returns
    -------
    dict or None
        Keys as ``threadpoolctl.threadpool_info()``: ``internal_api`` (e.g.
        "openblas"), ``num_threads``, ``filepath``, ``version``,
        ``threading_layer``, ``architecture``. numpy's own copy (the library
        under numpy's install directory) comes before any other BLAS.
    """
    libraries = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    # numpy's copy lives in numpy.libs/ (Linux wheels) or numpy/.dylibs/ (macOS).
    numpy_dir = os.path.dirname(np.__file__)
    libraries.sort(key=lambda lib: not lib["filepath"].startswith((numpy_dir + os.sep,
                                                                   numpy_dir + ".libs" + os.sep)))
    return libraries[0] if libraries else None


_kernel_blas = None


def _kernel_blas_libraries():
    """threadpoolctl's controller of the BLAS that numba's ``np.dot`` calls.

    Numba's nopython ``np.dot`` calls the BLAS behind
    ``scipy.linalg.cython_blas`` (scipy's own OpenBLAS in the PyPI wheels).
    When no loaded BLAS lives under scipy's directories (a scipy linked to a
    shared system BLAS), every loaded BLAS is taken, since numpy's may be the
    same library.
    """
    global _kernel_blas
    if _kernel_blas is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba calls)
        controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
        scipy_dir = os.path.dirname(scipy.__file__)
        own = [lib for lib in controller.lib_controllers
               if lib.filepath.startswith((scipy_dir + os.sep, scipy_dir + ".libs" + os.sep))]
        _kernel_blas = own or controller.lib_controllers
    return _kernel_blas


class single_threaded_blas:
    """Context manager: the given BLAS libraries run on one thread inside it.

    Parameters
    ----------
    libraries : list
        threadpoolctl library controllers. On exit each gets its previous
        thread count back.
    """

    def __init__(self, libraries):
        self.libraries = libraries

    def __enter__(self):
        self._saved = [(lib, lib.get_num_threads()) for lib in self.libraries]
        for lib, n in self._saved:
            if n != 1:
                lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for lib, n in self._saved:
            if n != 1:
                lib.set_num_threads(n)
        return False


def single_threaded_kernel_blas():
    """The BLAS of numba's ``np.dot`` on one thread (a context manager).

    A kernel that calls ``np.dot`` from every iteration of a ``prange`` runs
    as many GEMMs at once as numba has threads, one per thread, so BLAS must
    not start threads of its own: they would compete with numba's pool for
    the same cores.
    """
    return single_threaded_blas(_kernel_blas_libraries())


_numpy_blas = None


def single_threaded_numpy_blas():
    """numpy's BLAS (``np.matmul``) on one thread (a context manager).

    OpenBLAS's worker threads keep polling for work for a while after each
    multi-threaded call, on the cores that numba's pool needs next: in the
    reference CNN's step, every numba kernel after a two-thread Dense GEMM
    ran up to 2x slower than alone (``python -m kernels.system.instep``; the step
    took 23 ms with one BLAS thread and 35 ms with two). A GEMM that runs on
    one thread wakes no workers.
    """
    global _numpy_blas
    if _numpy_blas is None:
        info = blas_info()
        controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
        _numpy_blas = [lib for lib in controller.lib_controllers
                       if info is not None and lib.filepath == info["filepath"]]
    return single_threaded_blas(_numpy_blas)
