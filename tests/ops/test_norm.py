"""The normalization family (tinynet.ops.norm) on every backend: the ops against the
float64 reference over the cases of tinynet.ops.norm.cases, the reference against a
set-by-set loop oracle, and the four layers (gradients, torch parity and torch's
options, running statistics, state_dict, bad input)."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from tinynet.ops import norm
from tinynet.ops.norm.cases import ALL_CASES, CASES, LARGE_CASES
from conftest import assert_close, check_grads
from cudasim import SIMULATOR
from harness import FLOATS, Backend

EPS = 1e-5

# y, dx, dgamma and dbeta are within TOL[dtype] * max(1, max|want|) of the
# float64 reference on every backend: a few roundings of the dtype, whatever
# the offset of x (an absolute bound, since a sum over a set can be near 0).
TOL = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.fixture(params=ALL_CASES, ids=lambda case: case.name)
def case(request, backend):
    """Each case of tinynet.ops.norm.cases; the large ones not under the CUDA simulator."""
    if backend.name == "cuda" and SIMULATOR and request.param in LARGE_CASES:
        pytest.skip("a large case: too slow for the CUDA simulator (it runs on a GPU)")
    return request.param


def make(rng, shape, dtype, offset=0.5, scale=2.0):
    """x (offset + scale * N(0, 1)), dy, gamma (0.5 to 1.5) and beta, host arrays of ``dtype``."""
    C = shape[1]
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, dy, gamma, beta


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


def set_rows(a, groups, per_channel):
    """An (N, C, L) array as (S, M): one set per row, in the ops' set order."""
    N, C, _ = a.shape
    if per_channel:
        return a.transpose(1, 0, 2).reshape(C, -1)
    return a.reshape(N * groups, -1)


def assert_near(backend, got, want, dtype, what, tol=None):
    """A result of ``backend`` (of ``dtype``, C-contiguous, or None) within
    ``tol`` (default TOL[dtype]) times max(1, max|want|) of the float64 ``want``."""
    if want is None:
        assert got is None, f"{backend.name} {what}: expected None"
        return
    assert_scaled(backend.get(got), want, dtype, f"{backend.name} {what}", tol)


def assert_scaled(got, want, dtype, what, tol=None):
    """A host array as ``assert_near``."""
    assert got.dtype == dtype and got.flags.c_contiguous, f"{what}: {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=0,
                               atol=(tol or TOL[np.dtype(dtype).type]) * scale, err_msg=what)


def assert_stats(backend, got, want, rtol=1e-12, atol=1e-14):
    """mean, var, rstd of ``backend`` (float64 (S,)) against the reference's."""
    for name, g, w in zip(("mean", "var", "rstd"), got, want):
        g = backend.get(g)
        assert g.dtype == np.float64 and g.shape == w.shape, f"{backend.name} {name}"
        assert_close(g, w, rtol, atol, f"{backend.name} {name}")


# -- the contract -------------------------------------------------------------

def test_set_shape():
    assert norm.set_shape((3, 6, 5), 1, True) == (6, 15)
    assert norm.set_shape((3, 6, 5), 2, False) == (6, 15)
    assert norm.set_shape((3, 6, 5), 6, False) == (18, 5)
    assert norm.set_shape((4, 30, 1), 1, False) == (4, 30)


def test_cases_take_every_layout():
    """Both set layouts with L == 1 and L > 1, one group, several and one per
    channel, odd batches (row sets in pairs with one left over)."""
    kinds = {(case.per_channel, case.shape[2] == 1) for case in CASES}
    assert kinds == {(True, True), (True, False), (False, True), (False, False)}
    groups = {case.groups == case.shape[1] for case in CASES if not case.per_channel}
    assert groups == {True, False}
    assert any(case.groups == 1 and case.shape[2] > 1 for case in CASES if not case.per_channel)
    assert any(case.shape[0] % 2 == 1 and case.shape[2] == 1 for case in CASES)
    names = [case.name for case in ALL_CASES]
    assert len(set(names)) == len(names)


def test_ops_are_the_family_modules(backend):
    for name in ("norm_stats", "norm_forward", "norm_forward_train", "norm_backward"):
        fn = getattr(backend.ops, name)
        assert fn.__module__ == f"tinynet.ops.norm.{backend.name}", name
        assert fn.contract_ref is getattr(norm, name)


def test_errors_match_the_contract(backend, rng):
    x = backend.put(rng.standard_normal((3, 6, 5)))
    ops = backend.ops
    with pytest.raises(ValueError, match=r"norm_stats: x must have shape \(N, C, L\)"):
        ops.norm_stats(backend.put(np.ones((6, 5))), 1, False, EPS)
    with pytest.raises(ValueError, match="norm_stats: groups must be a positive divisor of C=6"):
        ops.norm_stats(x, 4, False, EPS)
    mean, _, rstd = ops.norm_stats(x, 3, False, EPS)
    with pytest.raises(ValueError, match=r"norm_forward: gamma must have shape \(6,\)"):
        ops.norm_forward(x, mean, rstd, backend.put(np.ones(5)), None, 3, False)
    with pytest.raises(ValueError, match=r"norm_forward: mean must have shape \(6,\)"):
        ops.norm_forward(x, mean, rstd, None, None, 3, True)
    with pytest.raises(ValueError, match=r"norm_forward_train: beta must have shape \(6,\)"):
        ops.norm_forward_train(x, None, backend.put(np.ones(5)), 3, False, EPS)
    with pytest.raises(ValueError, match="norm_forward_train: groups must be a positive"):
        ops.norm_forward_train(x, None, None, 4, False, EPS)
    with pytest.raises(ValueError, match="norm_backward: dy must have the shape of x"):
        ops.norm_backward(x, backend.put(np.ones((3, 6, 4))), mean, rstd, None, 3, False)
    with pytest.raises(TypeError, match="norm_stats: x must be float32 or float64"):
        ops.norm_stats(backend.put(np.ones((3, 6, 5), np.int64)), 3, False, EPS)


