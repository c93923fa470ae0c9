"""The device interface of the host backends (ref and cpu): numpy arrays in memory.

Every backend module exposes ``DEVICE``, ``array_module()``, ``is_native(a)``
and ``asarray(a, dtype=None)`` (tinynet/backends/__init__.py); ref and cpu
take theirs from here.
"""
import numpy as np

__all__ = ["DEVICE", "array_module", "is_native", "asarray"]

DEVICE = "cpu"


def array_module():
    """numpy: the array module of host arrays."""
    return np


def is_native(a):
    """True when ``a`` is a numpy array in host memory (not a simulated device array)."""
    from . import device_of
    return isinstance(a, np.ndarray) and device_of(a) == DEVICE


def asarray(a, dtype=None):
    """``a`` as a C-contiguous numpy array (of ``dtype`` when given)."""
    return np.asarray(a, dtype=dtype, order="C")
