"""tinynet layers: thin classes that hold parameters, buffers and the
backward cache, and call the active backend's ops."""
from .base import Layer as Layer  # noqa: F401
from .dense import *        # noqa: F401,F403
from .conv import *         # noqa: F401,F403
from .pool import *         # noqa: F401,F403
from .activation import *   # noqa: F401,F403
from .dropout import *      # noqa: F401,F403
from .norm import *         # noqa: F401,F403
from .reshape import *      # noqa: F401,F403
from .weightnorm import *   # noqa: F401,F403
from .dropconnect import *  # noqa: F401,F403
from .noise import *        # noqa: F401,F403
from .container import Residual as Residual, Concat as Concat  # noqa: F401
