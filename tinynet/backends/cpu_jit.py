"""The cpu backend's machinery: ``@njit_kernel``, the one decorator every cpu kernel
is compiled with, and the vectorizable exp / expm1 the kernels share.

``njit_kernel(**options)`` is ``numba.njit(cache=True, fastmath=FASTMATH,
**options)`` with these rules built in:

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

Cache accounting (``tinynet info``, ``tinynet warmup``): ``kernels()`` lists
the kernels that compile on their own, ``cached_signatures(kernel)`` reads
which signatures its cache holds for this CPU and this source (numba's index
keys each compiled signature by the CPU's name and features and by a hash of
the function's bytecode, so a cache filled on another CPU or from an older
source counts as empty), ``held_signatures()`` says which ones this process
has compiled or loaded, and inside ``cache_only()`` a kernel that would
compile raises ``CacheMiss`` instead.

``vector_exp(v)`` and ``vector_expm1(v)`` are exp(v) and exp(v) - 1 for use
inside kernels, in v's own precision (float32 or float64), within 1 ulp, and
without libm: a loop that calls libm's exp does not vectorize, a loop that
calls these does. ``vector_exp_f32`` / ``vector_exp_f64`` (and the same for
expm1) are the two precisions by name, for a kernel written for one dtype.
``vector_exp_normal_f32(a)`` is a cheaper float32 exp for a <= 0 whose
results below float32's normal range are 0 (float32 GELU's exp(-v^2 / 2)).
"""
import contextlib
import pickle
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.caching import FunctionCache
from numba.extending import intrinsic, overload

from .jit_cache import DependencyKeyed

__all__ = ["njit_kernel", "FASTMATH", "wide_vectors", "WIDE_VECTOR_BITS", "vector_exp", "vector_expm1", "vector_exp_f32",
           "vector_exp_f64", "vector_exp_normal_f32", "EXP_NORMAL_COEFFICIENTS", "vector_expm1_f32", "vector_expm1_f64", "kernels", "kernel_name",
           "signature_text", "cached_signatures", "held_signatures", "cache_only", "CacheMiss"]

FASTMATH = frozenset({"reassoc", "contract"})

# every dispatcher njit_kernel made, in the order the modules defined them
_KERNELS = []
# True inside cache_only(): a cache miss raises CacheMiss instead of compiling
_CACHE_ONLY = [False]


class CacheMiss(Exception):
    """Raised inside ``cache_only()`` by a kernel call that would have to compile."""


class _KernelCache(DependencyKeyed, FunctionCache):
    """Numba's on-disk function cache, turned off instead of failing on OSError,
    and keyed also by the helpers the kernel calls from other files
    (``jit_cache``)."""

    def load_overload(self, sig, target_context):
        try:
            overload = super().load_overload(sig, target_context)
        except OSError:
            overload = None
        if overload is None and _CACHE_ONLY[0]:
            raise CacheMiss(f"{kernel_name(self._py_func)}({signature_text(sig)}) "
                            f"is not in the cache")
        return overload

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
        _KERNELS.append(kernel)
        return kernel

    return decorate


def kernel_name(kernel):
    """``module.qualname`` of a kernel (or of its Python function)."""
    func = getattr(kernel, "py_func", kernel)
    return f"{func.__module__}.{func.__qualname__}"


def signature_text(sig):
    """A signature, a tuple of numba types, as text: "array(float32, 2d, C), int64"."""
    return ", ".join(str(t) for t in sig)


def kernels():
    """The tinynet kernels that compile on their own, of the modules imported so far.

    Every ``njit_kernel`` of a ``tinynet`` module but the ``inline="always"``
    helpers: numba pastes those into the kernels that call them, so they
    never compile, nor are cached, by themselves.

    Returns
    -------
    list of numba dispatchers
    """
    return [k for k in _KERNELS if k.py_func.__module__.startswith("tinynet.")
            and k.targetoptions.get("inline", "never") != "always"]


