"""The NumPy reference backend: readable math, float32 and float64, and the
oracle every other backend is tested against. Each module's docstring states
its forward and backward equations; docs/backprop.md derives them."""
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

NAME = "ref"
