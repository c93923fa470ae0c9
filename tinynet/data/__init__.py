"""Datasets and batching: the IDX reader, MNIST / Fashion-MNIST, DataLoader, NORMALIZATION."""
from .idx import *       # noqa: F401,F403
from .datasets import *  # noqa: F401,F403
from .loader import *    # noqa: F401,F403
