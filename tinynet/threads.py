"""Thread pools: one default for Numba and BLAS, and one knob for both.

A cpu training step alternates Numba ``prange`` kernels with BLAS GEMMs
(``numpy.matmul`` on the OpenBLAS bundled with numpy). Each runs its own
thread pool. A pool that is idle but still spinning takes cores from the
other one.

Measured on this machine (2 cores, shared with other jobs: load average 2 to
6) with ``python -m kernels.threads --rounds 5``: launch = one tiny parallel
kernel; a bias+ReLU+sum kernel on (64, 32, 28, 28) float32 interleaved with a
(12544, 288) x (288, 64) float32 GEMM; ratio = interleaved / (kernel + GEMM),
best of 5 rounds:

    layer      OMP_WAIT_POLICY  BLAS threads  launch us  kernel ms  GEMM ms  interleaved ms  ratio
    omp        unset            2                 302       0.65     9.19           22.75   2.31
    omp        unset            1                 202       1.40     6.75           16.41   2.01
    omp        PASSIVE          2                  11       0.52     3.69            4.54   1.08
    omp        PASSIVE          1                  11       0.56     7.00            7.34   0.97
    workqueue  unset            2                  72       0.42     3.75            4.55   1.09
    workqueue  unset            1                  81       0.41     6.79            7.78   1.08

(OMP_WAIT_POLICY does not change the workqueue rows.) With numba's default
layer here (omp: GNU libgomp) and the default wait policy, idle omp workers
spin after each kernel and compete with the GEMM that follows and with
anything else on the machine: interleaving costs twice the sum of its parts.
``OMP_WAIT_POLICY=PASSIVE`` puts them to sleep at once and removes the
slowdown, at about 10 us per launch. The workqueue layer does not spin
either, but each launch costs about 70 us, which adds up over the dozens of
small kernels in a training step, and it aborts when two Python threads run
parallel kernels at once. BLAS with 2 threads beats 1 once nothing spins. So
the default is: the omp layer, preferred over the others, with
``OMP_WAIT_POLICY=PASSIVE``, and BLAS left at its default (one thread per core).

``configure_threading()`` sets that default, each part only when the user has
not set it (``import tinynet`` calls it). What is effective, and when:

- ``NUMBA_THREADING_LAYER`` / ``NUMBA_THREADING_LAYER_PRIORITY``: read when
  numba launches its pool, at the first parallel kernel (or the first
  ``numba.set_num_threads`` / ``numba.get_num_threads``). After that the
  layer is fixed for the process.
- ``OMP_WAIT_POLICY``: read by libgomp when it is loaded, which numba does
  when it launches the omp layer, so setting it from Python works until then.
  It is an environment variable: OpenMP runtimes loaded later in the same
  process (e.g. torch's own libgomp, if torch is imported after tinynet) and
  child processes read it too. Set ``OMP_WAIT_POLICY`` yourself, or import
  torch first, to keep their spinning default.
- ``OPENBLAS_NUM_THREADS``: read when OpenBLAS is loaded, i.e. at
  ``import numpy``; setting it later has no effect. ``set_num_threads`` sets
  the BLAS thread count at run time instead.
- GNU OpenMP is not fork-safe: a child forked after the parent ran a parallel
  kernel is terminated when it runs one itself. Use the "spawn" start method
  for worker processes, or ``NUMBA_THREADING_LAYER=workqueue``.
"""
import ctypes
import os
import sys

import numpy as np

__all__ = ["configure_threading", "set_num_threads", "get_num_threads"]

LAYER_PRIORITY = ("omp", "tbb", "workqueue")
_NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]  # numba's own default
OMP_WAIT_POLICY = "PASSIVE"

# OpenBLAS thread-count entry points, numpy 2.x wheels (scipy-openblas, 64-bit
# ints) first, then the plain names of older wheels and system OpenBLAS.
_BLAS_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
             "openblas_set_num_threads64_", "openblas_set_num_threads")
_BLAS_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
             "openblas_get_num_threads64_", "openblas_get_num_threads")

_blas_functions = {}  # library path -> (set, get), or None when it has neither


def configure_threading():
    """Apply tinynet's threading default where the user has not chosen.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless ``OMP_WAIT_POLICY`` is set, and
    numba's threading layer priority to omp, tbb, workqueue (numba's own is
    tbb, omp, workqueue) unless ``NUMBA_THREADING_LAYER`` or
    ``NUMBA_THREADING_LAYER_PRIORITY`` is set or ``numba.config`` already
    names a layer or another priority. Does nothing once numba's pool is running, because neither
    can change then. It does not import numba: when numba is not imported
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
        # its spinning workers then slow every GEMM (a training step ran 7x
        # slower). The workqueue layer never spins, so take it then.
        layers = ("workqueue", "tbb", "omp") if spinning_gomp else LAYER_PRIORITY
        priority = " ".join(layers)
        os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = priority
        applied["NUMBA_THREADING_LAYER_PRIORITY"] = priority
        # numba reads its environment at import; update it if that already happened.
        if numba is not None:
            numba.config.THREADING_LAYER_PRIORITY = list(layers)
    return applied


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
    """Use ``n`` threads in numba's parallel kernels and in BLAS (numpy's OpenBLAS).

    Numba's count applies to the calling thread, as ``numba.set_num_threads``
    does. The BLAS count is process-wide. When no OpenBLAS with a known
    thread-count function is loaded (another BLAS, or no ``/proc/self/maps``
    to find it in), only numba's count changes and ``get_num_threads()``
    reports ``blas=None``.

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
    for set_blas, _ in _openblas_functions():
        set_blas(n)


def get_num_threads():
    """Thread counts in use: ``{"numba": int, "blas": int or None}``.

    ``blas`` is the count of numpy's OpenBLAS, or None when it could not be
    found (see ``set_num_threads``).
    """
    import numba
    functions = _openblas_functions()
    blas = functions[0][1]() if functions else None
    return {"numba": numba.get_num_threads(), "blas": blas}


def _openblas_functions():
    """(set, get) for each loaded OpenBLAS that exports them, numpy's first."""
    # numpy's own copy lives in numpy.libs/ (Linux wheels) or numpy/.dylibs/ (macOS).
    numpy_prefix = os.path.dirname(np.__file__)
    paths = sorted(_loaded_openblas_paths(), key=lambda path: not path.startswith(numpy_prefix))
    functions = []
    for path in paths:
        if path not in _blas_functions:
            _blas_functions[path] = _bind_openblas(path)
        if _blas_functions[path] is not None:
            functions.append(_blas_functions[path])
    return functions


def _loaded_openblas_paths():
    """Paths of the shared libraries with "openblas" in their name mapped into this process."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        path = line.split(maxsplit=5)[-1].strip()
        if "openblas" in os.path.basename(path).lower() and path not in paths:
            paths.append(path)
    return paths


def _bind_openblas(path):
    """The library's (set, get) thread-count functions, or None."""
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    for set_name, get_name in zip(_BLAS_SET, _BLAS_GET):
        set_blas = getattr(library, set_name, None)
        get_blas = getattr(library, get_name, None)
        if set_blas is not None and get_blas is not None:
            set_blas.argtypes, set_blas.restype = [ctypes.c_int], None
            get_blas.argtypes, get_blas.restype = [], ctypes.c_int
            return set_blas, get_blas
    return None
