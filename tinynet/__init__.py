"""tinynet: a small deep-learning framework with hand-written backward passes.

Importing it changes nothing in the process: the settings tinynet makes
(threads, allocator) are made when the cpu backend first loads
(tinynet/process.py).

    import tinynet as tn
    model = tn.Sequential(tn.Dense(784, 128), tn.ReLU(), tn.Dense(128, 10))
"""
from .process import set_num_threads, get_num_threads
from .parameter import Parameter
from .backends import (set_backend, get_backend, use_backend, available_backends,
                       backend_name, to_device, to_host, DeviceMismatchError)
from .layers import *  # noqa: F401,F403
from .layers import Layer
from .layers.base import layer_from_config, layer_to_config, register_layer
from .model import Sequential
from .losses import *  # noqa: F401,F403
from . import optim, init, data
from .gradcheck import gradcheck, GradcheckResult
from .train import fit, evaluate, History
from .train import predict
from .recorder import Recorder
from .checkpoint import load_model

__version__ = "0.1.0"