def cached_signatures(kernel):
    """The signatures of ``kernel`` whose compiled code its disk cache holds for this
    process: compiled for this CPU, from the current source.

    Parameters
    ----------
    kernel : numba dispatcher
        A kernel made by ``njit_kernel``.

    Returns
    -------
    set of str
        ``signature_text`` of each; empty when the kernel is not cached, or its
        cache directory holds no index, or an unreadable one.
    """
    cache = kernel._cache
    if not isinstance(cache, _KernelCache):
        return set()
    # numba's index key: (signature, (target triple, CPU, features), bytecode hashes)
    this_process = cache._index_key((), kernel.targetctx.codegen())[1:]
    try:
        index = cache._cache_file._load_index()
    except (OSError, EOFError, pickle.UnpicklingError):
        return set()
    return {signature_text(key[0]) for key in index if key[1:] == this_process}


def held_signatures():
    """kernel name -> set of ``signature_text`` this process has compiled or loaded,
    for each kernel of ``kernels()`` that holds any."""
    return {kernel_name(k): {signature_text(sig) for sig in k.overloads}
            for k in kernels() if k.overloads}


@contextlib.contextmanager
def cache_only():
    """Inside, a kernel call that would compile raises ``CacheMiss`` instead.

    Code already compiled or loaded in this process runs; code in the disk
    cache loads. Only kernels whose cache is on (a writable directory) can
    tell a miss: the others compile as usual.
    """
    previous = _CACHE_ONLY[0]
    _CACHE_ONLY[0] = True
    try:
        yield
    finally:
        _CACHE_ONLY[0] = previous


# exp and expm1 without libm. With v = n ln2 + r, n = round(v / ln2) and
# |r| <= ln2 / 2: exp(v) = 2^n * (1 + q), q = exp(r) - 1 from its Taylor
# series (to r^7 / 7! in float32, r^13 / 13! in float64: truncation below
# half an ulp). 2^n is built from its IEEE-754 exponent field, in two factors
# 2^a * 2^(n - a) so that results down to the smallest subnormal come out
# right. inline="always" makes numba paste these helpers into the calling
# loop: a helper left as a function call keeps that loop from vectorizing
# (float32 GELU ran 40 times slower so).

_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody and Waite): n * hi is exact for every n the range
# reduction meets, lo carries the rest of ln 2.
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_F32_LOG2E = np.float32(_LOG2E)
_F32_LN2_HI = np.float32(0.693359375)
_F32_LN2_LO = np.float32(-2.12194440e-4)


