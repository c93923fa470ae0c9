import os

import numpy as np
import pytest

import tinynet as tn
from cudasim import small_blocks  # noqa: F401 (a fixture)
from harness import PARAMS, Backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng():
    """A fresh seeded generator for each test."""
    return np.random.default_rng(1234)


def assert_close(a, b, rtol=1e-6, atol=1e-6, what="arrays"):
    """assert_allclose with a message that says what was compared."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


def check_grads(layer, x, tol=1e-6, **kw):
    """Run tn.gradcheck and fail with its table when any tensor is off."""
    result = tn.gradcheck(layer, x, tol=tol, **kw)
    assert result.passed, str(result)
    return result


# Property-based tests (tests/test_fuzz_*.py): few examples, drawn from a fixed
# seed (derandomize) so that every CI run checks the same inputs, and no
# deadline (numba compiles on first use). TINYNET_HYPOTHESIS_EXAMPLES=N runs N
# random examples per test instead, for a longer search.
try:
    from hypothesis import HealthCheck, settings
except ImportError:
    pass
else:
    _search = os.environ.get("TINYNET_HYPOTHESIS_EXAMPLES")
    settings.register_profile(
        "tinynet", max_examples=int(_search or 30), derandomize=not _search, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    settings.load_profile("tinynet")


# Whole-program tests: training runs, the studies, killed processes, child
# processes at both thread counts, the labs' --check. They run the kernels that the unit tests
# compare with the reference at the default thread count and at one thread, so
# CI's one-thread pass, which looks for prange races, deselects them
# (-m "not integration").
INTEGRATION = {"test_lab", "test_study_experiments", "test_study_runner", "test_fault",
               "test_mnist_e2e", "test_fashion_mnist", "test_examples", "test_eval",
               "test_thread_counts", "test_run_dir"}


# Modules that test the cuda backend and nothing else; with the ``cuda`` parameter of
# the op-family tests (tests/harness.py) they are CI's simulator run (-m cuda).
CUDA = {"test_cuda_device", "test_cuda_model", "test_cuda_layers", "test_device"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in INTEGRATION:
            item.add_marker(pytest.mark.integration)
        if item.module.__name__ in CUDA:
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(params=PARAMS)
def backend(request):
    """Each backend in turn (tests/harness.py): ref, cpu, and cuda on a GPU or
    under the CUDA simulator, with small blocks; skipped with the reason elsewhere."""
    if request.param == "cuda":
        request.getfixturevalue("small_blocks")
    return Backend(request.param)
