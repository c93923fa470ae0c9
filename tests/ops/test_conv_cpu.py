"""The cpu backend's two Conv2D schedules (tinynet.ops.conv.cpu.SCHEDULES)
run on every shape, whatever K, and the chunked schedule's chunks, through
their public ``chunk_bytes`` argument: a batch split into chunks with and
without a remainder. The Winograd forward of 3x3 stride-1 layers on every
output parity and padding, in chunks, and only on finite inputs. The two grouped schedules (GROUPED_SCHEDULES) run on
every shape they take: the per-group GEMMs on every case, groups = 1
included, the direct kernels on every case with one input channel per
group (C = 1 included)."""
import numpy as np
import pytest

from tinynet.backends import ref
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.ops.conv.cases import CASES, GROUPED_CASES, ConvCase
from harness import FLOATS, Backend

CPU = Backend("cpu")
REMAINDER = ConvCase("n5-c6-same", 5, 6, 5, 6, 3, 3, 3, (1, 1), (1, 1))
"""K = 54 > SMALL_K: the chunked schedule is conv2d_forward's own for it."""


def _inputs(rng, case, dtype):
    x = rng.standard_normal(case.x_shape)
    W = rng.standard_normal(case.w_shape) / np.sqrt(case.K)
    b = rng.standard_normal(case.F) if case.bias else None
    return tuple(None if a is None else a.astype(dtype) for a in (x, W, b))


def _check(forward, backward, rng, case, dtype, grouped=False, **kw):
    """forward and backward on ``case`` against the float64 reference; a
    ``grouped`` schedule takes case.groups as its last argument."""
    x, W, b = _inputs(rng, case, dtype)
    groups = (case.groups,) if grouped else ()
    y, cache = forward(x, W, b, case.stride, case.padding, *groups, **kw)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    y_ref, _ = ref.conv2d_forward(x64, W64, b64, case.stride, case.padding, case.groups)
    CPU.assert_matches(y, y_ref, dtype, "y")
    dy = rng.standard_normal(y_ref.shape)
    grads = backward(dy.astype(dtype), x, W, cache, case.stride, case.padding, case.bias,
                     case.need_dx, *groups, **kw)
    grads_ref = ref.conv2d_backward(dy, x64, W64, None, case.stride, case.padding, case.bias,
                                    case.need_dx, case.groups)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        CPU.assert_matches(g, g_ref, dtype, name)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("name", sorted(cpu_conv.SCHEDULES))
def test_schedule_matches_ref(rng, name, case, dtype):
    _check(*cpu_conv.SCHEDULES[name], rng, case, dtype)


def test_schedule_follows_small_k():
    assert cpu_conv.schedule(cpu_conv.SMALL_K) == "samples"
    assert cpu_conv.schedule(cpu_conv.SMALL_K + 1) == "chunks"
    assert cpu_conv.schedule(REMAINDER.K) == "chunks"


def test_grouped_schedule_follows_channels_per_group():
    assert cpu_conv.schedule(9, groups=4, Cg=1) == "depthwise"
    assert cpu_conv.schedule(18, groups=4, Cg=2) == "groups"
    assert cpu_conv.schedule(9, groups=1, Cg=1) == "samples"


