"""The cpu backend's normalization ops against the reference backend.

float32 inputs are compared with the float64 reference run on the same
values; float64 inputs tightly. Every layout (BatchNorm per channel, grouped
sets with G = 1, 3 and C, L == 1 rows) runs with the production tile sizes
and with tiny ones, so that on small arrays sets span several tiles (Chan's
merge, the partial sums) and backward tasks hold several samples.
"""
import numba
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref
from tinynet.backends.cpu import norm as cpu_norm
from tinynet.backends.ref import norm as ref_norm
from conftest import assert_close

# (shape of the (N, C, L) view, groups, per_channel)
LAYOUTS = [
    ((3, 6, 25), 1, True),     # BatchNorm2d
    ((5, 7, 1), 1, True),      # BatchNorm1d on (N, C)
    ((300, 45, 1), 1, True),   # BatchNorm1d, fused channel blocks (3 of 16, 16, 13)
    ((520, 37, 1), 1, True),   # the same, a last block of 5
    ((3, 6, 25), 1, False),    # GroupNorm with one group
    ((3, 6, 25), 3, False),    # GroupNorm
    ((3, 6, 25), 6, False),    # InstanceNorm
    ((4, 30, 1), 1, False),    # LayerNorm over 30 features
    ((9, 20, 1), 1, False),    # LayerNorm, several samples per backward task
    ((9, 6, 1), 3, False),     # GroupNorm on (N, C): pairs of samples per group
    ((9, 4, 2), 2, False),
    ((2, 5, 7), 5, False),
]
IDS = [f"{s}-G{g}-{'bn' if pc else 'sets'}" for s, g, pc in LAYOUTS]


@pytest.fixture(params=["default tiles", "tiny tiles"])
def tiling(request, monkeypatch):
    """Run with the production tiling, or with tiles of a few elements."""
    if request.param == "tiny tiles":
        monkeypatch.setattr(cpu_norm, "TILE", 8)
        monkeypatch.setattr(cpu_norm, "ROWS", 2)
    return request.param


def tol(dtype):
    return 2e-6 if dtype == np.float32 else 1e-12


def make(rng, shape, dtype, offset=0.5, scale=2.0):
    C = shape[1]
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, dy, gamma, beta


def set_rows(a, groups, per_channel):
    """An (N, C, L) array as (S, M): one set per row, in the ops' set order."""
    N, C, _ = a.shape
    if per_channel:
        return a.transpose(1, 0, 2).reshape(C, -1)
    return a.reshape(N * groups, -1)


def f64(a):
    return None if a is None else a.astype(np.float64)


def assert_scaled_close(got, want, rtol, what):
    """Same shape and |got - want| <= rtol * max(1, max|want|) elementwise."""
    assert got.shape == want.shape, what
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert_close(got, want, 0, rtol * scale, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_stats_match_ref(rng, tiling, shape, groups, per_channel, dtype):
    x, _, _, _ = make(rng, shape, dtype)
    want = ref.norm_stats(x.astype(np.float64), groups, per_channel, 1e-5)
    got = cpu.norm_stats(x, groups, per_channel, 1e-5)
    for name, g, w in zip(("mean", "var", "rstd"), got, want):
        assert g.dtype == np.float64 and g.shape == w.shape
        assert_close(g, w, 1e-12, 1e-14, name)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_forward_matches_ref(rng, tiling, shape, groups, per_channel, dtype, affine):
    x, _, gamma, beta = make(rng, shape, dtype)
    if not affine:
        gamma = beta = None
    mean, _, rstd = ref.norm_stats(x.astype(np.float64), groups, per_channel, 1e-5)
    want = ref.norm_forward(x.astype(np.float64), mean, rstd, f64(gamma), f64(beta),
                            groups, per_channel)
    y = cpu.norm_forward(x, mean, rstd, gamma, beta, groups, per_channel)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_scaled_close(y, want, tol(dtype), "y")


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_forward_train_matches_ref(rng, tiling, shape, groups, per_channel, dtype, affine):
    x, _, gamma, beta = make(rng, shape, dtype)
    if not affine:
        gamma = beta = None
    want = ref.norm_forward_train(x.astype(np.float64), f64(gamma), f64(beta), groups,
                                  per_channel, 1e-5)
    y, mean, var, rstd = cpu.norm_forward_train(x, gamma, beta, groups, per_channel, 1e-5)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_scaled_close(y, want[0], tol(dtype), "y")
    for name, g, w in zip(("mean", "var", "rstd"), (mean, var, rstd), want[1:]):
        assert g.dtype == np.float64
        assert_close(g, w, 1e-12, 1e-14, name)


@pytest.mark.parametrize("fixed_stats", [False, True])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_backward_matches_ref(rng, tiling, shape, groups, per_channel, dtype, affine,
                              fixed_stats):
    x, dy, gamma, _ = make(rng, shape, dtype)
    if not affine:
        gamma = None
    mean, _, rstd = ref.norm_stats(x.astype(np.float64), groups, per_channel, 1e-5)
    if fixed_stats:
        # Constant statistics that did not come from x, as BatchNorm's eval mode.
        mean, rstd = mean + 0.3, rstd * 0.8
    want = ref.norm_backward(x.astype(np.float64), dy.astype(np.float64), mean, rstd,
                             f64(gamma), groups, per_channel, fixed_stats)
    got = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, fixed_stats)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.flags.c_contiguous, name
        assert_scaled_close(g, w, tol(dtype), name)


