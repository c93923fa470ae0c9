"""The op contract: each op declared once, implemented by every backend.

An op family is one folder, ``tinynet/ops/<family>/`` (docs/architecture.md).
Its ``__init__.py`` is the contract: the family's math in the module
docstring, and every op declared with its signature, its docstring (shapes,
dtypes) and its argument check::

    def _check_x_dy(name, x, dy):             # reads only .shape / .dtype / .ndim,
        check_float(name, "dy", dy)            # so it works on numpy, CuPy and
        check_same_shape(name, "dy", dy, x)    # simulator arrays alike

    @op(check=_check_x_dy)
    def relu_backward(x, dy):
        '''ReLU backward: dx = dy where x > 0 ... (the one docstring)'''

Each backend's module of the family (``ref.py``, ``cpu.py``, ``cuda.py``)
says which op it implements::

    @implements(activation.relu_backward)
    def relu_backward(x, dy):
        ...                                    # only the conversion and the kernel

``implements`` gives the backend function the op's name and docstring (with a
line naming the backend, and the backend function's own docstring, if it has
one, appended as backend notes) and runs the op's check before the kernel, so
an error message is the same on every backend. Conversions (contiguity,
dtype) and checks of backend-specific values (such as a max-pool cache) stay
in the backend. A declaration is not callable: an op runs on a backend
(``tinynet.backends.get_backend().relu_backward(...)``). ``REGISTRY`` maps
each op name to its declaration; ``implementations(backend)`` lists what a
backend module implements, which tests compare with the registry.
"""
import functools
import inspect

import numpy as np

__all__ = ["op", "implements", "REGISTRY", "implementations", "check_float",
           "check_shape", "check_same_shape", "check_ndim"]

# op name -> the ref function that defines it.
REGISTRY = {}


def _checked(fn, check, name):
    """``fn`` behind ``check(name, *args, **kwargs)``; ``fn`` itself without a check."""
    if check is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        check(name, *args, **kwargs)
        return fn(*args, **kwargs)
    return wrapped


def op(check=None):
    """Decorator for an op's declaration in its family's contract: register it.

    The decorated function holds the op's signature and docstring only; the
    result is a declaration that raises TypeError when called, since an op
    runs on a backend.

    Parameters
    ----------
    check : callable or None
        Called as ``check(op_name, *args, **kwargs)`` with the op's arguments
        before the op runs, on every backend. It raises ValueError / TypeError
        with a message that starts with the op's name and names the argument
        and the expected shape or dtype, and returns nothing. It may read
        only ``.shape``, ``.dtype`` and ``.ndim`` of array arguments, so that
        it runs on any backend's arrays without a copy or a device sync.
    """
    def decorate(fn):
        name = fn.__name__

        @functools.wraps(fn)
        def declaration(*args, **kwargs):
            raise TypeError(f"{fn.__module__}.{name} is the declaration of an op; run it "
                            f"on a backend: tinynet.backends.get_backend().{name}(...)")
        declaration.contract_check = check
        declaration.contract_ref = declaration
        REGISTRY[name] = declaration
        return declaration
    return decorate


def implements(declared, backend=None):
    """Decorator for a backend op: it implements the declared op ``declared``.

    The decorated function gets the op's name and docstring, a first line
    naming the backend, its own docstring (if any) appended as backend notes,
    and runs the op's check before itself.

    Parameters
    ----------
    declared : function
        An op declared with ``op`` in its family's contract
        (``tinynet/ops/<family>/__init__.py``).
    backend : str or None
        The backend's name for the docstring; by default the last part of the
        decorated function's module name (``tinynet.ops.norm.cpu`` -> "cpu").
    """
    if getattr(declared, "contract_ref", None) is not declared:
        raise TypeError(f"implements: {declared!r} is not a declared op")

    def decorate(fn):
        if fn.__name__ != declared.__name__:
            raise TypeError(f"implements: {fn.__name__} must be named {declared.__name__}")
        name = backend or fn.__module__.rsplit(".", 1)[-1]
        wrapped = functools.wraps(declared)(_checked(fn, declared.contract_check, fn.__name__))
        if wrapped is fn:
            wrapped = functools.wraps(declared)(lambda *a, **k: fn(*a, **k))
        doc = (f"[{name} backend: implements {declared.__module__}.{declared.__name__}]\n\n"
               f"{inspect.cleandoc(declared.__doc__ or '')}")
        if fn.__doc__:
            doc += f"\n\nNotes\n-----\nThe {name} backend:\n{inspect.cleandoc(fn.__doc__)}"
        wrapped.__doc__ = doc
        wrapped.__module__ = fn.__module__
        wrapped.__wrapped__ = fn
        wrapped.contract_ref = declared
        wrapped.kernel = fn
        return wrapped
    return decorate


def implementations(backend_module):
    """Names of the registered ops that ``backend_module`` defines."""
    return sorted(name for name in REGISTRY if hasattr(backend_module, name))


def _describe(a):
    """An array's dtype, or the type name of a non-array, for error messages."""
    return getattr(a, "dtype", type(a).__name__)


def check_float(name, arg, a):
    """TypeError unless ``a`` is a float32 or float64 array."""
    if getattr(a, "dtype", None) not in (np.float32, np.float64):
        raise TypeError(f"{name}: {arg} must be float32 or float64, got {_describe(a)}")


def check_ndim(name, arg, a, ndim, what):
    """ValueError unless ``a`` has ``ndim`` axes; ``what`` names them, e.g. "(N, C, H, W)"."""
    if a.ndim != ndim:
        raise ValueError(f"{name}: {arg} must have shape {what}, got shape {a.shape}")


def check_shape(name, arg, a, shape):
    """ValueError unless ``a`` (an array or None for "absent") has ``shape``."""
    if a is not None and tuple(getattr(a, "shape", ())) != tuple(shape):
        raise ValueError(f"{name}: {arg} must have shape {tuple(shape)}, "
                         f"got {getattr(a, 'shape', type(a).__name__)}")


def check_same_shape(name, arg, a, like, what="the shape of the cached tensor"):
    """ValueError unless ``a`` has ``like``'s shape."""
    if getattr(a, "shape", None) != like.shape:
        raise ValueError(f"{name}: {arg} must have {what} {like.shape}, "
                         f"got {getattr(a, 'shape', type(a).__name__)}")
