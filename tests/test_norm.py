"""Tests of the normalization family: the reference ops and the four layers."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends.ref import norm as ref
from conftest import check_grads, assert_close

SHAPE = (3, 6, 5, 5)

# (per_channel, groups) of the ops' layouts on a (3, 6, 5) input.
LAYOUTS = [(True, 1), (False, 1), (False, 2), (False, 3), (False, 6)]


def members(shape, groups, per_channel):
    """The (n, c, l) indices of every set, in the order of the ops' (S,) arrays."""
    N, C, L = shape
    if per_channel:
        return [[(n, c, l) for n in range(N) for l in range(L)] for c in range(C)]
    Cg = C // groups
    return [[(n, c, l) for c in range(g * Cg, (g + 1) * Cg) for l in range(L)]
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


# -- the reference ops against the loop oracle --------------------------------

@pytest.mark.parametrize("per_channel,groups", LAYOUTS)
def test_ref_ops_match_loop_oracle(rng, per_channel, groups):
    x = rng.standard_normal((3, 6, 5)) * 2 + 1
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    (mean_o, var_o, rstd_o), y_o, (dx_o, dg_o, db_o) = loop_norm(
        x, dy, gamma, beta, groups, per_channel, 1e-5)

    mean, var, rstd = ref.norm_stats(x, groups, per_channel, 1e-5)
    S = 6 if per_channel else 3 * groups
    assert mean.shape == var.shape == rstd.shape == (S,)
    assert mean.dtype == var.dtype == rstd.dtype == np.float64
    assert_close(mean, mean_o, 1e-12, 1e-12, "mean")
    assert_close(var, var_o, 1e-12, 1e-12, "var")
    assert_close(rstd, rstd_o, 1e-12, 1e-12, "rstd")

    y = ref.norm_forward(x, mean, rstd, gamma, beta, groups, per_channel)
    assert_close(y, y_o, 1e-12, 1e-12, "y")
    dx, dgamma, dbeta = ref.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel)
    assert_close(dx, dx_o, 1e-11, 1e-11, "dx")
    assert_close(dgamma, dg_o, 1e-11, 1e-11, "dgamma")
    assert_close(dbeta, db_o, 1e-11, 1e-11, "dbeta")


@pytest.mark.parametrize("per_channel,groups", LAYOUTS)
def test_ref_fixed_stats_backward(rng, per_channel, groups):
    x = rng.standard_normal((3, 6, 5))
    dy = rng.standard_normal(x.shape)
    gamma = rng.standard_normal(6)
    S = 6 if per_channel else 3 * groups
    mean, rstd = rng.standard_normal(S), rng.uniform(0.5, 2.0, S)
    _, y_o, (dx_o, dg_o, db_o) = loop_norm(x, dy, gamma, None, groups, per_channel, 1e-5,
                                           fixed=(mean, rstd))
    y = ref.norm_forward(x, mean, rstd, gamma, None, groups, per_channel)
    dx, dgamma, dbeta = ref.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel,
                                          fixed_stats=True)
    assert_close(y, y_o, 1e-12, 1e-12, "y")
    assert_close(dx, dx_o, 1e-12, 1e-12, "dx")
    assert_close(dgamma, dg_o, 1e-11, 1e-11, "dgamma")
    assert_close(dbeta, db_o, 1e-11, 1e-11, "dbeta")


@pytest.mark.parametrize("per_channel,groups", [(True, 1), (False, 2)])
def test_ref_without_affine(rng, per_channel, groups):
    x = rng.standard_normal((3, 6, 5))
    dy = rng.standard_normal(x.shape)
    _, y_o, (dx_o, _, _) = loop_norm(x, dy, None, None, groups, per_channel, 1e-5)
    mean, _, rstd = ref.norm_stats(x, groups, per_channel, 1e-5)
    y = ref.norm_forward(x, mean, rstd, None, None, groups, per_channel)
    dx, dgamma, dbeta = ref.norm_backward(x, dy, mean, rstd, None, groups, per_channel)
    assert_close(y, y_o, 1e-12, 1e-12, "y")
    assert_close(dx, dx_o, 1e-11, 1e-11, "dx")
    assert dgamma is None and dbeta is None


def test_ref_dtypes_and_inputs_untouched(rng):
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma = rng.standard_normal(6).astype(np.float32)
    beta = rng.standard_normal(6).astype(np.float32)
    saved = [a.copy() for a in (x, dy, gamma, beta)]
    for per_channel in (True, False):
        mean, var, rstd = ref.norm_stats(x, 3, per_channel, 1e-5)
        assert mean.dtype == var.dtype == rstd.dtype == np.float64
        y = ref.norm_forward(x, mean, rstd, gamma, beta, 3, per_channel)
        dx, dgamma, dbeta = ref.norm_backward(x, dy, mean, rstd, gamma, 3, per_channel)
        for a in (y, dx, dgamma, dbeta):
            assert a.dtype == np.float32 and a.flags.c_contiguous
    for a, b in zip((x, dy, gamma, beta), saved):
        np.testing.assert_array_equal(a, b)


def test_ref_rejects_bad_layout(rng):
    x = rng.standard_normal((3, 6, 5))
    with pytest.raises(ValueError, match=r"norm_stats: x must have shape \(N, C, L\)"):
        ref.norm_stats(x[0], 1, False, 1e-5)
    with pytest.raises(ValueError, match="norm_stats: groups"):
        ref.norm_stats(x, 4, False, 1e-5)
    mean, _, rstd = ref.norm_stats(x, 3, False, 1e-5)
    with pytest.raises(ValueError, match="norm_forward: gamma"):
        ref.norm_forward(x, mean, rstd, np.ones(5), None, 3, False)
    with pytest.raises(ValueError, match=r"norm_forward: mean must have shape \(6,\)"):
        ref.norm_forward(x, mean, rstd, None, None, 3, True)
    with pytest.raises(ValueError, match="norm_backward: dy"):
        ref.norm_backward(x, x[:, :, :4], mean, rstd, None, 3, False)