@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_backward_without_dx(rng, tiling, shape, groups, per_channel):
    x, dy, gamma, _ = make(rng, shape, np.float64)
    mean, _, rstd = cpu.norm_stats(x, groups, per_channel, 1e-5)
    dx, dgamma, dbeta = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
    skipped = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, need_dx=False)
    assert skipped[0] is None
    np.testing.assert_array_equal(skipped[1], dgamma)
    np.testing.assert_array_equal(skipped[2], dbeta)
    assert cpu.norm_backward(x, dy, mean, rstd, None, groups, per_channel,
                             need_dx=False) == (None, None, None)
    # The reference honours need_dx the same way.
    ref_skipped = ref.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, need_dx=False)
    assert ref_skipped[0] is None
    assert_close(ref_skipped[1], dgamma, 1e-12, 1e-12, "ref dgamma")


@pytest.mark.parametrize("shape,groups,per_channel", [
    ((4, 6, 49), 1, True), ((40, 6, 1), 1, True), ((4, 294, 1), 1, False),
    ((4, 6, 49), 3, False), ((4, 6, 49), 6, False)])
def test_large_offset_float32_is_accurate(rng, tiling, shape, groups, per_channel):
    """Mean 100, std 0.1 in float32: the statistics match float64 to 1e-12 and
    y, dx are within a few float32 roundings of the float64 reference."""
    x, dy, gamma, beta = make(rng, shape, np.float32, offset=100.0, scale=0.1)
    x64 = x.astype(np.float64)
    sets = set_rows(x64, groups, per_channel)
    y, mean, var, rstd = cpu.norm_forward_train(x, gamma, beta, groups, per_channel, 1e-5)
    for got in (cpu.norm_stats(x, groups, per_channel, 1e-5), (mean, var)):
        assert_close(got[0], sets.mean(axis=1), 1e-12, 0, "mean")
        assert_close(got[1], sets.var(axis=1), 1e-12, 0, "var")
    y_ref = ref.norm_forward(x64, mean, rstd, f64(gamma), f64(beta), groups, per_channel)
    assert_scaled_close(y, y_ref, 5e-7, "y train")
    assert_scaled_close(cpu.norm_forward(x, mean, rstd, gamma, beta, groups, per_channel),
                        y_ref, 5e-7, "y")
    want = ref.norm_backward(x64, dy.astype(np.float64), mean, rstd, f64(gamma),
                             groups, per_channel)
    got = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_scaled_close(g, w, 5e-7, name)


def test_variance_is_never_negative():
    x = np.full((2, 3, 5), 0.1, np.float32)
    for per_channel, groups in ((True, 1), (False, 3), (False, 1)):
        for _, var, rstd in (cpu.norm_stats(x, groups, per_channel, 1e-5),
                             cpu.norm_forward_train(x, None, None, groups, per_channel,
                                                    1e-5)[1:]):
            np.testing.assert_array_equal(var, 0.0)
            assert_close(rstd, np.full(var.shape, 1e-5 ** -0.5), 1e-12, 0, "rstd")


