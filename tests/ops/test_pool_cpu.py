"""The cpu backend's two pooling schedules (tinynet.ops.pool.cpu.SCHEDULES)
through their public ``*_scheduled`` entries: "any" on every case, 2x2
windows at stride 2 among them, and "2x2" on those, against the float64
reference with ties and NaNs; the cache of either schedule in the other's
backward; and the schedule that the ops pick."""
import numpy as np
import pytest

from tinynet.backends import ref
from tinynet.ops.pool import cpu as cpu_pool
from tinynet.ops.pool.cases import CASES
from harness import FLOATS, Backend

CPU = Backend("cpu")
RUNS = [(schedule, case) for case in CASES for schedule in cpu_pool.SCHEDULES
        if schedule == "any" or cpu_pool.schedule(case.kernel, case.stride) == "2x2"]
"""Every case on "any", and the 2x2 ones at stride 2 on "2x2" as well."""
TWO_BY_TWO = [case for case in CASES if cpu_pool.schedule(case.kernel, case.stride) == "2x2"]


@pytest.mark.parametrize("schedule, case", RUNS, ids=[f"{s}-{c.name}" for s, c in RUNS])
@pytest.mark.parametrize("dtype", FLOATS)
def test_schedule_matches_ref(rng, schedule, case, dtype):
    shape, kernel, stride = case.shape, case.kernel, case.stride
    # Values from {0, 1, 2} (ties in most windows) and a few NaNs.
    x = rng.integers(0, 3, shape).astype(dtype)
    x.flat[rng.choice(x.size, 3, replace=False)] = np.nan
    y, cache = cpu_pool.maxpool2d_forward_scheduled(x, kernel, stride, schedule)
    y_ref, idx = ref.maxpool2d_forward(x.astype(np.float64), kernel, stride)
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy64 = dy.astype(np.float64)
    CPU.assert_matches(cpu_pool.maxpool2d_backward_scheduled(dy, shape, cache, kernel, stride,
                                                             schedule),
                       ref.maxpool2d_backward(dy64, shape, idx, kernel, stride), dtype, "max dx")
    x = rng.standard_normal(shape).astype(dtype)
    CPU.assert_matches(cpu_pool.avgpool2d_forward_scheduled(x, kernel, stride, schedule),
                       ref.avgpool2d_forward(x.astype(np.float64), kernel, stride), dtype, "avg y")
    CPU.assert_matches(cpu_pool.avgpool2d_backward_scheduled(dy, shape, kernel, stride, schedule),
                       ref.avgpool2d_backward(dy64, shape, kernel, stride), dtype, "avg dx")


@pytest.mark.parametrize("case", TWO_BY_TWO, ids=[case.name for case in TWO_BY_TWO])
def test_schedules_share_the_cache(rng, case):
    x = rng.integers(0, 3, case.shape).astype(np.float32)
    dy = rng.standard_normal(case.shape[:2] + (case.shape[2] // 2, case.shape[3] // 2))
    dy = dy.astype(np.float32)
    y_any, cache_any = cpu_pool.maxpool2d_forward_scheduled(x, case.kernel, case.stride, "any")
    y_2x2, cache_2x2 = cpu_pool.maxpool2d_forward_scheduled(x, case.kernel, case.stride, "2x2")
    np.testing.assert_array_equal(y_any, y_2x2)
    np.testing.assert_array_equal(cache_any, cache_2x2)
    np.testing.assert_array_equal(
        cpu_pool.maxpool2d_backward_scheduled(dy, x.shape, cache_any, case.kernel, case.stride,
                                              "2x2"),
        cpu_pool.maxpool2d_backward_scheduled(dy, x.shape, cache_2x2, case.kernel, case.stride,
                                              "any"))


def test_schedule_follows_the_window():
    assert cpu_pool.schedule((2, 2), (2, 2)) == "2x2"
    assert cpu_pool.schedule([2, 2], [2, 2]) == "2x2"
    assert cpu_pool.schedule((2, 2), (1, 1)) == cpu_pool.schedule((3, 3), (2, 2)) == "any"
    assert cpu_pool.schedule((2, 2), (2, 1)) == cpu_pool.schedule((1, 2), (2, 2)) == "any"


def test_2x2_schedule_takes_only_2x2_windows():
    x = np.zeros((1, 1, 6, 6), np.float32)
    with pytest.raises(ValueError, match="schedule"):
        cpu_pool.maxpool2d_forward_scheduled(x, (2, 2), (1, 1), "2x2")
    with pytest.raises(ValueError, match="schedule"):
        cpu_pool.avgpool2d_forward_scheduled(x, (3, 3), (3, 3), "2x2")
    with pytest.raises(ValueError, match="schedule"):
        cpu_pool.avgpool2d_backward_scheduled(np.zeros((1, 1, 3, 3), np.float32), x.shape,
                                              (2, 2), (2, 2), "tree")
