"""The cuda backend's normalization kernels (tinynet.ops.norm.cuda) beyond the shared op
tests, with the small blocks of tests/cudasim.py: the cases take both the fused path
(a set within one block: statistics and y in one launch) and the parts path (sets
split into parts, then merged), and the training forward launches accordingly."""
import pytest

from tinynet.ops import norm
from tinynet.ops.norm.cases import CASES
from cudasim import requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cuda, requires_cuda, pytest.mark.usefixtures("small_blocks")]


def _parts(case):
    from tinynet.ops.norm import cuda as cuda_norm
    return cuda_norm.parts(*norm.set_shape(case.shape, case.groups, case.per_channel))[0]


def test_cases_take_the_fused_and_the_parts_paths():
    for per_channel in (True, False):
        fused = {_parts(case) == 1 for case in CASES if case.per_channel == per_channel}
        assert fused == {True, False}, f"per_channel={per_channel}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_sets_that_fit_a_block_run_the_forward_in_one_launch(rng, case):
    """One launch when each set fits a block; else the moments of the parts,
    their merge and y."""
    from tinynet.backends import cuda, cuda_device
    C = case.shape[1]
    x, gamma, beta = (cuda.to_device(a) for a in (rng.standard_normal(case.shape),
                                                  rng.standard_normal(C),
                                                  rng.standard_normal(C)))
    launches, gemms = [], []
    with cuda_device.watch_launches(lambda kernel, args: launches.append(kernel)), \
            cuda_device.watch_gemms(lambda a, b: gemms.append(a)):
        cuda.norm_forward_train(x, gamma, beta, case.groups, case.per_channel, 1e-5)
    assert len(launches) == (1 if _parts(case) == 1 else 3) and not gemms
