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
               "test_thread_counts", "test_run_dir", "test_report"}


# Modules that test the cuda backend and nothing else; with the ``cuda`` parameter of
# the op-family tests (tests/harness.py) they are CI's simulator run (-m cuda).
CUDA = {"test_cuda_device", "test_cuda_model", "test_cuda_layers", "test_device"}


# Under numba's CUDA simulator every GPU thread is a Python thread, so a case costs
# seconds. There the float32 twin of a float64 case is skipped: the kernels' source is
# the same for both dtypes, and the float64 case checks it more tightly. A GPU runs both.
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
SIM_SKIP = pytest.mark.skip(reason="under the CUDA simulator the float32 twin of this float64 "
                                   "case is skipped (one kernel source; a GPU runs both)")


def _is_float32(value):
    return value is np.float32 or value == "float32" or (
        isinstance(value, np.dtype) and value == np.float32)


def _float32_cuda_case(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    on_cuda = params.get("backend") == "cuda" or item.module.__name__ in CUDA
    return on_cuda and any(_is_float32(v) for v in params.values())


def _float64_twin(item):
    """The node id of the case that differs from ``item`` only in float64 for float32."""
    return item.nodeid.replace("float32", "float64")


def pytest_collection_modifyitems(config, items):
    ids = {item.nodeid for item in items}
    for item in items:
        if item.module.__name__ in INTEGRATION:
            item.add_marker(pytest.mark.integration)
        if item.module.__name__ in CUDA:
            item.add_marker(pytest.mark.cuda)
        if SIMULATOR and _float32_cuda_case(item) and _float64_twin(item) in ids \
                and _float64_twin(item) != item.nodeid:
            item.add_marker(SIM_SKIP)


@pytest.fixture(params=PARAMS)
def backend(request):
    """Each backend in turn (tests/harness.py): ref, cpu, and cuda on a GPU or
    under the CUDA simulator, with small blocks; skipped with the reason elsewhere."""
    if request.param == "cuda":
        request.getfixturevalue("small_blocks")
    return Backend(request.param)