# -- the reference against a set-by-set loop -----------------------------------

def members(shape, groups, per_channel):
    """The (n, c, l) indices of every set, in the order of the ops' (S,) arrays."""
    N, C, L = shape
    if per_channel:
        return [[(n, c, i) for n in range(N) for i in range(L)] for c in range(C)]
    Cg = C // groups
    return [[(n, c, i) for c in range(g * Cg, (g + 1) * Cg) for i in range(L)]
            for n in range(N) for g in range(groups)]


def loop_norm(x, dy, gamma, beta, groups, per_channel, eps, fixed=None):
    """A set-by-set loop oracle of stats, forward and backward.

    ``fixed`` = (mean, rstd) gives constant statistics (BatchNorm eval).
    """
    C = x.shape[1]
    gamma = np.ones(C) if gamma is None else gamma
    beta = np.zeros(C) if beta is None else beta
    y, dx = np.zeros(x.shape), np.zeros(x.shape)
    dgamma, dbeta = np.zeros(C), np.zeros(C)
    means, variances, rstds = [], [], []
    for s, idx in enumerate(members(x.shape, groups, per_channel)):
        vals = np.array([x[i] for i in idx], dtype=np.float64)
        mean = vals.sum() / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals)
        rstd = 1.0 / np.sqrt(var + eps)
        means.append(mean), variances.append(var), rstds.append(rstd)
        if fixed is not None:
            mean, rstd = fixed[0][s], fixed[1][s]
        xhat = [(x[i] - mean) * rstd for i in idx]
        dxhat = [dy[i] * gamma[i[1]] for i in idx]
        mean_dxhat = sum(dxhat) / len(idx)
        mean_dxhat_xhat = sum(a * b for a, b in zip(dxhat, xhat)) / len(idx)
        for k, i in enumerate(idx):
            c = i[1]
            y[i] = xhat[k] * gamma[c] + beta[c]
            if fixed is None:
                dx[i] = rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat)
            else:
                dx[i] = rstd * dxhat[k]
            dgamma[c] += dy[i] * xhat[k]
            dbeta[c] += dy[i]
    return (np.array(means), np.array(variances), np.array(rstds)), y, (dx, dgamma, dbeta)


