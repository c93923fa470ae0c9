"""Placeholder: the ref ops until the Numba kernels land."""
from ..ref.optim import *  # noqa: F401,F403
