"""Backend selection and the op contract shared by every backend."""
import inspect

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref

# Pure helpers of the reference that are not ops a layer calls.
REF_ONLY = {"conv2d_naive_forward", "conv2d_naive_backward", "conv2d_output_size"}


def ref_ops():
    return sorted(name for name, f in vars(ref).items()
                  if inspect.isfunction(f) and f.__module__.startswith("tinynet.backends.ref.")
                  and name not in REF_ONLY and not name.startswith("_"))


def test_default_backend_is_cpu():
    assert tn.backends.default_backend_name() == "cpu"
    assert tn.available_backends()[0] in ("cuda", "cpu")


def test_cpu_implements_every_op_itself():
    """No silent fallback: each op the layers call has a cpu implementation."""
    for name in ref_ops():
        f = getattr(cpu, name, None)
        assert f is not None, f"cpu backend lacks {name}"
        assert f.__module__.startswith("tinynet.backends.cpu."), f"cpu.{name} is {f.__module__}"


def test_cpu_signatures_match_ref():
    for name in ref_ops():
        ref_params = list(inspect.signature(getattr(ref, name)).parameters)
        cpu_params = list(inspect.signature(getattr(cpu, name)).parameters)
        assert cpu_params == ref_params, name


def test_use_backend_restores_and_switches(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    layer = tn.ReLU()
    before = tn.backend_name()
    with tn.use_backend("ref"):
        assert tn.backend_name() == "ref"
        y_ref = layer.forward(x)
    assert tn.backend_name() == before
    np.testing.assert_array_equal(layer.forward(x), y_ref)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        tn.set_backend("gpu")


def test_cuda_without_support_is_a_clear_error():
    if "cuda" in tn.available_backends():
        pytest.skip("a CUDA backend loads on this machine")
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        tn.set_backend("cuda")
    assert tn.backend_name() == "cpu", "a failed switch leaves the backend as it was"
