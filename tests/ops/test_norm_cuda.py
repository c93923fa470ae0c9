"""The cuda backend's normalization kernels (tinynet.ops.norm.cuda) beyond the shared op
tests: which path each layout takes, the parts path checked against the reference, and
``tn.recompute_batchnorm_stats`` on a model on the cuda backend.

A set runs whole in one block (the fused path: its statistics and y in one launch)
unless ``parts`` splits it: into parts of about BLOCK_REDUCE * MIN_PER_THREAD members
when it is longer than that and there are at most TARGET_BLOCKS / 2 sets; then the
moments of the parts take one launch, their merge another, and y a third. Where that
line falls depends on the block sizes, so the path tests run at both ``BLOCKS``
settings: the tests' small blocks (tests/cudasim.py ``small_blocks``: tiny under the
simulator, two warps on a GPU) and production's, the sizes training launches with on a
GPU. ``SPLIT_CASES`` are long enough to be split at
either, and small enough for the simulator (a few thousand elements).
"""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import device_of, ref
from tinynet.ops import norm
from tinynet.ops.norm.cases import CASES, NormCase
from cudasim import SIMULATOR, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cuda, requires_cuda]

EPS = 1e-5

# Sets of over 1024 members (BLOCK_REDUCE 256 * MIN_PER_THREAD 4) and few of them, so
# that production's block sizes split them as well as the tests' small blocks: a
# BatchNorm channel over (N, H*W), GroupNorm groups and LayerNorm rows, odd lengths.
SPLIT_CASES = (
    NormCase("batch-split", (3, 5, 347), 1, True),
    NormCase("group-split", (2, 6, 345), 2, False),
    NormCase("layer-split", (3, 1037, 1), 1, False),
)

# The block-size settings: the tests' small blocks, or the sizes as they are.
BLOCKS = ("small", "production")
# The cases the simulator launches at production's sizes: a BatchNorm and a LayerNorm
# whose sets the small blocks split and production's fuse.
SIM_PRODUCTION = {"batch-4d", "layer-wide"}

# y, dx, dgamma and dbeta within TOL[dtype] * max(1, max|want|) of the float64
# reference (as tests/ops/test_norm.py).
TOL = {np.float32: 2e-6, np.float64: 1e-12}
FLOATS = [pytest.param(np.float32, marks=pytest.mark.skipif(
              SIMULATOR, reason="under the CUDA simulator the float32 twin of this float64 "
                                "case is skipped (one kernel source; a GPU runs both)")),
          np.float64]


@pytest.fixture(params=BLOCKS)
def blocks(request):
    """The launch sizes of a test: "small" patches them as tests/cudasim.py
    ``small_blocks`` does, "production" leaves cuda_device's and ops/norm/cuda.py's."""
    if request.param == "small":
        request.getfixturevalue("small_blocks")
    return request.param


def _parts(case):
    """P, the parts per set that the kernel launcher uses for ``case`` at the current sizes."""
    from tinynet.ops.norm import cuda as cuda_norm
    return cuda_norm.parts(*norm.set_shape(case.shape, case.groups, case.per_channel))[0]


def test_cases_take_the_fused_and_the_parts_paths(blocks):
    """At either setting both layouts take both paths, and every SPLIT_CASES set is split."""
    for per_channel in (True, False):
        fused = {_parts(case) == 1 for case in CASES + SPLIT_CASES
                 if case.per_channel == per_channel}
        assert fused == {True, False}, f"per_channel={per_channel}"
    assert all(_parts(case) > 1 for case in SPLIT_CASES), [_parts(c) for c in SPLIT_CASES]


def _forward_launches(case, rng):
    """The numba.cuda launches (and GEMMs) of one training forward of ``case``."""
    from tinynet.backends import cuda, cuda_device
    C = case.shape[1]
    x, gamma, beta = (cuda.to_device(a) for a in (rng.standard_normal(case.shape),
                                                  rng.standard_normal(C),
                                                  rng.standard_normal(C)))
    launches, gemms = [], []
    with cuda_device.watch_launches(lambda kernel, args: launches.append(kernel.__name__)), \
            cuda_device.watch_gemms(lambda a, b: gemms.append(a)):
        cuda.norm_forward_train(x, gamma, beta, case.groups, case.per_channel, EPS)
    return launches, gemms


