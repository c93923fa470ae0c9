"""tinynet: a small deep-learning framework with hand-written backward passes.

Importing it changes nothing in the process: the settings tinynet makes
(threads, allocator) are made when the cpu backend first loads
(tinynet/process.py).

    import tinynet as tn
    model = tn.Sequential(tn.Dense(784, 128), tn.ReLU(), tn.Dense(128, 10))

The package ships type hints (PEP 561, tinynet/py.typed). ``import name as
name`` below is the form that marks a name as re-exported for a type checker
(mypy --strict, pyright); the star imports re-export each module's __all__.
"""
from .process import set_num_threads as set_num_threads, get_num_threads as get_num_threads
from .parameter import Parameter as Parameter
from .backends import (set_backend as set_backend, get_backend as get_backend,
                       use_backend as use_backend, available_backends as available_backends,
                       backend_name as backend_name, to_device as to_device,
                       to_host as to_host, DeviceMismatchError as DeviceMismatchError)
from .layers import *  # noqa: F401,F403
from .layers import Layer as Layer
from .layers.base import (layer_from_config as layer_from_config,
                          layer_to_config as layer_to_config, register_layer as register_layer)
from .model import Sequential as Sequential
from .losses import *  # noqa: F401,F403
from . import optim as optim, init as init, data as data
from .gradcheck import gradcheck as gradcheck, GradcheckResult as GradcheckResult
from .train import fit as fit, evaluate as evaluate, History as History
from .train import predict as predict
from .recorder import Recorder as Recorder
from .checkpoint import load_model as load_model

__version__ = "0.1.0"
