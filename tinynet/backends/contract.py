"""The backend op contract, written once.

Every op of the contract (docs/architecture.md) has one home: its function in
``tinynet/backends/ref/``. The ref function documents the math and the shapes
in its docstring, and its argument checks are declared with it:

    def _check_relu_backward(x, dy):          # reads only .shape / .dtype / .ndim,
        ...                                    # so it works on numpy, CuPy and
                                               # simulator arrays alike
    @op(check=_check_relu_backward)
    def relu_backward(x, dy):
        '''ReLU backward: dx = dy where x > 0 ... (the one docstring)'''

Every other backend's function says which ref op it implements:

    @implements(ref.activation.relu_backward)
    def relu_backward(x, dy):
        ...                                    # only the kernel and its launch

``implements`` gives the backend function the ref op's name and docstring
(with a line naming the backend) and runs the ref op's check before the
kernel, so an error message is the same on every backend. ``REGISTRY`` maps
each op name to its ref function; ``implementations(backend)`` lists what a
backend module implements, which tests compare with the registry.
"""
import functools

__all__ = ["op", "implements", "REGISTRY", "implementations"]

# op name -> the ref function that defines it.
REGISTRY = {}


def op(check=None):
    """Decorator for a ref op: register it and attach its argument check.

    Parameters
    ----------
    check : callable or None
        Called with the op's arguments before the op runs, on every backend.
        It raises ValueError / TypeError with a message naming the op, the
        argument and the expected shape or dtype, and returns nothing. It may
        read only ``.shape``, ``.dtype`` and ``.ndim`` of array arguments.
    """
    def decorate(fn):
        if check is None:
            wrapped = fn
        else:
            @functools.wraps(fn)
            def wrapped(*args, **kwargs):
                check(*args, **kwargs)
                return fn(*args, **kwargs)
        wrapped.contract_check = check
        wrapped.contract_ref = wrapped
        REGISTRY[fn.__name__] = wrapped
        return wrapped
    return decorate


def implements(ref_fn, backend=None):
    """Decorator for a backend op: it implements the ref op ``ref_fn``.

    The decorated function gets ``ref_fn``'s name and docstring, a note of
    the backend it belongs to, and runs ``ref_fn``'s check before itself.

    Parameters
    ----------
    ref_fn : function
        A function decorated with ``op`` in ``tinynet/backends/ref``.
    backend : str or None
        The backend's name for the docstring; by default the package name
        after ``tinynet.backends.`` of the decorated function's module.
    """
    if getattr(ref_fn, "contract_ref", None) is not ref_fn:
        raise TypeError(f"implements: {ref_fn!r} is not a registered ref op")
    check = ref_fn.contract_check

    def decorate(fn):
        if fn.__name__ != ref_fn.__name__:
            raise TypeError(f"implements: {fn.__name__} must be named {ref_fn.__name__}")
        name = backend or fn.__module__.split(".")[2]

        if check is None:
            wrapped = functools.wraps(ref_fn)(lambda *a, **k: fn(*a, **k))
        else:
            @functools.wraps(ref_fn)
            def wrapped(*args, **kwargs):
                check(*args, **kwargs)
                return fn(*args, **kwargs)
        wrapped.__module__ = fn.__module__
        wrapped.__doc__ = (f"[{name} backend: implements {ref_fn.__module__}."
                           f"{ref_fn.__name__}]\n\n{ref_fn.__doc__ or ''}")
        wrapped.contract_ref = ref_fn
        wrapped.kernel = fn
        return wrapped
    return decorate


def implementations(backend_module):
    """Names of the registered ops that ``backend_module`` defines."""
    return sorted(name for name in REGISTRY if hasattr(backend_module, name))
