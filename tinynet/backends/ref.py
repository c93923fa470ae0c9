"""The NumPy reference backend: readable math, float32 and float64, and the
oracle every other backend is tested against. Its ops are those of
``tinynet/ops/<family>/ref.py``; each family's contract states the equations
and docs/backprop.md derives them."""
from ..ops import backend_ops
from .host import DEVICE, array_module, is_native, asarray  # noqa: F401

NAME = "ref"
globals().update(backend_ops(NAME))
