"""Numba's disk cache, made to notice an edit to a helper in another file.

Numba keys each cached signature of a kernel by the hash of the kernel's own
bytecode, and drops a kernel's whole cache when the kernel's own source file
changes (its modification time or size). Code a kernel calls from another
file is compiled into it, but an edit there changes neither: after editing,
say, the Adam element update in ``tinynet/ops/optim/__init__.py``, the
kernels in ``cpu.py`` and ``cuda.py`` would load their old compiled code
from the cache and run the old math.

``dependency_digest(func)`` closes that gap. It follows the global names
``func`` reads (its own bytecode and that of its nested functions) to the
functions, numba dispatchers, intrinsics and modules of ``func``'s own
package (``tinynet`` for tinynet's kernels), and on through their globals,
and hashes

- the source file of every module it reaches that way, as it was when this
  process first asked (files of other packages, numpy's say, are left out:
  they change only with an install), and
- the values of the global constants it reads (numba compiles a global
  number, tuple or array into the kernel as a constant), wherever they were
  defined.

``DependencyKeyed`` adds that digest to numba's index key, so a cached
signature compiled against other helpers is a miss and compiles again. It is
mixed into the cpu kernels' cache (``cpu_jit._KernelCache``) and the cuda
kernels' (``cuda_device.kernel``). An edit anywhere in the files a kernel
reaches recompiles it, a comment too; a kernel that reaches none of them
keeps numba's own key and one more hash.
"""
import functools
import hashlib
import sys
import types

import numpy as np

__all__ = ["dependency_digest", "dependency_files", "DependencyKeyed"]

# Global values that numba freezes into a kernel as constants (tuples of them too).
_SCALAR_TYPES = (bool, int, float, complex, str, bytes, np.generic)


def _is_constant(value):
    """Whether numba would freeze ``value`` as a constant, with a repr that is the
    same in every process (no object addresses)."""
    if isinstance(value, _SCALAR_TYPES):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, tuple):
        return all(_is_constant(v) for v in value)
    return False


def _code_objects(code):
    """``code`` and every code object nested in it (inner functions, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _python_function(value):
    """The Python function behind a global a kernel may call, or None: a numba
    dispatcher's ``py_func``, an intrinsic's or an overload template's
    definition, or a plain function."""
    for attr in ("py_func", "_defn"):
        inner = getattr(value, attr, None)
        if isinstance(inner, types.FunctionType):
            return inner
    return value if isinstance(value, types.FunctionType) else None


def _constant_bytes(value):
    """The bytes of a global constant as numba would freeze it."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype.str}{value.shape}".encode() + np.ascontiguousarray(value).tobytes()
    return repr(value).encode()


def _walk(func):
    """(module names, constants) that ``func`` reaches in its own package, and the
    constant values it reads: see the module docstring."""
    package = func.__module__.split(".")[0]
    modules, constants = set(), []
    seen, todo = set(), [func]
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if fn.__module__ and fn.__module__.split(".")[0] == package:
            modules.add(fn.__module__)
        names = sorted({n for code in _code_objects(fn.__code__) for n in code.co_names})
        for name in names:
            if name not in fn.__globals__:
                continue
            value = fn.__globals__[name]
            if isinstance(value, types.ModuleType):
                if value.__name__.split(".")[0] == package:
                    modules.add(value.__name__)
                continue
            inner = _python_function(value)
            if inner is not None:
                if (inner.__module__ or "").split(".")[0] == package:
                    todo.append(inner)
            elif _is_constant(value):
                constants.append((f"{fn.__module__}.{name}", _constant_bytes(value)))
    return modules, sorted(constants)


def _source_files(modules):
    """(module name, source path) of each of ``modules`` loaded from a .py file, sorted."""
    paths = ((m, getattr(sys.modules.get(m), "__file__", None)) for m in sorted(modules))
    return [(m, path) for m, path in paths if path and path.endswith(".py")]


def dependency_files(func):
    """The source files whose edits ``dependency_digest(func)`` notices, sorted."""
    return sorted(path for _, path in _source_files(_walk(func)[0]))


@functools.lru_cache(maxsize=None)
def _file_digest(path):
    """sha256 of a source file's bytes, read once per process."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=None)
def dependency_digest(func):
    """A sha256 hex digest of the source files ``func`` reaches in its package and
    of the global constants it reads (module docstring); computed once per
    process, so it describes the code this process imported."""
    modules, constants = _walk(func)
    h = hashlib.sha256()
    for name, path in _source_files(modules):
        h.update(name.encode() + b"\0" + _file_digest(path).encode() + b"\0")
    for name, data in constants:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


class DependencyKeyed:
    """Mixin for a numba ``Cache`` subclass: its index key also holds
    ``dependency_digest`` of the cached function (module docstring)."""

    def _index_key(self, sig, codegen):
        # numba's key is (signature, target, ..., (bytecode hash, closure hash)),
        # numba-cuda's has its version before the hashes and may end with a
        # launch configuration: the digest goes last, named.
        key = super()._index_key(sig, codegen)
        return key + (("dependencies", dependency_digest(self._py_func)),)
