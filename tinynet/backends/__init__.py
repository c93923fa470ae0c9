"""Backend selection and dispatch.

A backend is a module that exposes the same set of op functions (the op
contract in docs/architecture.md): ``dense_forward``, ``conv2d_backward``,
``norm_stats`` and so on. Layers never import a backend directly; they call
``get_backend().<op>(...)``, so a new backend slots in without touching them.

Backends:

- ``"ref"``: plain NumPy, readable, the test oracle (``tinynet.backends.ref``).
- ``"cpu"``: Numba ``@njit(parallel=True)`` kernels (``tinynet.backends.cpu``).
- ``"cuda"``: numba.cuda kernels (``tinynet.backends.cuda``), never chosen
  implicitly; asking for it without a GPU is an error.

The default is the fastest backend that imports on this machine.
"""
import importlib
import contextlib

_MODULES = {
    "ref": "tinynet.backends.ref",
    "cpu": "tinynet.backends.cpu",
    "cuda": "tinynet.backends.cuda",
}
# Fastest first; "cuda" is only ever used when asked for by name.
_DEFAULT_ORDER = ("cpu", "ref")

_loaded = {}
_current = None


def _load(name):
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(_MODULES)}")
    if name not in _loaded:
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as e:
            raise RuntimeError(f"backend {name!r} is not available on this machine: {e}") from e
        check = getattr(module, "check_available", None)
        if check is not None:
            try:
                check()
            except RuntimeError as e:
                raise RuntimeError(f"backend {name!r} is not available on this machine: {e}") from e
        _loaded[name] = module
    return _loaded[name]


def available_backends():
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in ("cuda",) + _DEFAULT_ORDER:
        try:
            _load(name)
        except (ImportError, RuntimeError):
            continue
        names.append(name)
    return names


def default_backend_name():
    """The name of the fastest CPU backend that loads here."""
    for name in _DEFAULT_ORDER:
        try:
            _load(name)
            return name
        except (ImportError, RuntimeError):
            continue
    raise RuntimeError("no tinynet backend could be loaded")


def set_backend(name):
    """Make ``name`` ("ref", "cpu" or "cuda") the backend every layer uses.

    Raises ValueError for an unknown name and RuntimeError when the backend
    cannot run here (e.g. "cuda" without a GPU). There is no silent fallback.
    """
    global _current
    _current = _load(name)
    return _current


def get_backend():
    """The active backend module (the default one on first use)."""
    global _current
    if _current is None:
        _current = _load(default_backend_name())
    return _current


def backend_name():
    """The name of the active backend."""
    return get_backend().NAME


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run a block with backend ``name``, then restore."""
    global _current
    previous = _current
    set_backend(name)
    try:
        yield _current
    finally:
        _current = previous
