"""The ops, one folder per family: the contract and every backend's kernels side by side.

Each family ``tinynet/ops/<family>/`` holds

- ``__init__.py``: the contract: the family's math (forward and backward
  equations, the paper) in its docstring, and every op declared once with
  its signature, shapes and argument check (``contract.op``);
- ``ref.py``: the NumPy reference, the readable math and the test oracle;
- ``cpu.py``: the Numba ``@njit(parallel=True)`` kernels;
- ``cuda.py``: the numba.cuda kernels and their launchers;
- ``cases.py``: the family's odd shapes, layouts and dtypes, shared by the
  tests (tests/ops/test_<family>.py) and the lab's ``--check`` (kernels/).

A backend (tinynet/backends) is the namespace of its ops, assembled from
``tinynet/ops/<family>/<backend>.py`` by ``backend_ops``. docs/architecture.md
walks through adding an op.
"""
import importlib

__all__ = ["FAMILIES", "backend_ops"]

FAMILIES = ("dense", "conv", "pool", "activation", "dropout", "norm", "loss", "optim",
            "weightnorm")
"""Every op family, in the order the backends assemble them."""


def backend_ops(backend):
    """Every op of ``backend`` ("ref", "cpu" or "cuda"), name -> function.

    Imports ``tinynet.ops.<family>.<backend>`` for each family and takes the
    names in its ``__all__``.
    """
    ops = {}
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}.{backend}")
        ops.update({name: getattr(module, name) for name in module.__all__})
    return ops
