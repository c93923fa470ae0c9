"""The cuda backend: numba.cuda kernels for every op of the reference backend.

Chosen only by name (``tn.set_backend("cuda")``). Importing this package never
fails; ``check_available()`` raises RuntimeError with what to install or change
when kernels cannot run here (no numba-cuda, no GPU and no simulator, no CuPy),
and the op modules are imported only when they can run.

Each op is ``@implements(<ref op>)`` (tinynet/backends/contract.py): the ref
op's signature, docstring and argument checks, on device arrays (CuPy on a
GPU, ``device.SimDeviceArray`` under ``NUMBA_ENABLE_CUDASIM=1``). Ops return
fresh device arrays; the optimizer steps update their state in place.
"""
from . import device
from .device import check_available, to_device, to_host, is_device_array  # noqa: F401

NAME = "cuda"
DEVICE = "cuda"
# The op modules, one per op family; the PTX check (kernels/ptx.py) imports them too.
OP_MODULES = ("dense", "conv", "pool", "activation", "dropout", "norm", "loss", "optim",
              "weightnorm")


def array_module():
    """The array module of this backend's arrays: CuPy on a GPU, numpy under the simulator."""
    return device.xp()


def is_native(a):
    """True when ``a`` is a device array of this backend."""
    return device.is_device_array(a)


def asarray(a, dtype=None):
    """``a`` as a C-contiguous device array (copied from the host when it is not one)."""
    return device.to_device(a, dtype)


def _available():
    try:
        check_available()
    except RuntimeError:
        return False
    return True


if _available():
    import importlib

    for _name in OP_MODULES:
        _module = importlib.import_module(f"{__name__}.{_name}")
        globals().update({op: getattr(_module, op) for op in _module.__all__})
