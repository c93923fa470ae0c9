"""The Numba CPU backend: ``@njit(parallel=True)`` kernels for every op, with the
reference's signatures. Its ops are those of ``tinynet/ops/<family>/cpu.py``;
each kernel module names the lab variant (kernels/) it was promoted from.

Loading this backend makes tinynet's process-wide settings (the threading
layer, OpenMP's wait policy, the allocator), once, before numba's thread
pool starts: tinynet/process.py lists them, why, and how to opt out.
"""
from .. import process
from ..ops import backend_ops
from .host import DEVICE, array_module, is_native, asarray  # noqa: F401

NAME = "cpu"
SETTINGS = process.apply()
"""The process-wide settings in force (tinynet.process.APPLIED)."""
globals().update(backend_ops(NAME))
