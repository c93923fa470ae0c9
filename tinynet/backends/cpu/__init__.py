"""The Numba CPU backend: ``@njit(parallel=True)`` kernels for every op of the
reference backend, with the same signatures (docs/architecture.md). Each
kernel module names the lab variant (``kernels/<op>.py``) it was promoted from.
"""
from .alloc import configure_allocator
from .dense import *       # noqa: F401,F403
from .conv import *        # noqa: F401,F403
from .pool import *        # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .dropout import *     # noqa: F401,F403
from .norm import *        # noqa: F401,F403
from .loss import *        # noqa: F401,F403
from .optim import *       # noqa: F401,F403
from .weightnorm import *  # noqa: F401,F403

from ..host import DEVICE, array_module, is_native, asarray  # noqa: F401,E402

NAME = "cpu"
ALLOCATOR = configure_allocator()
"""The mallopt parameters set at import (tinynet/backends/cpu/alloc.py)."""
