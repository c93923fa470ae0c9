"""The one decorator every cpu kernel is compiled with: ``@njit_kernel(parallel=True)``.

``njit_kernel(**options)`` is ``numba.njit(cache=True, fastmath=FASTMATH,
**options)`` with two rules built in:

- fastmath is ``{'reassoc', 'contract'}``: reductions may be reassociated
  (so they vectorize) and multiply-adds may fuse into FMAs. Never all of
  fastmath (the flag set to True): it adds ``nnan`` and ``ninf``, under which LLVM folds
  ``np.isnan(v)`` to False, so NaN checks and NaN propagation silently vanish.
- ``error_model="numpy"`` by default: a float division by zero gives inf or
  NaN, as in numpy, instead of raising; Python's model adds a zero-divisor
  check to every division, which stopped the Adam kernel's loop from
  vectorizing (6x slower, ``python -m kernels.optim --bench``).
- compiled code is cached on disk when some directory is writable, and not
  cached otherwise. Numba looks for a cache directory in this order:
  ``$NUMBA_CACHE_DIR``, the ``__pycache__`` beside the source file, then the
  user cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``). When
  none is writable (a read-only install under a read-only home), plain
  ``numba.njit(cache=True)`` raises RuntimeError at decoration, that is at
  import; here the kernel is then compiled without a cache, so the package
  still imports and runs, only each process compiles anew. A directory that
  stops being writable later (disk full, permissions changed) makes the save
  after the first compile raise OSError; here that save is skipped with a
  warning and the kernel runs.

``kernel.stats.cache_path`` (numba's own attribute) says where a kernel is
cached, or None when it is not.
"""
import warnings

import numba
from numba.core.caching import FunctionCache

__all__ = ["njit_kernel", "FASTMATH"]

FASTMATH = frozenset({"reassoc", "contract"})


class _KernelCache(FunctionCache):
    """Numba's on-disk function cache, turned off instead of failing on OSError."""

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except OSError:
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except OSError as error:
            self.disable()
            warnings.warn(f"njit_kernel: cannot write the compile cache in {self.cache_path} "
                          f"({error}); this kernel now runs without a cache", RuntimeWarning)


def njit_kernel(cache=True, **options):
    """Decorator factory: ``numba.njit`` with tinynet's fastmath flags and a safe cache.

    Parameters
    ----------
    cache : bool
        Cache compiled code on disk when a writable directory exists
        (see the module docstring). False never caches.
    **options
        Passed to ``numba.njit``, e.g. ``parallel=True``. ``fastmath`` is
        fixed to ``FASTMATH`` and cannot be passed.

    Returns
    -------
    callable
        A decorator that turns a Python function into a numba dispatcher.

    Examples
    --------
    >>> @njit_kernel(parallel=True)
    ... def scale(x, a, out):
    ...     for i in numba.prange(x.shape[0]):
    ...         out[i] = a * x[i]
    """
    if "fastmath" in options:
        raise TypeError("njit_kernel: fastmath is fixed to {'reassoc', 'contract'}; "
                        "do not pass it (full fastmath folds np.isnan to False)")

    def decorate(func):
        options.setdefault("error_model", "numpy")
        kernel = numba.njit(fastmath=set(FASTMATH), **options)(func)
        if cache:
            try:
                # What numba's own cache=True installs, via Dispatcher.enable_caching.
                kernel._cache = _KernelCache(func)
            except RuntimeError:
                # No writable cache directory: keep numba's NullCache.
                pass
        return kernel

    return decorate
