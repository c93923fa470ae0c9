"""The cuda backend: numba.cuda kernels for every op of the reference backend.

Chosen only by name (``tn.set_backend("cuda")``). Importing this package never
fails; ``check_available()`` raises RuntimeError with what to install or change
when kernels cannot run here (no numba-cuda, no GPU and no simulator, no CuPy).
"""
from .device import check_available, to_device, to_host, is_device_array  # noqa: F401

NAME = "cuda"
