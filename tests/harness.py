"""The backend harness of the op-family tests (tests/ops/test_<family>.py).

Each family's test module runs the same checks on every backend through the
``backend`` fixture (tests/conftest.py), as Caffe's TYPED_TEST runs a layer
test on each device::

    def test_relu_matches_ref(backend, rng):
        x = rng.standard_normal((3, 5))
        y = backend.ops.relu_forward(backend.put(x, np.float32))
        backend.assert_matches(y, ref.relu_forward(x), np.float32, "y")

``backend.ops`` is the backend module (``tinynet.backends.ref``, ``cpu`` or
``cuda``); ``put`` makes a host array an array of that backend (a device
array for cuda), ``get`` brings a result back as numpy, and
``assert_matches`` compares a result with the float64 reference within the
backend's tolerance for the input dtype. The cuda parameter is marked
``cuda`` and runs on a GPU or under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda``), with small blocks
(tests/cudasim.py ``small_blocks``); elsewhere it is skipped with the reason.
"""
import contextlib

import numpy as np
import pytest

from cudasim import requires_cuda

FLOATS = (np.float32, np.float64)
NAMES = ("ref", "cpu", "cuda")
PARAMS = ["ref", "cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]
"""The ``params`` of a backend-parametrized fixture or test."""

# A float32 or float64 result against the float64 reference.
TOL = {"ref": {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)},
       "cpu": {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)},
       "cuda": {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}}


class Backend:
    """One backend under test: its ops, its arrays and its tolerances."""

    def __init__(self, name):
        import importlib
        self.name = name
        self.ops = importlib.import_module(f"tinynet.backends.{name}")
        self.device = self.ops.DEVICE

    def __repr__(self):
        return f"Backend({self.name!r})"

    def put(self, a, dtype=None):
        """A host array as an array of this backend (cast to ``dtype`` when given); None stays None."""
        if a is None:
            return None
        a = np.asarray(a, dtype=dtype)
        return self.ops.asarray(a) if self.device != "cpu" else np.ascontiguousarray(a)

    def get(self, a):
        """A result of this backend as a numpy array (None stays None); a cuda
        result must be a device array."""
        if a is None or self.device == "cpu":
            return a
        assert self.ops.is_native(a), f"{self.name}: expected a device array, got {type(a).__name__}"
        return self.ops.to_host(a)

    def tol(self, dtype):
        """rtol and atol of a ``dtype`` result of this backend against the float64 reference."""
        return TOL[self.name][np.dtype(dtype).type]

    def assert_matches(self, got, want, dtype, what, scale=1.0, out_dtype=None):
        """``got`` (this backend's result, of ``out_dtype``, default ``dtype``, or None)
        equals ``want`` (the float64 reference) within ``tol(dtype)``, atol times ``scale``."""
        if want is None:
            assert got is None, f"{self.name} {what}: expected None"
            return
        got = self.get(got)
        out_dtype = np.dtype(dtype if out_dtype is None else out_dtype)
        assert got.dtype == out_dtype, f"{self.name} {what}: dtype {got.dtype} != {out_dtype}"
        assert got.shape == np.shape(want), f"{self.name} {what}: shape {got.shape} != {np.shape(want)}"
        tol = self.tol(dtype)
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64),
                                   rtol=tol["rtol"], atol=tol["atol"] * scale,
                                   err_msg=f"{self.name} {what}")

    @contextlib.contextmanager
    def active(self):
        """A block in which this backend is the active one (layers, losses, optimizers)."""
        import tinynet as tn
        with tn.use_backend(self.name):
            yield self