def test_ref_variance_is_accurate_at_large_offset(rng):
    x = (100.0 + 0.1 * rng.standard_normal((4, 6, 49))).astype(np.float32)
    x64 = x.astype(np.float64)
    mean, var, _ = ref.norm_stats(x, 3, False, 1e-5)
    sets = x64.reshape(12, -1)
    assert_close(mean, sets.mean(axis=1), 1e-12, 0, "mean")
    assert_close(var, sets.var(axis=1), 1e-12, 0, "var")
    mean, var, _ = ref.norm_stats(x, 1, True, 1e-5)
    assert_close(mean, x64.mean(axis=(0, 2)), 1e-12, 0, "mean")
    assert_close(var, x64.var(axis=(0, 2)), 1e-12, 0, "var")


# -- the layers ---------------------------------------------------------------

def make(kind):
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


@pytest.mark.parametrize("kind", ALL)
def test_gradcheck_train(rng, kind):
    layer, shape = make(kind)
    x = rng.standard_normal(shape) * 1.5 + 0.3
    result = check_grads(layer, x)
    assert [r["name"] for r in result.rows] == ["x"] + [n for n, _ in layer.named_parameters()]


@pytest.mark.parametrize("kind", ["bn2d", "bn1d"])
def test_gradcheck_batchnorm_eval(rng, kind):
    layer, shape = make(kind)
    for _ in range(3):
        layer.forward(rng.standard_normal(shape) * 2 + 1)
    layer.eval()
    check_grads(layer, rng.standard_normal(shape))


def torch_twin(kind, layer):
    """The torch module matching ``make(kind)``, with the same float64 parameters."""
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


def assert_matches_torch(layer, module, x, dy):
    y_t, dx_t, grads_t = torch_step(module, x, dy)
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert_close(y, y_t, 1e-10, 1e-10, "y")
    assert_close(dx, dx_t, 1e-10, 1e-10, "dx")
    assert sorted(grads_t) == sorted(n for n, _ in layer.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(p.grad, grads_t[name], 1e-10, 1e-10, f"d{name}")


@pytest.mark.parametrize("kind", ALL)
def test_matches_torch(rng, kind):
    layer, shape = make(kind)
    module = torch_twin(kind, layer)
    x = rng.standard_normal(shape) * 3 - 1
    assert_matches_torch(layer, module, x, rng.standard_normal(shape))


@pytest.mark.parametrize("kind", ["bn2d", "bn1d"])
def test_batchnorm_running_stats_and_eval_match_torch(rng, kind):
    layer, shape = make(kind)
    module = torch_twin(kind, layer)
    for step in range(4):
        x = rng.standard_normal(shape) * (step + 1) + step
        assert_matches_torch(layer, module, x, rng.standard_normal(shape))
    assert_close(layer.running_mean, module.running_mean.numpy(), 1e-12, 1e-12, "running_mean")
    assert_close(layer.running_var, module.running_var.numpy(), 1e-12, 1e-12, "running_var")
    assert layer.num_batches_tracked == module.num_batches_tracked.item() == 4
    layer.eval()
    module.eval()
    assert_matches_torch(layer, module, rng.standard_normal(shape) * 2, rng.standard_normal(shape))
    assert layer.num_batches_tracked == 4


@pytest.mark.parametrize("kind", ALL)
def test_state_dict_keys_match_torch(kind):
    layer, _ = make(kind)
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
    layer, shape = make(kind)
    x = rng.standard_normal(shape)
    y_train = layer.forward(x)
    assert_close(layer.eval().forward(x), y_train, 0, 0, "eval output")


@pytest.mark.parametrize("kind", ["bn2d", "ln", "in", "gn3"])
def test_backward_accumulates_and_can_skip_dx(rng, kind):
    layer, shape = make(kind)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["bn2d", "ln", "in", "gn3"])
def test_output_dtype_follows_layer(rng, kind, dtype):
    layer, shape = make(kind)
    layer.to(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == shape
    assert all(p.grad.dtype == dtype for p in layer.parameters())


def set_rows(v, groups, per_channel):
    """An (N, C, L) array as (S, M): one set per row."""
    N, C, _ = v.shape
    if per_channel:
        return v.transpose(1, 0, 2).reshape(C, -1)
    return v.reshape(N * groups, -1)


# (layer at its default gamma = 1 and beta = 0, its (N, C, L) view, groups, per_channel)
OFFSET_CASES = [
    (lambda: tn.BatchNorm(6), (4, 6, 49), 1, True),
    (lambda: tn.LayerNorm((6, 7, 7)), (4, 294, 1), 1, False),
    (lambda: tn.InstanceNorm(6), (4, 6, 49), 6, False),
    (lambda: tn.GroupNorm(3, 6), (4, 6, 49), 3, False),
]


@pytest.mark.parametrize("build,view,groups,per_channel", OFFSET_CASES)
def test_large_offset_float32(rng, build, view, groups, per_channel):
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
    cases = [(make("ln_chw")[0], ln_mask), (make("gn3")[0], gn_mask),
             (make("in")[0], in_mask), (make("bn2d")[0], bn_mask)]
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
    layer, shape = make(kind)
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