GROUPS_RUNS = CASES + GROUPED_CASES
DIRECT_RUNS = tuple(case for case in CASES + GROUPED_CASES if case.Cg == 1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", GROUPS_RUNS, ids=[case.name for case in GROUPS_RUNS])
def test_per_group_schedule_matches_ref(rng, case, dtype):
    _check(*cpu_conv.GROUPED_SCHEDULES["groups"], rng, case, dtype, grouped=True)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", DIRECT_RUNS, ids=[case.name for case in DIRECT_RUNS])
def test_direct_schedule_matches_ref(rng, case, dtype):
    _check(*cpu_conv.GROUPED_SCHEDULES["depthwise"], rng, case, dtype, grouped=True)


def test_output_positions():
    # dy (2, 3) with strides (2, 2) on a padded width of 7: rows 0 and 2 of width 7.
    valid = cpu_conv.output_positions(2, 3, 2, 2, 7)
    assert valid.shape == (3 * 7,)
    assert np.flatnonzero(valid).tolist() == [0, 2, 4, 14, 16, 18]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("nb", [1, 2, 3, 5], ids=["1x5", "2+2+1", "3+2", "5"])
def test_chunks_with_a_remainder(rng, nb, dtype):
    # chunk_bytes of nb samples' columns: the batch of 5 runs in chunks of nb,
    # the last one holding what remains (the ids).
    K, P = REMAINDER.K, REMAINDER.H * REMAINDER.W
    itemsize = np.dtype(dtype).itemsize
    chunk_bytes = nb * K * P * itemsize
    assert cpu_conv.chunk_samples(REMAINDER.N, K, P, itemsize, chunk_bytes) == nb
    assert cpu_conv.chunk_samples(REMAINDER.N, K, P, itemsize, chunk_bytes + K * P - 1) == nb
    _check(cpu_conv.forward_chunks, cpu_conv.backward_chunks, rng, REMAINDER, dtype,
           chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("H, W, KW, stride, padding, expected", [
    (12, 12, 3, (1, 1), (0, 0), (1, 1)),   # the speedrun's 3x3 without padding
    (8, 8, 5, (1, 1), (1, 1), (2, 1)),     # 5 wide with padding 1: one more each side
    (8, 8, 5, (1, 1), (2, 2), (2, 0)),     # already as wide as the input
    (8, 8, 3, (1, 1), (0, 3), (3, 0)),     # wider than the input
    (8, 8, 4, (1, 1), (0, 0), (0, 0)),     # an even kernel width
    (8, 8, 3, (2, 1), (0, 0), (0, 0)),     # a stride
    (8, 8, 3, (1, 2), (0, 0), (0, 0)),
])
def test_widened(H, W, KW, stride, padding, expected):
    assert cpu_conv.widened(H, W, KW, stride, padding) == expected


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_widened_only_when_x_and_w_are_finite(rng, bad):
    # The chunked schedule's geometry: widened for finite x and W; narrow
    # when either holds an inf or a NaN (the dropped columns would multiply
    # it by their zero gradient).
    x = rng.standard_normal((2, 9, 8, 8)).astype(np.float32)
    W = rng.standard_normal((4, 9, 5, 5)).astype(np.float32)
    assert cpu_conv._chunk_geometry(x, W, (1, 1), (1, 1)) == ((1, 2), 6, 8, 1, 6)
    for arr in (x, W):
        kept = arr.flat[-1]
        arr.flat[-1] = bad
        assert cpu_conv._chunk_geometry(x, W, (1, 1), (1, 1)) == ((1, 1), 6, 6, 0, 6)
        arr.flat[-1] = kept


def test_chunk_samples_bounds():
    # At least one sample per chunk, at most the batch.
    assert cpu_conv.chunk_samples(5, 54, 30, 4, 1) == 1
    assert cpu_conv.chunk_samples(5, 54, 30, 4, 1 << 30) == 5


WINOGRAD_RUNS = [
    # (N, C, F, H, W, padding): even and odd output sizes, each padding up
    # to 2 on either side, one output pixel, a channel count below the
    # chunked schedule's (forward_winograd itself takes any).
    (3, 8, 5, 7, 9, (1, 1)),
    (2, 6, 4, 6, 5, (0, 2)),
    (5, 7, 3, 4, 4, (2, 0)),
    (1, 16, 3, 3, 3, (0, 0)),
    (2, 2, 3, 12, 12, (0, 0)),
    (4, 6, 6, 14, 14, (1, 1)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("run", WINOGRAD_RUNS, ids=[str(r) for r in WINOGRAD_RUNS])
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_forward_matches_ref(rng, run, bias, dtype):
    N, C, F, H, W, padding = run
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Wt = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    y, cache = cpu_conv.forward_winograd(x, Wt, b, padding)
    assert cache is None and y.dtype == dtype
    b64 = None if b is None else b.astype(np.float64)
    y_ref, _ = ref.conv2d_forward(x.astype(np.float64), Wt.astype(np.float64), b64, (1, 1),
                                  padding)
    CPU.assert_matches(y, y_ref, dtype, "y")


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 16 * 11 * 16 * 4, 1 << 30],
                         ids=["one sample", "two samples", "a thread's share"])
def test_winograd_chunks_with_a_remainder(rng, chunk_bytes):
    # 5 samples of 16 tiles, C + F = 11 channels, float32: chunks of 1, 2
    # (2 + 2 + 1) or as many as a thread's share of the batch.
    x = rng.standard_normal((5, 6, 8, 8)).astype(np.float32)
    Wt = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    y, _ = cpu_conv.forward_winograd(x, Wt, None, (1, 1), chunk_bytes)
    y_ref, _ = ref.conv2d_forward(x.astype(np.float64), Wt.astype(np.float64), None, (1, 1),
                                  (1, 1))
    CPU.assert_matches(y, y_ref, np.float32, "y")


def test_winograd_fits_3x3_stride_1_layers_with_enough_channels():
    n = cpu_conv.WINOGRAD_MIN_CHANNELS
    W = np.zeros((n, n, 3, 3))
    assert cpu_conv.winograd_fits(W, (1, 1))
    assert cpu_conv.schedule(9 * n) == "chunks"
    assert not cpu_conv.winograd_fits(W, (2, 1))
    assert not cpu_conv.winograd_fits(W, (1, 1), groups=2)
    assert not cpu_conv.winograd_fits(np.zeros((n, n, 3, 5)), (1, 1))
    assert not cpu_conv.winograd_fits(np.zeros((n - 1, n, 3, 3)), (1, 1))
    assert not cpu_conv.winograd_fits(np.zeros((n, n - 1, 3, 3)), (1, 1))


WINOGRAD_CASES = [
    ConvCase("wino-same", 3, 24, 5, 7, 24, 3, 3, (1, 1), (1, 1)),
    ConvCase("wino-p0", 2, 25, 6, 6, 26, 3, 3, (1, 1), (0, 0), bias=False),
    ConvCase("wino-p2x0", 2, 24, 4, 5, 24, 3, 3, (1, 1), (2, 0), need_dx=False),
]
"""Layers that conv2d_forward runs by Winograd (odd and even output sizes)."""


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=[case.name for case in WINOGRAD_CASES])
def test_ops_on_winograd_layers_match_ref(rng, case, dtype):
    # The public ops end to end: the Winograd forward, the chunked backward.
    assert cpu_conv.winograd_fits(np.zeros(case.w_shape), case.stride)
    _check(cpu_conv.conv2d_forward, cpu_conv.conv2d_backward, rng, case, dtype)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf], ids=["finite", "nan", "inf"])