@pytest.mark.parametrize("mode", ["train", "fixed stats", "no affine"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_ref_matches_loop_oracle(rng, case, mode):
    _, C, _ = case.shape
    S = norm.set_shape(case.shape, case.groups, case.per_channel)[0]
    x = rng.standard_normal(case.shape) * 2 + 1
    dy = rng.standard_normal(case.shape)
    gamma, beta = (None, None) if mode == "no affine" else (rng.standard_normal(C),
                                                            rng.standard_normal(C))
    fixed = (rng.standard_normal(S), rng.uniform(0.5, 2.0, S)) if mode == "fixed stats" else None
    stats_o, y_o, grads_o = loop_norm(x, dy, gamma, beta, case.groups, case.per_channel, EPS,
                                      fixed)
    stats = ref.norm_stats(x, case.groups, case.per_channel, EPS)
    for name, got, want in zip(("mean", "var", "rstd"), stats, stats_o):
        assert got.shape == (S,) and got.dtype == np.float64, name
        assert_close(got, want, 1e-12, 1e-12, name)
    mean, rstd = (stats[0], stats[2]) if fixed is None else fixed
    y = ref.norm_forward(x, mean, rstd, gamma, beta, case.groups, case.per_channel)
    assert_close(y, y_o, 1e-12, 1e-12, "y")
    grads = ref.norm_backward(x, dy, mean, rstd, gamma, case.groups, case.per_channel,
                              fixed_stats=fixed is not None)
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, grads_o):
        if gamma is None and name != "dx":
            assert got is None, name
        else:
            assert_close(got, want, 1e-11, 1e-11, name)


# -- every backend against the reference ----------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
def test_stats_match_ref(backend, rng, case, dtype):
    x, _, _, _ = make(rng, case.shape, dtype)
    want = ref.norm_stats(f64(x), case.groups, case.per_channel, 1e-3)
    got = backend.ops.norm_stats(backend.put(x), case.groups, case.per_channel, 1e-3)
    assert_stats(backend, got, want)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_matches_ref(backend, rng, case, dtype, affine):
    """The training forward (statistics and y), and the forward with given statistics."""
    x, _, gamma, beta = make(rng, case.shape, dtype)
    if not affine:
        gamma = beta = None
    args = (case.groups, case.per_channel)
    want = ref.norm_forward_train(f64(x), f64(gamma), f64(beta), *args, EPS)
    xd, gd, bd = backend.put(x), backend.put(gamma), backend.put(beta)
    y, *stats = backend.ops.norm_forward_train(xd, gd, bd, *args, EPS)
    assert_near(backend, y, want[0], dtype, "y train")
    assert_stats(backend, stats, want[1:])
    mean, rstd = backend.put(want[1]), backend.put(want[3])
    assert_near(backend, backend.ops.norm_forward(xd, mean, rstd, gd, bd, *args), want[0],
                dtype, "y")


@pytest.mark.parametrize("fixed_stats", [False, True])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
def test_backward_matches_ref(backend, rng, case, dtype, affine, fixed_stats):
    x, dy, gamma, _ = make(rng, case.shape, dtype)
    if not affine:
        gamma = None
    mean, _, rstd = ref.norm_stats(f64(x), case.groups, case.per_channel, EPS)
    if fixed_stats:
        # Constant statistics that did not come from x, as BatchNorm's eval mode.
        mean, rstd = mean + 0.3, rstd * 0.8
    want = ref.norm_backward(f64(x), f64(dy), mean, rstd, f64(gamma), case.groups,
                             case.per_channel, fixed_stats)
    got = backend.ops.norm_backward(backend.put(x), backend.put(dy), backend.put(mean),
                                    backend.put(rstd), backend.put(gamma), case.groups,
                                    case.per_channel, fixed_stats)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_near(backend, g, w, dtype, name)


def test_backward_without_dx(backend, rng, case):
    x, dy, gamma, _ = make(rng, case.shape, np.float64)
    xd, dyd, gd = backend.put(x), backend.put(dy), backend.put(gamma)
    mean, _, rstd = backend.ops.norm_stats(xd, case.groups, case.per_channel, EPS)
    _, dgamma, dbeta = backend.ops.norm_backward(xd, dyd, mean, rstd, gd, case.groups,
                                                 case.per_channel)
    skipped = backend.ops.norm_backward(xd, dyd, mean, rstd, gd, case.groups, case.per_channel,
                                        need_dx=False)
    assert skipped[0] is None
    np.testing.assert_array_equal(backend.get(skipped[1]), backend.get(dgamma))
    np.testing.assert_array_equal(backend.get(skipped[2]), backend.get(dbeta))
    assert backend.ops.norm_backward(xd, dyd, mean, rstd, None, case.groups, case.per_channel,
                                     need_dx=False) == (None, None, None)
    # The reference skips dx the same way.
    want = ref.norm_backward(x, dy, backend.get(mean), backend.get(rstd), gamma, case.groups,
                             case.per_channel, need_dx=False)
    assert want[0] is None
    for name, g, w in zip(("dgamma", "dbeta"), skipped[1:], want[1:]):
        assert_near(backend, g, w, np.float64, name)


def test_large_offset_float32_is_accurate(backend, rng, case):
    """Mean 100, std 0.1 in float32: the statistics match float64 numpy on the same
    values to 1e-12 and y, dx are within a few float32 roundings of the reference."""
    x, dy, gamma, beta = make(rng, case.shape, np.float32, offset=100.0, scale=0.1)
    x64 = f64(x)
    sets = set_rows(x64, case.groups, case.per_channel)
    want = (sets.mean(axis=1), sets.var(axis=1))
    xd = backend.put(x)
    args = (case.groups, case.per_channel)
    y, mean, var, rstd = backend.ops.norm_forward_train(xd, backend.put(gamma),
                                                        backend.put(beta), *args, EPS)
    for got in (backend.ops.norm_stats(xd, *args, EPS), (mean, var)):
        assert_close(backend.get(got[0]), want[0], 1e-12, 0, "mean")
        assert_close(backend.get(got[1]), want[1], 1e-12, 0, "var")
    mean, rstd = backend.get(mean), backend.get(rstd)
    y_ref = ref.norm_forward(x64, mean, rstd, f64(gamma), f64(beta), *args)
    assert_near(backend, y, y_ref, np.float32, "y train", tol=5e-7)
    y = backend.ops.norm_forward(xd, backend.put(mean), backend.put(rstd), backend.put(gamma),
                                 backend.put(beta), *args)
    assert_near(backend, y, y_ref, np.float32, "y", tol=5e-7)
    want = ref.norm_backward(x64, f64(dy), mean, rstd, f64(gamma), *args)
    got = backend.ops.norm_backward(xd, backend.put(dy), backend.put(mean), backend.put(rstd),
                                    backend.put(gamma), *args)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_near(backend, g, w, np.float32, name, tol=5e-7)


def test_variance_is_never_negative(backend):
    x = backend.put(np.full((2, 3, 5), 0.1, np.float32))
    for per_channel, groups in ((True, 1), (False, 3), (False, 1)):
        for _, var, rstd in (backend.ops.norm_stats(x, groups, per_channel, EPS),
                             backend.ops.norm_forward_train(x, None, None, groups, per_channel,
                                                            EPS)[1:]):
            np.testing.assert_array_equal(backend.get(var), 0.0)
            assert_close(backend.get(rstd), np.full(var.shape, EPS ** -0.5), 1e-12, 0, "rstd")


def test_nan_stays_in_its_sets(backend, rng, case):
    x, dy, gamma, beta = make(rng, case.shape, np.float32)
    N, C, L = case.shape
    # Sample N - 2 shares its cpu backward task with sample N - 1 (in pairs if L == 1).
    n0, c0, l0 = max(0, N - 2), C - 1, L // 2
    x[n0, c0, l0] = np.nan
    # The members of the set that holds x[n0, c0, l0].
    hit = np.zeros(case.shape, dtype=bool)
    if case.per_channel:
        hit[:, c0, :] = True
    else:
        Cg = C // case.groups
        g0 = c0 // Cg
        hit[n0, g0 * Cg:(g0 + 1) * Cg, :] = True
    args = (case.groups, case.per_channel)
    xd, gd, bd = backend.put(x), backend.put(gamma), backend.put(beta)
    y, mean, var, rstd = backend.ops.norm_forward_train(xd, gd, bd, *args, EPS)
    y_again = backend.ops.norm_forward(xd, mean, rstd, gd, bd, *args)
    dx, dgamma, dbeta = backend.ops.norm_backward(xd, backend.put(dy), mean, rstd, gd, *args)
    for name, a in (("y", y), ("y from norm_forward", y_again), ("dx", dx)):
        a = backend.get(a)
        assert np.all(np.isnan(a[hit])), name
        assert np.all(np.isfinite(a[~hit])), name
    channels_hit = hit.any(axis=(0, 2))
    dgamma = backend.get(dgamma)
    assert np.all(np.isnan(dgamma[channels_hit])) and np.all(np.isfinite(dgamma[~channels_hit]))
    assert np.all(np.isfinite(backend.get(dbeta)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", [case for case in CASES if case.per_channel],
                         ids=lambda case: case.name)
def test_batchnorm_eval_folds_running_stats(backend, rng, case, dtype):
    """BatchNorm's eval mode: constant per-channel statistics (running statistics of
    the layer's dtype), y = x * scale + shift and dx = rstd * gamma * dy, which does
    not depend on x (not even on a NaN in it)."""
    x, dy, gamma, beta = make(rng, case.shape, dtype)
    C = case.shape[1]
    running_mean = rng.standard_normal(C).astype(dtype)
    rstd = (1.0 / np.sqrt(rng.uniform(0.5, 2.0, C) + EPS)).astype(dtype)
    scale = f64(rstd) * f64(gamma)
    shift = f64(beta) - f64(running_mean) * scale
    y = backend.ops.norm_forward(backend.put(x), backend.put(running_mean), backend.put(rstd),
                                 backend.put(gamma), backend.put(beta), 1, True)
    assert_near(backend, y, f64(x) * scale[None, :, None] + shift[None, :, None], dtype, "y")
    assert_near(backend, y, ref.norm_forward(f64(x), f64(running_mean), f64(rstd), f64(gamma),
                                             f64(beta), 1, True), dtype, "y against ref")
    x[0, 0, 0] = np.nan
    dx, dgamma, dbeta = backend.ops.norm_backward(backend.put(x), backend.put(dy),
                                                  backend.put(running_mean), backend.put(rstd),
                                                  backend.put(gamma), 1, True, fixed_stats=True)
    assert_near(backend, dx, f64(dy) * scale[None, :, None], dtype, "dx")
    dgamma = backend.get(dgamma)
    assert np.isnan(dgamma[0]) and np.all(np.isfinite(dgamma[1:]))
    assert_near(backend, dbeta, f64(dy).sum(axis=(0, 2)), dtype, "dbeta")


def test_outputs_are_fresh_and_inputs_untouched(backend, rng):
    x, dy, gamma, beta = make(rng, (3, 6, 25), np.float32)
    saved = [a.copy() for a in (x, dy, gamma, beta)]
    xd, dyd, gd, bd = (backend.put(a) for a in (x, dy, gamma, beta))
    xp = backend.ops.array_module()
    for per_channel, groups in ((True, 1), (False, 3)):
        mean, var, rstd = backend.ops.norm_stats(xd, groups, per_channel, EPS)
        for a in (mean, var, rstd):
            assert backend.get(a).dtype == np.float64
        y = backend.ops.norm_forward(xd, mean, rstd, gd, bd, groups, per_channel)
        grads = backend.ops.norm_backward(xd, dyd, mean, rstd, gd, groups, per_channel)
        for a in (y,) + grads:
            host = backend.get(a)
            assert host.dtype == np.float32 and host.flags.c_contiguous
        for a in (y, grads[0]):
            assert not xp.shares_memory(a, xd) and not xp.shares_memory(a, dyd)
    for a, b in zip((xd, dyd, gd, bd), saved):
        np.testing.assert_array_equal(backend.get(a), b)


# -- the layers ---------------------------------------------------------------

SHAPE = (3, 6, 5, 5)


def make_layer(kind):
    """A float64 layer with random gamma and beta, and its input shape."""
    layers = {
        "bn2d": (lambda: tn.BatchNorm(6), SHAPE),
        "bn1d": (lambda: tn.BatchNorm(6), (3, 6)),
        "ln": (lambda: tn.LayerNorm((5, 5)), SHAPE),
        "ln_chw": (lambda: tn.LayerNorm((6, 5, 5)), SHAPE),
        "ln_int": (lambda: tn.LayerNorm(6), (3, 6)),
        "in": (lambda: tn.InstanceNorm(6), SHAPE),
        "in_noaffine": (lambda: tn.InstanceNorm(6, affine=False), SHAPE),
        "gn3": (lambda: tn.GroupNorm(3, 6), SHAPE),
        "gn2": (lambda: tn.GroupNorm(2, 6), SHAPE),
    }
    build, shape = layers[kind]
    layer = build().to(np.float64)
    rng = np.random.default_rng(7)
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    return layer, shape


ALL = ["bn2d", "bn1d", "ln", "ln_chw", "ln_int", "in", "in_noaffine", "gn3", "gn2"]


def on_backend(backend, layer, x, dy):
    """One forward and backward of ``layer`` on ``backend`` (the layer moved to its
    device): y, dx and the parameters' gradients, as host arrays."""
    layer.to(backend.device)
    layer.zero_grad()
    with backend.active():
        y = layer.forward(backend.put(x))
        dx = layer.backward(backend.put(dy))
    return [backend.get(a) for a in [y, dx] + [p.grad for p in layer.parameters()]]


@pytest.mark.parametrize("kind", ALL)
def test_gradcheck_train(rng, kind):
    layer, shape = make_layer(kind)
    x = rng.standard_normal(shape) * 1.5 + 0.3
    result = check_grads(layer, x)
    assert [r["name"] for r in result.rows] == ["x"] + [n for n, _ in layer.named_parameters()]


@pytest.mark.parametrize("kind", ["bn2d", "bn1d"])
def test_gradcheck_batchnorm_eval(rng, kind):
    layer, shape = make_layer(kind)
    for _ in range(3):
        layer.forward(rng.standard_normal(shape) * 2 + 1)
    layer.eval()
    check_grads(layer, rng.standard_normal(shape))


def torch_twin(kind, layer):
    """The torch module matching ``make_layer(kind)``, with the same float64 parameters."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    modules = {
        "bn2d": lambda: nn.BatchNorm2d(6), "bn1d": lambda: nn.BatchNorm1d(6),
        "ln": lambda: nn.LayerNorm((5, 5)), "ln_chw": lambda: nn.LayerNorm((6, 5, 5)),
        "ln_int": lambda: nn.LayerNorm(6),
        "in": lambda: nn.InstanceNorm2d(6, affine=True),
        "in_noaffine": lambda: nn.InstanceNorm2d(6, affine=False),
        "gn3": lambda: nn.GroupNorm(3, 6), "gn2": lambda: nn.GroupNorm(2, 6),
    }
    module = modules[kind]().double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            getattr(module, name).copy_(torch.from_numpy(p.data))
    return module


def torch_step(module, x, dy):
    """Forward and backward in torch: (y, dx, {param name: grad})."""
    import torch
    module.zero_grad()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    grads = {n: p.grad.numpy().copy() for n, p in module.named_parameters()}
    return yt.detach().numpy(), xt.grad.numpy(), grads


def assert_matches_torch(backend, layer, module, x, dy):
    """One step of ``layer`` on ``backend`` and of ``module`` give the same y, dx and grads."""
    y_t, dx_t, grads_t = torch_step(module, x, dy)
    y, dx, *grads = on_backend(backend, layer, x, dy)
    assert_close(y, y_t, 1e-10, 1e-10, "y")
    assert_close(dx, dx_t, 1e-10, 1e-10, "dx")
    names = [n for n, _ in layer.named_parameters()]
    assert sorted(grads_t) == sorted(names)
    for name, g in zip(names, grads):
        assert_close(g, grads_t[name], 1e-10, 1e-10, f"d{name}")


@pytest.mark.parametrize("kind", ALL)
def test_matches_torch(backend, rng, kind):
    layer, shape = make_layer(kind)
    module = torch_twin(kind, layer)
    x = rng.standard_normal(shape) * 3 - 1
    assert_matches_torch(backend, layer, module, x, rng.standard_normal(shape))


@pytest.mark.parametrize("kind", ["bn2d", "bn1d"])
def test_batchnorm_running_stats_and_eval_match_torch(backend, rng, kind):
    layer, shape = make_layer(kind)
    module = torch_twin(kind, layer)
    for step in range(4):
        x = rng.standard_normal(shape) * (step + 1) + step
        assert_matches_torch(backend, layer, module, x, rng.standard_normal(shape))
    state = layer.state_dict()
    assert_close(state["running_mean"], module.running_mean.numpy(), 1e-12, 1e-12,
                 "running_mean")
    assert_close(state["running_var"], module.running_var.numpy(), 1e-12, 1e-12, "running_var")
    assert state["num_batches_tracked"] == module.num_batches_tracked.item() == 4
    layer.eval()
    module.eval()
    assert_matches_torch(backend, layer, module, rng.standard_normal(shape) * 2,
                         rng.standard_normal(shape))
    assert layer.state_dict()["num_batches_tracked"] == 4


@pytest.mark.parametrize("build,shape", [
    (lambda: tn.BatchNorm(6), (3, 6, 5, 5)), (lambda: tn.LayerNorm((6, 5, 5)), (3, 6, 5, 5)),
    (lambda: tn.InstanceNorm(6), (3, 6, 5, 5)), (lambda: tn.GroupNorm(3, 6), (3, 6, 5, 5)),
    (lambda: tn.BatchNorm(6), (5, 6))])
def test_float32_layers_match_the_ref_backend(backend, rng, build, shape):
    """Each layer, forward and backward in float32 and then eval, on ``backend`` and
    on the ref backend."""
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for b in (Backend("ref"), backend):
        layer = build()
        got = on_backend(b, layer, x, dy)
        layer.eval()
        with b.active():
            got.append(b.get(layer.forward(b.put(x))))
        results.append(got)
    for name, a, b in zip(("y", "dx", "dweight", "dbias", "y eval"), *results):
        assert a.dtype == b.dtype == np.float32, name
        assert_scaled(b, a.astype(np.float64), np.float32, f"{backend.name} {name}")


@pytest.mark.parametrize("kind", ALL)
def test_state_dict_keys_match_torch(kind):
    layer, _ = make_layer(kind)
    module = torch_twin(kind, layer)
    ours, theirs = layer.state_dict(), module.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].shape == tuple(theirs[key].shape), key


def test_batchnorm_loads_torch_state(rng):
    torch = pytest.importorskip("torch")
    module = torch.nn.BatchNorm2d(6)
    module(torch.from_numpy(rng.standard_normal(SHAPE).astype(np.float32)))
    layer = tn.BatchNorm(6)
    layer.load_state_dict(module.state_dict())
    assert_close(layer.running_mean, module.running_mean.numpy(), what="running_mean")
    assert_close(layer.running_var, module.running_var.numpy(), what="running_var")
    assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked == 1


def test_batchnorm_running_stats_numpy(rng):
    layer = tn.BatchNorm(6, momentum=0.3).to(np.float64)
    x = rng.standard_normal(SHAPE) * 2 + 1
    layer.forward(x)
    n = 3 * 5 * 5
    mean = x.mean(axis=(0, 2, 3))
    var_unbiased = x.var(axis=(0, 2, 3)) * n / (n - 1)
    assert_close(layer.running_mean, 0.3 * mean, 1e-12, 1e-12, "running_mean")
    assert_close(layer.running_var, 0.7 + 0.3 * var_unbiased, 1e-12, 1e-12, "running_var")
    assert layer.num_batches_tracked.shape == () and layer.num_batches_tracked == 1
    # Eval neither uses nor updates the batch statistics.
    layer.eval()
    y = layer.forward(x)
    expected = ((x - layer.running_mean[:, None, None])
                / np.sqrt(layer.running_var[:, None, None] + 1e-5)
                * layer.weight.data[:, None, None] + layer.bias.data[:, None, None])
    assert_close(y, expected, 1e-12, 1e-12, "eval output")
    assert layer.num_batches_tracked == 1
    assert_close(layer.running_mean, 0.3 * mean, 1e-12, 1e-12, "running_mean after eval")


def test_batchnorm_buffers_and_params_at_creation():
    layer = tn.BatchNorm(4)
    assert layer.weight.dtype == layer.bias.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, np.ones(4))
    np.testing.assert_array_equal(layer.bias.data, np.zeros(4))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(4))
    np.testing.assert_array_equal(layer.running_var, np.ones(4))
    assert layer.running_mean.dtype == layer.running_var.dtype == np.float32
    assert isinstance(layer.num_batches_tracked, np.ndarray)
    assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked.shape == ()
    assert [n for n, _ in layer.named_buffers()] == ["running_mean", "running_var",
                                                     "num_batches_tracked"]
    assert layer.parameters() == [layer.weight, layer.bias]
    layer.to(np.float64)
    assert layer.running_mean.dtype == layer.running_var.dtype == np.float64
    assert layer.num_batches_tracked.dtype == np.int64


@pytest.mark.parametrize("kind", ["ln", "in", "gn3"])
def test_eval_equals_train_without_running_stats(rng, kind):
    layer, shape = make_layer(kind)
    x = rng.standard_normal(shape)
    y_train = layer.forward(x)
    assert_close(layer.eval().forward(x), y_train, 0, 0, "eval output")


@pytest.mark.parametrize("kind", ["bn2d", "ln", "in", "gn3"])
def test_backward_accumulates_and_can_skip_dx(rng, kind):
    layer, shape = make_layer(kind)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    layer.forward(x)
    dx = layer.backward(dy)
    grads = [p.grad.copy() for p in layer.parameters()]
    layer.requires_input_grad = False
    assert layer.backward(dy) is None
    for g, p in zip(grads, layer.parameters()):
        assert_close(p.grad, 2 * g, 1e-12, 1e-12, "accumulated grad")
    assert dx.shape == shape and np.any(dx != 0)


def test_instancenorm_without_affine():
    layer = tn.InstanceNorm(6, affine=False)
    assert layer.weight is None and layer.bias is None
    assert layer.parameters() == [] and layer.state_dict() == {}
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert_close(y.mean(axis=(2, 3)), np.zeros((3, 6)), 0, 1e-5, "plane means")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["bn2d", "ln", "in", "gn3"])
def test_output_dtype_follows_layer(rng, kind, dtype):
    layer, shape = make_layer(kind)
    layer.to(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == shape
    assert all(p.grad.dtype == dtype for p in layer.parameters())


# (layer at its default gamma = 1 and beta = 0, its (N, C, L) view, groups, per_channel)
OFFSET_LAYERS = [
    (lambda: tn.BatchNorm(6), (4, 6, 49), 1, True),
    (lambda: tn.LayerNorm((6, 7, 7)), (4, 294, 1), 1, False),
    (lambda: tn.InstanceNorm(6), (4, 6, 49), 6, False),
    (lambda: tn.GroupNorm(3, 6), (4, 6, 49), 3, False),
]


@pytest.mark.parametrize("build,view,groups,per_channel", OFFSET_LAYERS)
def test_large_offset_float32_layers(rng, build, view, groups, per_channel):
    x = (100.0 + 0.1 * rng.standard_normal((4, 6, 7, 7))).astype(np.float32)
    layer = build()
    y = layer.forward(x)
    assert y.dtype == np.float32
    y_sets = set_rows(y.astype(np.float64).reshape(view), groups, per_channel)
    assert np.all(np.abs(y_sets.mean(axis=1)) < 1e-2)
    assert np.all(np.abs(y_sets.std(axis=1) - 1.0) < 1e-2)
    # The backend's statistics match float64 numpy on the same values.
    mean, var, _ = layer.ops.norm_stats(x.reshape(view), groups, per_channel, 1e-5)
    x_sets = set_rows(x.astype(np.float64).reshape(view), groups, per_channel)
    assert_close(mean, x_sets.mean(axis=1), 1e-12, 0, "mean")
    assert_close(var, x_sets.var(axis=1), 1e-12, 0, "var")


def test_nan_in_one_sample_stays_in_its_sets(rng):
    x = rng.standard_normal(SHAPE)
    x[1, 0, 2, 2] = np.nan
    dy = rng.standard_normal(SHAPE)
    # For each layer, the outputs that must be NaN: the sets holding x[1, 0, 2, 2].
    ln_mask, gn_mask, in_mask, bn_mask = (np.zeros(SHAPE, dtype=bool) for _ in range(4))
    ln_mask[1] = True
    gn_mask[1, 0:2] = True
    in_mask[1, 0] = True
    bn_mask[:, 0] = True
    cases = [(make_layer("ln_chw")[0], ln_mask), (make_layer("gn3")[0], gn_mask),
             (make_layer("in")[0], in_mask), (make_layer("bn2d")[0], bn_mask)]
    for layer, mask in cases:
        y = layer.forward(x)
        assert np.all(np.isnan(y[mask])), layer.name
        assert np.all(np.isfinite(y[~mask])), layer.name
        dx = layer.backward(dy)
        assert np.all(np.isfinite(dx[~mask])), layer.name
        assert np.all(np.isnan(dx[mask])), layer.name


@pytest.mark.parametrize("build,x_shape", [
    (lambda: tn.BatchNorm(6), (3, 5, 5, 5)),
    (lambda: tn.BatchNorm(6), (3, 5)),
    (lambda: tn.InstanceNorm(6), (3, 4, 5, 5)),
    (lambda: tn.GroupNorm(3, 6), (3, 4, 5, 5)),
])
def test_wrong_channel_count(build, x_shape):
    layer = build()
    with pytest.raises(ValueError, match=f"{layer.name}: input must have shape .*C=6"):
        layer.forward(np.zeros(x_shape, np.float32))


@pytest.mark.parametrize("build,x_shape,what", [
    (lambda: tn.BatchNorm(6), (3, 6, 5), r"\(N, C\) or \(N, C, H, W\)"),
    (lambda: tn.BatchNorm(6), (6,), r"\(N, C\) or \(N, C, H, W\)"),
    (lambda: tn.InstanceNorm(6), (6, 5, 5), r"\(N, C, H, W\)"),
    (lambda: tn.GroupNorm(3, 6), (6,), r"\(N, C, \*spatial\)"),
    (lambda: tn.LayerNorm((5, 5)), (3, 6, 5, 4), r"\(\*, 5, 5\)"),
    (lambda: tn.LayerNorm((5, 5)), (5,), r"\(\*, 5, 5\)"),
])
def test_wrong_rank_or_shape(build, x_shape, what):
    layer = build()
    with pytest.raises(ValueError, match=f"{layer.name}: input must have shape {what}"):
        layer.forward(np.zeros(x_shape, np.float32))


def test_groupnorm_groups_must_divide_channels():
    with pytest.raises(ValueError, match="GroupNorm: num_groups=4 must divide num_channels=6"):
        tn.GroupNorm(4, 6)


@pytest.mark.parametrize("build", [
    lambda: tn.BatchNorm(0), lambda: tn.BatchNorm(6, eps=0.0),
    lambda: tn.BatchNorm(6, momentum=1.5), lambda: tn.LayerNorm(()),
    lambda: tn.LayerNorm((5, 0)), lambda: tn.InstanceNorm(6, eps=-1.0),
    lambda: tn.GroupNorm(0, 6),
])
def test_bad_constructor_arguments(build):
    with pytest.raises(ValueError):
        build()


def test_batchnorm_needs_more_than_one_value_in_training(rng):
    layer = tn.BatchNorm(6)
    x = rng.standard_normal((1, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="BatchNorm: expected more than 1 value per channel"):
        layer.forward(x)
    assert layer.num_batches_tracked == 0
    assert layer.eval().forward(x).shape == (1, 6)


def test_instancenorm_needs_more_than_one_spatial_element():
    with pytest.raises(ValueError, match="InstanceNorm: expected more than 1 spatial element"):
        tn.InstanceNorm(6).forward(np.zeros((3, 6, 1, 1), np.float32))


@pytest.mark.parametrize("kind", ["bn2d", "ln", "in", "gn3"])
def test_backward_before_forward_and_bad_dy(kind):
    layer, shape = make_layer(kind)
    with pytest.raises(RuntimeError, match=f"{layer.name}.backward called before forward"):
        layer.backward(np.zeros(shape))
    layer.forward(np.random.default_rng(0).standard_normal(shape))
    with pytest.raises(ValueError, match=f"{layer.name}.backward: dy must have"):
        layer.backward(np.zeros((2,) + shape[1:]))


@pytest.mark.parametrize("build,shape", [
    (lambda: tn.BatchNorm(6), SHAPE), (lambda: tn.LayerNorm(5), SHAPE),
    (lambda: tn.InstanceNorm(6), SHAPE), (lambda: tn.GroupNorm(3, 6), SHAPE),
])
def test_dtype_mismatch(build, shape):
    layer = build()
    with pytest.raises(TypeError, match="does not match"):
        layer.forward(np.zeros(shape, np.float64))
    with pytest.raises(TypeError):
        layer.forward(np.zeros(shape, np.int64))


def test_repr():
    assert repr(tn.BatchNorm(6)) == "BatchNorm(6, eps=1e-05, momentum=0.1)"
    assert repr(tn.LayerNorm(6)) == "LayerNorm((6,), eps=1e-05)"
    assert repr(tn.LayerNorm((5, 5), eps=1e-6)) == "LayerNorm((5, 5), eps=1e-06)"
    assert repr(tn.InstanceNorm(6, affine=False)) == "InstanceNorm(6, eps=1e-05, affine=False)"
    assert repr(tn.GroupNorm(3, 6)) == "GroupNorm(3, 6, eps=1e-05)"


# -- torch's other options ----------------------------------------------------

# BatchNorm momentum=None / affine=False / track_running_stats=False, LayerNorm
# elementwise_affine=False / bias=False, GroupNorm affine=False, InstanceNorm
# track_running_stats=True with momentum: (tinynet layer, torch module, input shape).
OPTIONS = {
    "bn_cma": (lambda: tn.BatchNorm(6, momentum=None),
               lambda nn: nn.BatchNorm2d(6, momentum=None), (3, 6, 4, 4)),
    "bn_noaffine": (lambda: tn.BatchNorm(6, affine=False),
                    lambda nn: nn.BatchNorm2d(6, affine=False), (3, 6, 4, 4)),
    "bn_nostats": (lambda: tn.BatchNorm(6, track_running_stats=False),
                   lambda nn: nn.BatchNorm2d(6, track_running_stats=False), (3, 6, 4, 4)),
    "bn1d_nostats_noaffine": (
        lambda: tn.BatchNorm(6, affine=False, track_running_stats=False),
        lambda nn: nn.BatchNorm1d(6, affine=False, track_running_stats=False), (5, 6)),
    "ln_noaffine": (lambda: tn.LayerNorm((4, 4), elementwise_affine=False),
                    lambda nn: nn.LayerNorm((4, 4), elementwise_affine=False), (3, 6, 4, 4)),
    "ln_nobias": (lambda: tn.LayerNorm(6, bias=False), lambda nn: nn.LayerNorm(6, bias=False),
                  (5, 6)),
    "gn_noaffine": (lambda: tn.GroupNorm(3, 6, affine=False),
                    lambda nn: nn.GroupNorm(3, 6, affine=False), (3, 6, 4, 4)),
    "in_stats": (lambda: tn.InstanceNorm(6, track_running_stats=True, momentum=0.3),
                 lambda nn: nn.InstanceNorm2d(6, affine=True, track_running_stats=True,
                                              momentum=0.3), (3, 6, 4, 4)),
    "in_stats_noaffine": (lambda: tn.InstanceNorm(6, affine=False, track_running_stats=True),
                          lambda nn: nn.InstanceNorm2d(6, track_running_stats=True),
                          (3, 6, 4, 4)),
    "in_stats_cma": (lambda: tn.InstanceNorm(6, track_running_stats=True, momentum=None),
                     lambda nn: nn.InstanceNorm2d(6, affine=True, track_running_stats=True,
                                                  momentum=None), (3, 6, 4, 4)),
}


def option_pair(kind, rng):
    """The float64 layer of option ``kind`` and its torch twin with the same parameters."""
    torch = pytest.importorskip("torch", reason="the option tests compare with torch")
    make, make_torch, shape = OPTIONS[kind]
    layer = make().to(np.float64)
    module = make_torch(torch.nn).double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.data[...] = rng.uniform(0.5, 1.5, p.shape)
            getattr(module, name).copy_(torch.from_numpy(p.data))
    return layer, module, shape


def assert_same_state(layer, module):
    ours, theirs = layer.state_dict(), module.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert_close(ours[key], theirs[key].numpy(), 1e-12, 1e-12, key)


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_options_train_then_eval_match_torch(backend, rng, kind):
    layer, module, shape = option_pair(kind, rng)
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        assert_matches_torch(backend, layer, module, x, rng.standard_normal(shape))
    assert_same_state(layer, module)
    layer.eval()
    module.eval()
    assert_matches_torch(backend, layer, module, rng.standard_normal(shape) * 2 + 1,
                         rng.standard_normal(shape))
    assert_same_state(layer, module)


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_options_state_dict_loads_from_torch(rng, kind):
    import torch
    layer, module, shape = option_pair(kind, rng)
    module(torch.from_numpy(rng.standard_normal(shape)))
    fresh = OPTIONS[kind][0]().to(np.float64)
    fresh.load_state_dict(module.state_dict())
    assert_same_state(fresh, module)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_options_gradcheck(rng, kind, training):
    layer, _, shape = option_pair(kind, rng)
    # Give eval mode running statistics that are not the defaults.
    layer.forward(rng.standard_normal(shape) * 2 + 1)
    layer.train(training)
    check_grads(layer, rng.standard_normal(shape))


def test_cumulative_average_is_the_mean_of_all_batches(rng):
    layer = tn.BatchNorm(3, momentum=None).to(np.float64)
    batches = [rng.standard_normal((8, 3)) * (i + 1) + i for i in range(5)]
    for x in batches:
        layer.forward(x)
    assert_close(layer.running_mean, np.mean([x.mean(axis=0) for x in batches], axis=0),
                 1e-12, 1e-12, "running_mean")
    assert_close(layer.running_var, np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0),
                 1e-12, 1e-12, "running_var")


def test_no_running_stats_means_batch_stats_in_eval(rng):
    layer = tn.BatchNorm(3, track_running_stats=False, affine=False).eval().to(np.float64)
    x = rng.standard_normal((16, 3)) * 4 + 2
    y = layer.forward(x)
    assert_close(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), 1e-12, 1e-12, "y")
    assert layer.state_dict() == {} and layer.parameters() == []


def test_bad_momentum():
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\] or None"):
        tn.BatchNorm(3, momentum=2)
    with pytest.raises(ValueError, match="InstanceNorm: momentum"):
        tn.InstanceNorm(3, momentum="x")


# -- recompute_batchnorm_stats ------------------------------------------------

def test_recompute_batchnorm_stats_is_the_exact_population(rng):
    """Every BatchNorm gets the exact mean and unbiased variance of its input over a
    data set, checked against numpy directly."""
    tn.init.seed(1)
    model = tn.Sequential(tn.Conv2D(1, 3, 3), tn.BatchNorm(3), tn.ReLU(),
                          tn.Sequential(tn.Conv2D(3, 2, 3), tn.BatchNorm(2, momentum=None)),
                          tn.Flatten(), tn.Dense(2 * 3 * 3, 4), tn.BatchNorm(4)).to(np.float64)
    x = rng.standard_normal((37, 1, 7, 7)) * 2 + 1
    for _ in range(3):
        model.forward(x[:8])
    tracked = model[1].num_batches_tracked.copy()
    tn.recompute_batchnorm_stats(model, x, batch_size=5)
    assert not model.training and model[1].num_batches_tracked == tracked
    # Direct numpy: each BN's input over the whole set, earlier BNs already set, eval mode.
    h1 = model[0].forward(x)
    assert_close(model[1].running_mean, h1.mean(axis=(0, 2, 3)), 1e-12, 1e-12, "bn1 mean")
    assert_close(model[1].running_var, h1.var(axis=(0, 2, 3), ddof=1), 1e-12, 1e-12, "bn1 var")
    h3 = model[3][0].forward(model[2].forward(model[1].forward(h1)))
    assert_close(model[3][1].running_mean, h3.mean(axis=(0, 2, 3)), 1e-12, 1e-12, "bn2 mean")
    assert_close(model[3][1].running_var, h3.var(axis=(0, 2, 3), ddof=1), 1e-12, 1e-12)
    h5 = model[5].forward(model[4].forward(model[3].forward(model[2].forward(
        model[1].forward(h1)))))
    assert_close(model[6].running_mean, h5.mean(axis=0), 1e-12, 1e-12, "bn3 mean")
    assert_close(model[6].running_var, h5.var(axis=0, ddof=1), 1e-12, 1e-12, "bn3 var")
    # The batch size does not change the result.
    before = [model[1].running_var.copy(), model[6].running_var.copy()]
    tn.recompute_batchnorm_stats(model, x, batch_size=37)
    assert_close(model[1].running_var, before[0], 1e-12, 1e-12, "batch size")
    assert_close(model[6].running_var, before[1], 1e-12, 1e-12, "batch size")


def test_recompute_batchnorm_stats_errors():
    model = tn.Sequential(tn.BatchNorm(3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        tn.recompute_batchnorm_stats(model, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        tn.recompute_batchnorm_stats(model, np.ones((4, 3), np.float32), batch_size=0)


def test_recompute_skips_batchnorms_without_running_stats(rng):
    model = tn.Sequential(tn.BatchNorm(3, track_running_stats=False),
                          tn.BatchNorm(3)).to(np.float64)
    x = rng.standard_normal((20, 3)) * 3 + 2
    tn.recompute_batchnorm_stats(model, x, batch_size=7)
    assert model[0].running_mean is None
    # The second BN sees the first one's output normalized with each batch's statistics.
    h = np.concatenate([model[0].forward(x[s:s + 7]) for s in range(0, 20, 7)])
    assert_close(model[1].running_mean, h.mean(axis=0), 1e-12, 1e-12, "mean")
    assert_close(model[1].running_var, h.var(axis=0, ddof=1), 1e-12, 1e-12, "var")
