"""The cuda backend: numba.cuda kernels for every op of the reference backend.

Chosen only by name (``tn.set_backend("cuda")``). Importing this package never
fails; ``check_available()`` raises RuntimeError with what to install or change
when kernels cannot run here (no numba-cuda, no GPU and no simulator, no CuPy),
and the op modules are imported only when they can run.

Its ops are those of ``tinynet/ops/<family>/cuda.py``, each
``@implements(<declared op>)`` (tinynet/ops/contract.py): the op's signature,
docstring and argument checks, on device arrays (CuPy on a GPU,
``cuda_device.SimDeviceArray`` under ``NUMBA_ENABLE_CUDASIM=1``). Ops return
fresh device arrays; the optimizer steps update their state in place. The
machinery they share is in tinynet/backends/cuda_device.py (device arrays,
launches) and cuda_reduce.py (block reductions).
"""
from . import cuda_device as device
from .cuda_device import check_available, to_device, to_host, is_device_array  # noqa: F401

NAME = "cuda"
DEVICE = "cuda"


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
    from ..ops import backend_ops

    globals().update(backend_ops(NAME))