@pytest.mark.parametrize("where", ["x", "W"])
def test_conv2d_forward_runs_winograd_only_on_finite_inputs(rng, bad, where):
    # Finite x and W: conv2d_forward's result is forward_winograd's, bit for
    # bit. An inf or a NaN in either: the chunked schedule's, which puts it
    # where the reference does (Winograd's transforms would spread it over
    # its 2x2 tile).
    n = cpu_conv.WINOGRAD_MIN_CHANNELS
    x = rng.standard_normal((2, n, 6, 6)).astype(np.float32)
    Wt = rng.standard_normal((n, n, 3, 3)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    if bad is not None:
        (x if where == "x" else Wt).flat[7] = bad
    y, cache = cpu_conv.conv2d_forward(x, Wt, b, (1, 1), (1, 1))
    assert cache is None
    runs = cpu_conv.forward_winograd if bad is None else cpu_conv.forward_chunks
    args = (x, Wt, b, (1, 1)) if bad is None else (x, Wt, b, (1, 1), (1, 1))
    assert np.array_equal(y, runs(*args)[0], equal_nan=True)
    if bad is not None:
        with np.errstate(invalid="ignore"):
            y_ref, _ = ref.conv2d_forward(x, Wt, b, (1, 1), (1, 1))
        assert np.array_equal(np.isfinite(y), np.isfinite(y_ref))
