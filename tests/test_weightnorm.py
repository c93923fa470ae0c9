"""WeightNorm: the ops (ref against a loop oracle, cpu against ref), the layer's
gradients (gradcheck), torch's parametrizations.weight_norm in float64, its
state_dict keys, and the data-dependent initialization."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref
from conftest import assert_close, check_grads

BACKENDS = ["ref", "cpu"]


def make(kind, bias=True):
    if kind == "dense":
        return tn.Dense(5, 4, bias=bias), (3, 5)
    return tn.Conv2D(2, 3, 3, stride=(2, 1), padding=1, bias=bias), (3, 2, 5, 5)


def loop_weightnorm(v, g, dw):
    """Row-by-row oracle of w, dv and dg."""
    O = v.shape[0]
    w, dv, dg = np.zeros(v.shape), np.zeros(v.shape), np.zeros(g.shape)
    for o in range(O):
        vo, dwo, go = v[o].ravel(), dw[o].ravel(), float(g[o].ravel()[0])
        n = np.sqrt(sum(a * a for a in vo))
        w[o] = (go * vo / n).reshape(v.shape[1:])
        dgo = sum(a * b for a, b in zip(dwo, vo)) / n
        dg[o] = dgo
        dv[o] = (go / n * (dwo - dgo / n * vo)).reshape(v.shape[1:])
    return w, dv, dg


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 3, 3), (1, 1), (7, 1, 1, 1)])
def test_ref_ops_match_loop_oracle(rng, shape):
    v = rng.standard_normal(shape)
    g = rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1))
    dw = rng.standard_normal(shape)
    w, vnorm = ref.weightnorm_forward(v, g)
    dv, dg = ref.weightnorm_backward(v, g, vnorm, dw)
    w_o, dv_o, dg_o = loop_weightnorm(v, g, dw)
    assert_close(w, w_o, 1e-12, 1e-12, "w")
    assert_close(dv, dv_o, 1e-12, 1e-12, "dv")
    assert_close(dg, dg_o, 1e-12, 1e-12, "dg")
    assert dg.shape == g.shape and vnorm.shape == (shape[0],)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 3, 3), (33, 17), (1, 1), (9, 4, 5, 5)])
def test_cpu_ops_match_ref(rng, shape, dtype):
    v = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1)).astype(dtype)
    dw = rng.standard_normal(shape).astype(dtype)
    w, vnorm = cpu.weightnorm_forward(v, g)
    w_r, vnorm_r = ref.weightnorm_forward(v.astype(np.float64), g.astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert w.dtype == dtype and w.shape == shape
    assert_close(w, w_r, tol, tol, "w")
    assert_close(vnorm, vnorm_r, 1e-12, 1e-12, "vnorm")
    dv, dg = cpu.weightnorm_backward(v, g, vnorm, dw)
    dv_r, dg_r = ref.weightnorm_backward(v.astype(np.float64), g.astype(np.float64), vnorm_r,
                                         dw.astype(np.float64))
    assert dv.dtype == dtype and dg.dtype == dtype and dg.shape == g.shape
    assert_close(dv, dv_r, tol, tol, "dv")
    assert_close(dg, dg_r, tol, tol, "dg")


@pytest.mark.parametrize("backend", [ref, cpu])
def test_op_checks_name_the_argument(backend, rng):
    v = rng.standard_normal((4, 5))
    with pytest.raises(ValueError, match="weightnorm_forward: g must have shape \\(4, 1\\)"):
        backend.weightnorm_forward(v, np.ones((4,)))
    with pytest.raises(ValueError, match="weightnorm_forward: v must have shape"):
        backend.weightnorm_forward(np.ones(4), np.ones((4, 1)))
    with pytest.raises(TypeError, match="one dtype"):
        backend.weightnorm_forward(v, np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="weightnorm_backward: dw must have v's shape"):
        backend.weightnorm_backward(v, np.ones((4, 1)), np.ones(4), np.ones((4, 6)))
    with pytest.raises(ValueError, match="weightnorm_backward: vnorm must have shape"):
        backend.weightnorm_backward(v, np.ones((4, 1)), np.ones(3), v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_gradcheck(rng, backend, kind, bias):
    layer, shape = make(kind, bias)
    with tn.use_backend(backend):
        result = check_grads(tn.WeightNorm(layer), rng.standard_normal(shape))
    names = [r["name"] for r in result.rows]
    expected = ["x"] + (["bias"] if bias else []) + ["parametrizations.weight.original0",
                                                     "parametrizations.weight.original1"]
    assert names == expected


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_starts_as_the_wrapped_layer(rng, kind):
    layer, shape = make(kind)
    layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal(shape).astype(np.float32)
    wn = tn.WeightNorm(layer)
    assert wn.weight_g.shape == (layer.weight.shape[0],) + (1,) * (layer.weight.data.ndim - 1)
    assert wn.weight_v.shape == layer.weight.shape
    assert wn.bias is layer.bias
    assert_close(wn.compute_weight(), layer.weight.data, 1e-6, 1e-6, "w")
    assert_close(wn(x), layer(x), 1e-5, 1e-5, "y")


def torch_twin(kind, wn):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import weight_norm
    if kind == "dense":
        base = torch.nn.Linear(5, 4, bias=wn.bias is not None)
    else:
        base = torch.nn.Conv2d(2, 3, 3, stride=(2, 1), padding=1, bias=wn.bias is not None)
    module = weight_norm(base.double(), name="weight", dim=0)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in wn.state_dict().items()})
    return module


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_matches_torch_float64(rng, backend, kind, bias):
    torch = pytest.importorskip("torch")
    layer, shape = make(kind, bias)
    wn = tn.WeightNorm(layer).to(np.float64)
    # Move g away from ||v|| so that the test sees both factors.
    wn.weight_g.data[...] = rng.uniform(0.5, 2.0, wn.weight_g.shape)
    module = torch_twin(kind, wn)
    x, dy = rng.standard_normal(shape), None
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    with tn.use_backend(backend):
        y = wn.forward(x)
        dx = wn.backward(dy)
    assert_close(y, yt.detach().numpy(), 1e-12, 1e-12, "y")
    assert_close(dx, xt.grad.numpy(), 1e-12, 1e-12, "dx")
    assert sorted(grads) == sorted(n for n, _ in wn.named_parameters())
    for name, p in wn.named_parameters():
        assert_close(p.grad, grads[name], 1e-12, 1e-12, f"d {name}")


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_state_dict_round_trips_with_torch(rng, kind):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import weight_norm
    layer, _ = make(kind)
    wn = tn.WeightNorm(layer)
    base = torch.nn.Linear(5, 4) if kind == "dense" else torch.nn.Conv2d(2, 3, 3, (2, 1), 1)
    module = weight_norm(base)
    assert list(wn.state_dict()) == list(module.state_dict())
    wn.load_state_dict(module.state_dict())
    for key, value in module.state_dict().items():
        assert_close(wn.state_dict()[key], value.numpy(), 0, 0, key)
    model = tn.Sequential(tn.WeightNorm(make(kind)[0]))
    model.load_state_dict({"0." + k: v for k, v in module.state_dict().items()})
    assert_close(model[0].weight_v.data, module.parametrizations.weight.original1.detach().numpy(),
                 0, 0, "v in a Sequential")


def test_load_state_dict_names_a_wrong_key(rng):
    wn = tn.WeightNorm(tn.Dense(5, 4))
    state = wn.state_dict()
    state["parametrizations.weight.original0"] = np.ones((4,))
    with pytest.raises(ValueError, match="original0"):
        wn.load_state_dict(state)
    del state["parametrizations.weight.original0"]
    with pytest.raises(KeyError, match="original0"):
        wn.load_state_dict(state)


def test_save_load_in_sequential(tmp_path, rng):
    model = tn.Sequential(tn.WeightNorm(tn.Conv2D(1, 2, 3)), tn.Flatten(),
                          tn.WeightNorm(tn.Dense(2 * 3 * 3, 3)))
    model[0].weight_g.data[...] = 3.0
    model.save(tmp_path / "m.npz")
    other = tn.Sequential(tn.WeightNorm(tn.Conv2D(1, 2, 3)), tn.Flatten(),
                          tn.WeightNorm(tn.Dense(2 * 3 * 3, 3))).load(tmp_path / "m.npz")
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    assert_close(other(x), model(x), 0, 0, "y after load")


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_init_from_data_standardizes_every_unit(rng, kind):
    layer, shape = make(kind)
    wn = tn.WeightNorm(layer).to(np.float64)
    x = rng.standard_normal((64,) + shape[1:]) * 3 + 1
    wn.init_from_data(x, init_scale=0.5)
    y = wn.forward(x)
    axes = (0,) if y.ndim == 2 else (0, 2, 3)
    assert_close(y.mean(axis=axes), 0, 1e-10, 1e-10, "mean")
    assert_close(y.std(axis=axes), 0.5, 1e-10, 1e-10, "std")


def test_bad_input_is_a_clear_error(rng):
    with pytest.raises(TypeError, match="WeightNorm: layer must be a tn.Dense or tn.Conv2D"):
        tn.WeightNorm(tn.ReLU())
    wn = tn.WeightNorm(tn.Dense(5, 4))
    with pytest.raises(ValueError, match="WeightNorm: input must have shape"):
        wn.forward(np.ones((3, 6), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        wn.backward(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="needs a bias"):
        tn.WeightNorm(tn.Dense(5, 4, bias=False)).init_from_data(np.ones((3, 5), np.float32))


def test_trains_with_sgd(rng):
    """A step of SGD on g and v lowers the loss of a small regression."""
    model = tn.Sequential(tn.WeightNorm(tn.Dense(5, 8)), tn.ReLU(), tn.WeightNorm(tn.Dense(8, 1)))
    x = rng.standard_normal((32, 5)).astype(np.float32)
    t = x[:, :1] * 2
    loss_fn, opt = tn.MSELoss(), tn.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        losses.append(loss_fn.forward(model.forward(x), t))
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 3, 3)])
def test_mean_only_batchnorm(rng, backend, training, shape):
    layer = tn.MeanOnlyBatchNorm(4, momentum=0.3).to(np.float64)
    layer.bias.data[...] = rng.standard_normal(4)
    x = rng.standard_normal(shape) * 2 + 1
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    bc = (1, 4) + (1,) * (len(shape) - 2)
    with tn.use_backend(backend):
        y = layer.forward(x)
        assert_close(y, x - x.mean(axis=axes, keepdims=True) + layer.bias.data.reshape(bc),
                     1e-12, 1e-12, "y")
        assert_close(layer.running_mean, 0.3 * x.mean(axis=axes), 1e-12, 1e-12, "running_mean")
        layer.train(training)
        check_grads(layer, x)
    assert list(layer.state_dict()) == ["bias", "running_mean", "num_batches_tracked"]
