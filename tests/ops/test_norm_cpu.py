"""The cpu backend's normalization kernels (tinynet.ops.norm.cpu) beyond the shared op
tests: those tests again on tiles of a few elements (``TINY``, through the public
schedule entry), under which the sets of the small cases span several tiles (Chan's
merge of many parts, several samples per backward task); the tiling branches the
large cases take; the fused (N, C) BatchNorm against the tile kernels; non-contiguous
inputs, an empty batch, and results that do not depend on the thread count."""
import functools
import types

import numba
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from tinynet.ops.norm import cpu as cpu_norm
from tinynet.ops.norm.cases import LARGE_CASES
from conftest import assert_close
from harness import Backend
from test_norm import (  # noqa: F401 (the op tests of test_norm.py, collected here on TINY)
    case, make, test_backward_matches_ref, test_backward_without_dx,
    test_batchnorm_eval_folds_running_stats, test_forward_matches_ref,
    test_large_offset_float32_is_accurate, test_nan_stays_in_its_sets, test_stats_match_ref)

TINY = cpu_norm.Schedule(tile=8, rows=2)
LARGE = {large.name: large for large in LARGE_CASES}


class TinyTiles(Backend):
    """The cpu backend with its four norm ops under ``TINY``."""

    def __init__(self):
        super().__init__("cpu")
        self.ops = types.SimpleNamespace(
            norm_stats=functools.partial(cpu_norm.stats, schedule=TINY),
            norm_forward=functools.partial(cpu_norm.forward, schedule=TINY),
            norm_forward_train=functools.partial(cpu_norm.forward_train, schedule=TINY),
            norm_backward=functools.partial(cpu_norm.backward, schedule=TINY))

    def __repr__(self):
        return "TinyTiles()"


@pytest.fixture
def backend():
    """In this module: the cpu backend on tiles of a few elements."""
    return TinyTiles()


def test_large_cases_take_the_tiling_branches():
    """At the production schedule: a per-channel set and a row set over several tiles,
    and (N, C) BatchNorms of three blocks of 16 channels, the last one partial."""
    def partials(large):
        return cpu_norm.Tiles.for_stats(*large.shape, large.groups, large.per_channel)[1].size

    for name in ("batch-long", "layer-long", "group-long-rows"):
        assert partials(LARGE[name]) > 1, name
    for name in ("batch-2d-blocks", "batch-2d-tail"):
        N, C, L = LARGE[name].shape
        assert L == 1 and -(-C // 16) == 3 and C % 16 and cpu_norm.SCHEDULE.tile // N < 32


@pytest.mark.parametrize("column_blocks", [True, False])
@pytest.mark.parametrize("name", ["batch-2d-blocks", "batch-2d-tail"])
def test_column_blocks_match_ref(rng, name, column_blocks):
    """BatchNorm on (N, C) fused per block of channels (at two threads, fewer than
    its three blocks) and by the tile kernels."""
    schedule = cpu_norm.Schedule(column_blocks=column_blocks)
    x, dy, gamma, beta = make(rng, LARGE[name].shape, np.float32)
    x64, dy64, g64, b64 = (a.astype(np.float64) for a in (x, dy, gamma, beta))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, threads))
        y, mean, var, rstd = cpu_norm.forward_train(x, gamma, beta, 1, True, 1e-5, schedule)
        grads = cpu_norm.backward(x, dy, mean, rstd, gamma, 1, True, schedule=schedule)
    finally:
        numba.set_num_threads(threads)
    want = ref.norm_forward_train(x64, g64, b64, 1, True, 1e-5)
    assert_close(var, want[2], 1e-12, 1e-14, "var")
    CPU = Backend("cpu")
    CPU.assert_matches(y, want[0], np.float32, "y")
    for what, g, w in zip(("dx", "dgamma", "dbeta"), grads,
                          ref.norm_backward(x64, dy64, mean, rstd, g64, 1, True)):
        CPU.assert_matches(g, w, np.float32, what)


def test_non_contiguous_inputs(rng):
    x, dy, gamma, beta = make(rng, (3, 6, 25), np.float64)
    xt = np.asfortranarray(x)
    mean, var, rstd = cpu.norm_stats(xt, 3, False, 1e-5)
    want = ref.norm_stats(x, 3, False, 1e-5)
    assert_close(var, want[1], 1e-12, 1e-14, "var")
    y = cpu.norm_forward(xt, mean, rstd, gamma[::-1], beta, 3, False)
    assert_close(y, ref.norm_forward(x, mean, rstd, gamma[::-1].copy(), beta, 3, False),
                 1e-12, 1e-12, "y")
    strided_mean = np.repeat(mean, 2)[::2]
    got = cpu.norm_backward(xt, np.asfortranarray(dy), strided_mean, rstd, gamma, 3, False)
    want = ref.norm_backward(x, dy, mean, rstd, gamma, 3, False)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_close(g, w, 1e-12, 1e-12, name)


def test_empty_batch():
    x = np.zeros((0, 6, 5), np.float32)
    mean, var, rstd = cpu.norm_stats(x, 3, False, 1e-5)
    assert mean.shape == (0,)
    y, mean, var, rstd = cpu.norm_forward_train(x, None, None, 1, True, 1e-5)
    assert y.shape == x.shape and mean.shape == (6,) and np.all(np.isnan(rstd))
    mean, var, rstd = cpu.norm_stats(x, 1, True, 1e-5)
    assert mean.shape == (6,) and np.all(np.isnan(var))
    gamma = np.ones(6, np.float32)
    assert cpu.norm_forward(x, mean, rstd, gamma, gamma, 1, True).shape == x.shape
    dx, dgamma, dbeta = cpu.norm_backward(x, x, mean, rstd, gamma, 1, True)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dgamma, 0.0)
    np.testing.assert_array_equal(dbeta, 0.0)
    assert dgamma is not dbeta


def test_same_result_for_any_thread_count(rng):
    """Tiles and merge order do not depend on the thread count: bitwise equal."""
    x, dy, gamma, beta = make(rng, (16, 12, 300), np.float32)
    xl, dyl = x.reshape(16, -1, 1), dy.reshape(16, -1, 1)
    gl = rng.standard_normal(xl.shape[1]).astype(np.float32)

    def run():
        out = []
        for xv, dyv, g, groups, per_channel in ((x, dy, gamma, 1, True),
                                                (x, dy, gamma, 4, False),
                                                (xl, dyl, gl, 1, False)):
            out += list(cpu.norm_stats(xv, groups, per_channel, 1e-5))
            y, mean, var, rstd = cpu.norm_forward_train(xv, g, g, groups, per_channel, 1e-5)
            out += [y, mean, var, cpu.norm_forward(xv, mean, rstd, g, g, groups, per_channel)]
            out += list(cpu.norm_backward(xv, dyv, mean, rstd, g, groups, per_channel))
        return out

    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, run()):
        np.testing.assert_array_equal(a, b)
