"""The C allocator setting of the cpu backend: keep freed multi-MB arrays in the heap.

A training step allocates the same multi-MB arrays every step (each layer's
output and dx, 1 to 6 MB for the reference CNN at batch 64). With glibc's
defaults an array this large comes from a fresh ``mmap`` and goes back to
the kernel on free (or the heap top is trimmed), so every step's first
write to it pays one page fault per 4 KB page, inside the layer that
writes it. ``configure_allocator()`` sets, once, when the cpu backend first
loads (``tinynet.process.apply()``), through ``mallopt``:

- ``M_MMAP_THRESHOLD`` = MMAP_THRESHOLD: arrays below it come from the heap;
- ``M_TRIM_THRESHOLD`` = TRIM_THRESHOLD and ``M_TOP_PAD`` = TOP_PAD: freed
  heap memory stays mapped, so the next step reuses pages already faulted in.

The process keeps up to TRIM_THRESHOLD of freed memory instead of returning
it; the peak resident memory of a step is measured beside its time in
``python -m kernels.step``. Nothing is changed when the C library is not
glibc, when the user set any of glibc's ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_TOP_PAD_``, or when
``TINYNET_MALLOPT=0``. Measured in ``python -m kernels.system.instep`` (the
settings "no torch" and "no torch, glibc malloc defaults").
"""
import ctypes
import ctypes.util
import os

__all__ = ["configure_allocator"]

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 64 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def configure_allocator():
    """Apply the allocator setting where it applies (see the module docstring).

    Returns
    -------
    dict
        The mallopt parameters set, name -> bytes; empty when none was set.
    """
    if os.environ.get("TINYNET_MALLOPT", "1") == "0":
        return {}
    if any(name in os.environ for name in _USER_VARIABLES):
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    applied = {}
    for name, param, value in (("M_MMAP_THRESHOLD", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                               ("M_TOP_PAD", _M_TOP_PAD, TOP_PAD)):
        if mallopt(param, value) == 1:
            applied[name] = value
    return applied