@pytest.mark.parametrize("shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_nan_stays_in_its_sets(rng, tiling, shape, groups, per_channel):
    x, dy, gamma, beta = make(rng, shape, np.float32)
    N, C, L = shape
    # Sample N - 2 shares its backward task with sample N - 1 (in pairs if L == 1).
    n0, c0, l0 = N - 2, C - 1, L // 2
    x[n0, c0, l0] = np.nan
    # The members of the set that holds x[n0, c0, l0].
    hit = np.zeros(shape, dtype=bool)
    if per_channel:
        hit[:, c0, :] = True
    else:
        Cg = C // groups
        g0 = c0 // Cg
        hit[n0, g0 * Cg:(g0 + 1) * Cg, :] = True
    y, mean, var, rstd = cpu.norm_forward_train(x, gamma, beta, groups, per_channel, 1e-5)
    y_again = cpu.norm_forward(x, mean, rstd, gamma, beta, groups, per_channel)
    dx, dgamma, dbeta = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
    for name, a in (("y", y), ("y from norm_forward", y_again), ("dx", dx)):
        assert np.all(np.isnan(a[hit])), name
        assert np.all(np.isfinite(a[~hit])), name
    channels_hit = hit.any(axis=(0, 2))
    assert np.all(np.isnan(dgamma[channels_hit])) and np.all(np.isfinite(dgamma[~channels_hit]))
    assert np.all(np.isfinite(dbeta))


@pytest.mark.parametrize("shape", [(3, 6, 25), (5, 7, 1)])
def test_batchnorm_eval_folds_running_stats(rng, tiling, shape):
    """BatchNorm's eval mode: constant per-channel statistics, y = x * scale + shift
    and dx = rstd * gamma * dy, which does not depend on x (not even a NaN)."""
    x, dy, gamma, beta = make(rng, shape, np.float32)
    C = shape[1]
    running_mean = rng.standard_normal(C)
    running_var = rng.uniform(0.5, 2.0, C)
    rstd = 1.0 / np.sqrt(running_var + 1e-5)
    scale = rstd * gamma
    shift = beta - running_mean * scale
    y = cpu.norm_forward(x, running_mean, rstd, gamma, beta, 1, True)
    assert_scaled_close(y, x * scale[None, :, None] + shift[None, :, None], 2e-6, "y")
    x[0, 0, 0] = np.nan
    dx, dgamma, dbeta = cpu.norm_backward(x, dy, running_mean, rstd, gamma, 1, True,
                                          fixed_stats=True)
    assert_scaled_close(dx, dy * scale[None, :, None], 2e-6, "dx")
    assert np.isnan(dgamma[0]) and np.all(np.isfinite(dgamma[1:]))
    assert_close(dbeta, dy.astype(np.float64).sum(axis=(0, 2)), 1e-6, 1e-6, "dbeta")


def test_outputs_are_fresh_and_inputs_untouched(rng):
    x, dy, gamma, beta = make(rng, (3, 6, 25), np.float32)
    saved = [a.copy() for a in (x, dy, gamma, beta)]
    for per_channel, groups in ((True, 1), (False, 3)):
        mean, var, rstd = cpu.norm_stats(x, groups, per_channel, 1e-5)
        y = cpu.norm_forward(x, mean, rstd, gamma, beta, groups, per_channel)
        dx, dgamma, dbeta = cpu.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
        for a in (y, dx):
            assert not np.shares_memory(a, x) and not np.shares_memory(a, dy)
    for a, b in zip((x, dy, gamma, beta), saved):
        np.testing.assert_array_equal(a, b)


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


def test_errors_match_ref(rng):
    x = rng.standard_normal((3, 6, 5))
    with pytest.raises(ValueError, match=r"norm_stats: x must have shape \(N, C, L\)"):
        cpu.norm_stats(x[0], 1, False, 1e-5)
    with pytest.raises(ValueError, match="norm_stats: groups must be a positive divisor"):
        cpu.norm_stats(x, 4, False, 1e-5)
    mean, _, rstd = cpu.norm_stats(x, 3, False, 1e-5)
    with pytest.raises(ValueError, match=r"norm_forward: gamma must have shape \(6,\)"):
        cpu.norm_forward(x, mean, rstd, np.ones(5), None, 3, False)
    with pytest.raises(ValueError, match=r"norm_forward: mean must have shape \(6,\)"):
        cpu.norm_forward(x, mean, rstd, None, None, 3, True)
    with pytest.raises(ValueError, match=r"norm_forward_train: beta must have shape \(6,\)"):
        cpu.norm_forward_train(x, None, np.ones(5), 3, False, 1e-5)
    with pytest.raises(ValueError, match="norm_forward_train: groups must be a positive"):
        cpu.norm_forward_train(x, None, None, 4, False, 1e-5)
    with pytest.raises(ValueError, match="norm_backward: dy must have the shape of x"):
        cpu.norm_backward(x, x[:, :, :4], mean, rstd, None, 3, False)
    with pytest.raises(TypeError, match="norm_stats: x must be float32 or float64"):
        cpu.norm_stats(x.astype(np.int64), 3, False, 1e-5)


def test_ops_are_cpu_kernels():
    for name in ref_norm.__all__:
        assert getattr(cpu, name).__module__ == "tinynet.backends.cpu.norm", name


@pytest.mark.parametrize("build,shape", [
    (lambda: tn.BatchNorm(6), (3, 6, 5, 5)), (lambda: tn.LayerNorm((6, 5, 5)), (3, 6, 5, 5)),
    (lambda: tn.InstanceNorm(6), (3, 6, 5, 5)), (lambda: tn.GroupNorm(3, 6), (3, 6, 5, 5)),
    (lambda: tn.BatchNorm(6), (5, 6))])
def test_layers_match_ref_backend(rng, build, shape):
    """Each layer, forward and backward in float32, on the cpu and ref backends."""
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for backend in ("ref", "cpu"):
        layer = build()
        with tn.use_backend(backend):
            y = layer.forward(x)
            dx = layer.backward(dy)
            layer.eval()
            y_eval = layer.forward(x)
        results.append([y, dx, y_eval, layer.weight.grad, layer.bias.grad])
    for name, a, b in zip(("y", "dx", "y eval", "dweight", "dbias"), *results):
        assert a.dtype == b.dtype == np.float32, name
        assert_scaled_close(b, a.astype(np.float64), 2e-6, name)
