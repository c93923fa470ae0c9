"""WeightNorm and MeanOnlyBatchNorm.

The ops: every backend's weightnorm_forward / weightnorm_backward against a
loop oracle and the float64 reference over tinynet.ops.weightnorm.cases, and
their argument checks. The layers: gradients (gradcheck), torch's
parametrizations.weight_norm in float64, state_dict keys, the data-dependent
initialization, bad input, training, and MeanOnlyBatchNorm.
"""
import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads
from cudasim import requires_cuda
from harness import FLOATS
from tinynet.backends import ref
from tinynet.ops.weightnorm import cases

SHAPE_IDS = [case.name for case in cases.SHAPES]
HOST_BACKENDS = pytest.mark.parametrize("backend", ["ref", "cpu"], indirect=True)
CUDA_BACKEND = pytest.mark.parametrize(
    "backend", [pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])], indirect=True)
# A float32 or float64 result against the float64 reference.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def g_shape(shape):
    """g's shape for v of ``shape``: (O, 1) or (O, 1, 1, 1)."""
    return (shape[0],) + (1,) * (len(shape) - 1)


def loop_weightnorm(v, g, dw):
    """Row-by-row oracle of w, dv and dg."""
    w, dv, dg = np.zeros(v.shape), np.zeros(v.shape), np.zeros(g.shape)
    for o in range(v.shape[0]):
        vo, dwo, go = v[o].ravel(), dw[o].ravel(), float(g[o].ravel()[0])
        n = np.sqrt(sum(a * a for a in vo))
        w[o] = (go * vo / n).reshape(v.shape[1:])
        dgo = sum(a * b for a, b in zip(dwo, vo)) / n
        dg[o] = dgo
        dv[o] = (go / n * (dwo - dgo / n * vo)).reshape(v.shape[1:])
    return w, dv, dg


@pytest.mark.parametrize("shape", cases.SHAPES, ids=SHAPE_IDS)
def test_ops_match_loop_oracle(backend, rng, shape):
    v = rng.standard_normal(shape.shape)
    g = rng.standard_normal(g_shape(shape.shape))
    dw = rng.standard_normal(shape.shape)
    ops = backend.ops
    w, vnorm = ops.weightnorm_forward(backend.put(v), backend.put(g))
    dv, dg = ops.weightnorm_backward(backend.put(v), backend.put(g), vnorm, backend.put(dw))
    w_o, dv_o, dg_o = loop_weightnorm(v, g, dw)
    w, vnorm, dv, dg = (backend.get(a) for a in (w, vnorm, dv, dg))
    assert_close(w, w_o, 1e-12, 1e-12, "w")
    assert_close(dv, dv_o, 1e-12, 1e-12, "dv")
    assert_close(dg, dg_o, 1e-12, 1e-12, "dg")
    assert dg.shape == g.shape and vnorm.shape == (shape.shape[0],)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", cases.SHAPES, ids=SHAPE_IDS)
def test_ops_match_ref(backend, rng, shape, dtype):
    v = rng.standard_normal(shape.shape).astype(dtype)
    g = rng.standard_normal(g_shape(shape.shape)).astype(dtype)
    dw = rng.standard_normal(shape.shape).astype(dtype)
    v64, g64, dw64 = (a.astype(np.float64) for a in (v, g, dw))
    ops, tol = backend.ops, TOL[dtype]
    w, vnorm = ops.weightnorm_forward(backend.put(v), backend.put(g))
    w_ref, vnorm_ref = ref.weightnorm_forward(v64, g64)
    w = backend.get(w)
    assert w.dtype == dtype and w.shape == shape.shape
    assert_close(w, w_ref, tol, tol, "w")
    assert backend.get(vnorm).dtype == np.float64
    assert_close(backend.get(vnorm), vnorm_ref, 1e-12, 1e-12, "vnorm")
    dv, dg = ops.weightnorm_backward(backend.put(v), backend.put(g), vnorm, backend.put(dw))
    dv_ref, dg_ref = ref.weightnorm_backward(v64, g64, vnorm_ref, dw64)
    dv, dg = backend.get(dv), backend.get(dg)
    assert dv.dtype == dtype and dg.dtype == dtype and dg.shape == g.shape
    assert_close(dv, dv_ref, tol, tol, "dv")
    assert_close(dg, dg_ref, tol, tol, "dg")


def test_op_checks_name_the_argument(backend, rng):
    ops, put = backend.ops, backend.put
    v = put(rng.standard_normal((4, 5)))
    with pytest.raises(ValueError, match="weightnorm_forward: g must have shape \\(4, 1\\)"):
        ops.weightnorm_forward(v, put(np.ones((4,))))
    with pytest.raises(ValueError, match="weightnorm_forward: v must have shape"):
        ops.weightnorm_forward(put(np.ones(4)), put(np.ones((4, 1))))
    with pytest.raises(TypeError, match="one dtype"):
        ops.weightnorm_forward(v, put(np.ones((4, 1), np.float32)))
    with pytest.raises(ValueError, match="weightnorm_backward: dw must have v's shape"):
        ops.weightnorm_backward(v, put(np.ones((4, 1))), put(np.ones(4)), put(np.ones((4, 6))))
    with pytest.raises(ValueError, match="weightnorm_backward: vnorm must have shape"):
        ops.weightnorm_backward(v, put(np.ones((4, 1))), put(np.ones(3)), v)


@CUDA_BACKEND
def test_cuda_ops_reject_host_arrays(backend, rng):
    v, g = rng.standard_normal((3, 4)), np.ones((3, 1))
    with pytest.raises(TypeError, match="weightnorm_forward: v .*host.*device arrays"):
        backend.ops.weightnorm_forward(v, backend.put(g))


# The layers.

def make(kind, bias=True):
    if kind == "dense":
        return tn.Dense(5, 4, bias=bias), (3, 5)
    return tn.Conv2D(2, 3, 3, stride=(2, 1), padding=1, bias=bias), (3, 2, 5, 5)


@HOST_BACKENDS
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_gradcheck(rng, backend, kind, bias):
    layer, shape = make(kind, bias)
    with backend.active():
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


@HOST_BACKENDS
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_matches_torch_float64(rng, backend, kind, bias):
    torch = pytest.importorskip("torch")
    layer, shape = make(kind, bias)
    wn = tn.WeightNorm(layer).to(np.float64)
    # Move g away from ||v|| so that the test sees both factors.
    wn.weight_g.data[...] = rng.uniform(0.5, 2.0, wn.weight_g.shape)
    module = torch_twin(kind, wn)
    x = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    with backend.active():
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


@HOST_BACKENDS
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 3, 3)])
def test_mean_only_batchnorm(rng, backend, training, shape):
    layer = tn.MeanOnlyBatchNorm(4, momentum=0.3).to(np.float64)
    layer.bias.data[...] = rng.standard_normal(4)
    x = rng.standard_normal(shape) * 2 + 1
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    bc = (1, 4) + (1,) * (len(shape) - 2)
    with backend.active():
        y = layer.forward(x)
        assert_close(y, x - x.mean(axis=axes, keepdims=True) + layer.bias.data.reshape(bc),
                     1e-12, 1e-12, "y")
        assert_close(layer.running_mean, 0.3 * x.mean(axis=axes), 1e-12, 1e-12, "running_mean")
        layer.train(training)
        check_grads(layer, x)
    assert list(layer.state_dict()) == ["bias", "running_mean", "num_batches_tracked"]