@intrinsic
def _bits_as_float32(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _bits_as_float64(typingctx, bits):
    """The float64 whose IEEE-754 bit pattern is the int64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@njit_kernel(inline="always")
def _pow2_f32(n):
    """2^n for a whole float32 n in [-126, 127]: exponent field n + 127 at bit 23."""
    return _bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


@njit_kernel(inline="always")
def _pow2_f64(n):
    """2^n for a whole float64 n in [-1022, 1023]: exponent field n + 1023 at bit 52."""
    return _bits_as_float64((np.int64(n) + 1023) << 52)


@njit_kernel(inline="always")
def _exp_reduce_f32(v):
    """(n, r) with v = n ln 2 + r, n whole and |r| <= ln(2) / 2, float32."""
    n = np.floor(v * _F32_LOG2E + np.float32(0.5))
    return n, (v - n * _F32_LN2_HI) - n * _F32_LN2_LO


@njit_kernel(inline="always")
def _exp_parts_f32(v):
    """(n, q) with exp(v) = 2^n * (1 + q), for float32 v in [-104, 88]."""
    n, r = _exp_reduce_f32(v)
    q = np.float32(1 / 5040)
    q = q * r + np.float32(1 / 720)
    q = q * r + np.float32(1 / 120)
    q = q * r + np.float32(1 / 24)
    q = q * r + np.float32(1 / 6)
    q = q * r + np.float32(0.5)
    q = (q * r + np.float32(1)) * r
    return n, q


@njit_kernel(inline="always")
def _exp_parts_f64(v):
    """(n, q) with exp(v) = 2^n * (1 + q), for float64 v in [-746, 709]."""
    n = np.floor(v * _LOG2E + 0.5)
    r = (v - n * _LN2_HI) - n * _LN2_LO
    q = 1 / 6227020800
    q = q * r + 1 / 479001600
    q = q * r + 1 / 39916800
    q = q * r + 1 / 3628800
    q = q * r + 1 / 362880
    q = q * r + 1 / 40320
    q = q * r + 1 / 5040
    q = q * r + 1 / 720
    q = q * r + 1 / 120
    q = q * r + 1 / 24
    q = q * r + 1 / 6
    q = q * r + 0.5
    q = (q * r + 1.0) * r
    return n, q


@njit_kernel(inline="always")
def vector_exp_f32(v):
    """``vector_exp`` of a float32 v <= 88: exp(v), subnormal results included; NaN stays NaN."""
    n, q = _exp_parts_f32(min(max(v, np.float32(-104)), np.float32(88)))
    a = np.floor(np.float32(0.5) * n)
    scale = _pow2_f32(a)
    e = (scale + scale * q) * _pow2_f32(n - a)
    e = np.float32(0) if v < np.float32(-104) else e
    return e if v == v else v


@njit_kernel(inline="always")
def vector_exp_f64(v):
    """``vector_exp`` of a float64 v <= 709: exp(v), subnormal results included; NaN stays NaN."""
    n, q = _exp_parts_f64(min(max(v, -746.0), 709.0))
    a = np.floor(0.5 * n)
    scale = _pow2_f64(a)
    e = (scale + scale * q) * _pow2_f64(n - a)
    e = 0.0 if v < -746.0 else e
    return e if v == v else v


# e^r = 1 + r S_e(r) on |r| <= ln(2) / 2, S_e of degree 4 fitted for the
# smallest maximum relative error: 9.5e-8 with these float32 coefficients
# (``python -m kernels.gelu_fit`` prints them and their error).
EXP_NORMAL_COEFFICIENTS = tuple(np.float32(c) for c in (
    0.9999997019767761, 0.4999915063381195, 0.1666763573884964, 0.04189792275428772,
    0.008290302939713001))
_EN0, _EN1, _EN2, _EN3, _EN4 = EXP_NORMAL_COEFFICIENTS
# exp(a) is below float32's smallest normal number for a < -87.34.
_F32_EXP_NORMAL_MIN = np.float32(-87.0)


@njit_kernel(inline="always")
def vector_exp_normal_f32(a):
    """exp(a) of a float32 a <= 0, vectorizable, cheaper than ``vector_exp_f32``.

    One scaling by 2^n (results that would be subnormal, a < -87, are 0) and
    a degree-5 polynomial, ``EXP_NORMAL_COEFFICIENTS`` (relative error 9.5e-8
    before float32 rounding; exp(0) is exactly 1). NaN and a > 0 are not
    handled (a = NaN gives NaN). For kernels whose argument is <= 0 by
    construction, such as float32 GELU's exp(-v^2 / 2).
    """
    n, r = _exp_reduce_f32(a)
    e = _EN4
    e = e * r + _EN3
    e = e * r + _EN2
    e = e * r + _EN1
    e = e * r + _EN0
    e = (np.float32(1) + r * e) * _pow2_f32(n)
    return np.float32(0) if a < _F32_EXP_NORMAL_MIN else e


@njit_kernel(inline="always")
def vector_expm1_f32(v):
    """``vector_expm1`` of a float32 v <= 0: exp(v) - 1, accurate near 0."""
    n, q = _exp_parts_f32(max(v, np.float32(-87)))
    scale = _pow2_f32(n)
    m = np.float32(-1) if v < np.float32(-87) else (scale - np.float32(1)) + scale * q
    return m if v == v else v


@njit_kernel(inline="always")
def vector_expm1_f64(v):
    """``vector_expm1`` of a float64 v <= 0: exp(v) - 1, accurate near 0."""
    n, q = _exp_parts_f64(max(v, -708.0))
    scale = _pow2_f64(n)
    m = -1.0 if v < -708.0 else (scale - 1.0) + scale * q
    return m if v == v else v


def vector_exp(v):
    """exp(v) inside a cpu kernel, in v's own precision, without libm.

    A loop that calls it still vectorizes (a libm call would stop it): it is
    inlined into the caller. It runs inside numba kernels only.

    Parameters
    ----------
    v : float32 or float64
        The argument: float32 v <= 88, float64 v <= 709 (larger v are
        clamped there). Results down to the smallest subnormal are right;
        below that they are 0.

    Returns
    -------
    float32 or float64
        exp(v), v's type, within 1 ulp; NaN stays NaN.
    """
    raise NotImplementedError("vector_exp runs inside numba kernels only")


def vector_expm1(v):
    """exp(v) - 1 inside a cpu kernel, in v's own precision, accurate near 0.

    As ``vector_exp``: inlined, vectorizes, inside numba kernels only.

    Parameters
    ----------
    v : float32 or float64
        The argument, v <= 0.

    Returns
    -------
    float32 or float64
        exp(v) - 1, v's type, within 1 ulp; NaN stays NaN.
    """
    raise NotImplementedError("vector_expm1 runs inside numba kernels only")


# Inside a kernel, pick the implementation from v's numba type when it compiles.
@overload(vector_exp, inline="always")
def _vector_exp_for_type(v):
    return (lambda v: vector_exp_f32(v)) if v == types.float32 else (lambda v: vector_exp_f64(v))


@overload(vector_expm1, inline="always")
def _vector_expm1_for_type(v):
    return ((lambda v: vector_expm1_f32(v)) if v == types.float32
            else (lambda v: vector_expm1_f64(v)))


# -- wide vectors ----------------------------------------------------------------

WIDE_VECTOR_BITS = 512


@intrinsic
def wide_vectors(typingctx):
    """Inside a kernel: vectorize the function it is lowered in with 512-bit vectors.

    On Intel CPUs with AVX-512, LLVM's x86 backend prefers 256-bit vectors
    (a tuning of those CPUs: 512-bit code can lower the clock of older ones),
    and numba compiles every kernel with that preference; for AMD's Zen 4
    and later LLVM already picks 512-bit vectors. A call to
    ``wide_vectors()`` sets LLVM's function attribute
    ``"prefer-vector-width"="512"`` on the LLVM function it is lowered into,
    so that function's loops get 16 float32 lanes instead of 8. Call it in
    the body of the ``prange`` loop (the body becomes numba's gufunc, where
    the loop is vectorized) and in any helper whose own loop should be wide.
    On a CPU without AVX-512, or one LLVM gives 512-bit vectors anyway, it
    changes nothing. The results are the same:
    every lane does the same arithmetic.

    Worth it for compute-bound loops only, like those that evaluate exp
    (``python -m kernels.elementwise --bench``, before and after): GELU's
    forward took 0.70 instead of 0.87 ms on (64, 32, 28, 28), forward +
    backward 1.64 instead of 2.26 ms, on an Intel Xeon with AVX-512.
    The attribute goes through llvmlite's attribute set unchecked (llvmlite
    validates only its own list of attribute names); if that set cannot
    take it, nothing is set and the kernel keeps 256-bit vectors.
    """
    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, f'"prefer-vector-width"="{WIDE_VECTOR_BITS}"')
        except (AttributeError, TypeError):
            pass
        return context.get_dummy_value()
    return types.none(), codegen