@pytest.mark.parametrize("case", CASES + SPLIT_CASES, ids=lambda case: case.name)
def test_sets_that_fit_a_block_run_the_forward_in_one_launch(blocks, rng, case):
    """One launch (statistics and y) when each set fits a block at the sizes in use;
    else the moments of the parts, their merge and y."""
    if SIMULATOR and blocks == "production" and case.name not in SIM_PRODUCTION:
        pytest.skip("production's 256-thread blocks take seconds a launch under the CUDA "
                    f"simulator, which runs them for {sorted(SIM_PRODUCTION)} only (a GPU "
                    "runs every case)")
    launches, gemms = _forward_launches(case, rng)
    if _parts(case) == 1:
        assert launches == ["_set_moments"], launches
    else:
        assert launches == ["_set_moments", "_merge_moments", "_norm_apply"], launches
    assert not gemms


def _assert_near(got, want, dtype, what):
    """A cuda result (a device array of ``dtype``) within TOL of the float64 ``want``."""
    from tinynet.backends import cuda
    assert cuda.is_device_array(got), f"{what}: expected a device array, got {type(got)}"
    got = cuda.to_host(got)
    assert got.dtype == dtype and got.shape == want.shape, f"{what}: {got.dtype} {got.shape}"
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0,
                               atol=TOL[np.dtype(dtype).type] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda case: case.name)
def test_split_sets_match_ref(blocks, rng, case, dtype):
    """The parts path (moments of the parts, Chan's merge; sums of the parts, their
    sum), forward and backward, against the ref backend."""
    if SIMULATOR and blocks == "production":
        pytest.skip("production's 256-thread blocks are too slow for the CUDA simulator "
                    "(the small blocks split these sets too; a GPU runs both)")
    from tinynet.backends import cuda
    C = case.shape[1]
    x = (0.5 + 2.0 * rng.standard_normal(case.shape)).astype(dtype)
    dy = rng.standard_normal(case.shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    layout = (case.groups, case.per_channel)
    f64 = [a.astype(np.float64) for a in (x, dy, gamma, beta)]
    y_want, mean_want, var_want, rstd_want = ref.norm_forward_train(f64[0], f64[2], f64[3],
                                                                    *layout, EPS)
    xd, dyd, gd, bd = (cuda.to_device(a) for a in (x, dy, gamma, beta))
    y, mean, var, rstd = cuda.norm_forward_train(xd, gd, bd, *layout, EPS)
    _assert_near(y, y_want, dtype, "y")
    for name, got, want in (("mean", mean, mean_want), ("var", var, var_want),
                            ("rstd", rstd, rstd_want)):
        np.testing.assert_allclose(cuda.to_host(got), want, rtol=1e-12, atol=1e-14,
                                   err_msg=name)
    grads_want = ref.norm_backward(f64[0], f64[1], mean_want, rstd_want, f64[2], *layout)
    grads = cuda.norm_backward(xd, dyd, mean, rstd, gd, *layout)
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, grads_want):
        _assert_near(got, want, dtype, name)


def _bn_model():
    """A small model with three BatchNorms (2-D and 4-D inputs, one nested), float64."""
    tn.init.seed(3)
    return tn.Sequential(tn.Conv2D(1, 3, 3), tn.BatchNorm(3), tn.ReLU(),
                         tn.Sequential(tn.Conv2D(3, 2, 3), tn.BatchNorm(2, momentum=None)),
                         tn.Flatten(), tn.Dense(2 * 2 * 2, 4), tn.BatchNorm(4)).to(np.float64)


@pytest.mark.usefixtures("small_blocks")
def test_recompute_batchnorm_stats_on_cuda_matches_cpu(rng):
    """A model on the cuda backend, given host data: every BatchNorm's running
    statistics equal those of the same model on the cpu device (the ref backend),
    and stay device arrays."""
    x = rng.standard_normal((13, 1, 6, 6)) * 2 + 1
    with tn.use_backend("ref"):
        want = tn.recompute_batchnorm_stats(_bn_model(), x, batch_size=5).state_dict()
    with tn.use_backend("cuda"):
        model = _bn_model().to("cuda")
        tn.recompute_batchnorm_stats(model, x, batch_size=5)
        assert not model.training
        for bn in (model[1], model[3][1], model[6]):
            assert device_of(bn.running_mean) == "cuda" and device_of(bn.running_var) == "cuda"
        got = model.state_dict()
    for key in want:
        if "running" in key:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12,
                                       err_msg=key)
