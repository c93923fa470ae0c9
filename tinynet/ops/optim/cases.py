"""The optimizer steps' cases: parameter shapes and hyperparameters that reach every branch.

Shared by tests/ops/test_optim.py and the lab's ``--check`` (kernels/optim.py).
The shapes are odd (no multiple of a block), one is empty, and two lie above
the cpu backend's serial / parallel threshold (``cpu.SERIAL_BELOW``); the
options turn on each of weight decay, momentum, Nesterov's step, Adam's L2
term and AdamW's decoupled decay, alone and together.
"""
from typing import NamedTuple

from .cpu import SERIAL_BELOW

__all__ = ["Shape", "SGDOptions", "AdamOptions", "SHAPES", "SGD", "ADAM"]


class Shape(NamedTuple):
    name: str
    shape: tuple


class SGDOptions(NamedTuple):
    name: str
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool

    def kwargs(self):
        """The hyperparameters as ``sgd_step``'s keyword arguments."""
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                    nesterov=self.nesterov)


class AdamOptions(NamedTuple):
    name: str
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool

    def kwargs(self):
        """The hyperparameters as ``adam_step``'s keyword arguments."""
        return dict(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                    weight_decay=self.weight_decay, decoupled=self.decoupled)


SHAPES = [
    Shape("7", (7,)),
    Shape("3x5x11", (3, 5, 11)),
    Shape("empty", (0,)),
    Shape("threshold+1", (SERIAL_BELOW + 1,)),
    Shape("257x263", (257, 263)),
]

SGD = [
    SGDOptions("plain", 0.1, 0.0, 0.0, False),
    SGDOptions("momentum", 0.1, 0.9, 0.0, False),
    SGDOptions("nesterov", 0.05, 0.8, 0.0, True),
    SGDOptions("decay", 0.1, 0.0, 0.01, False),
    SGDOptions("nesterov-decay", 0.05, 0.9, 0.1, True),
]

ADAM = [
    AdamOptions("adam", 0.01, 0.9, 0.999, 1e-8, 0.0, False),
    AdamOptions("adam-l2", 0.01, 0.8, 0.99, 1e-6, 0.1, False),
    AdamOptions("adamw-no-decay", 0.01, 0.9, 0.999, 1e-8, 0.0, True),
    AdamOptions("adamw", 0.02, 0.5, 0.9, 1e-8, 0.3, True),
]
