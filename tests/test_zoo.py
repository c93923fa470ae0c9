"""The model zoo (tinynet/zoo.py): every model with every norm, by name.

Each MODELS entry is built with each norm of NORMS and checked for its
output shape, one training step, its config and file round trips and
``tinynet train`` / ``tinynet eval`` on the real MNIST. LeNet-5 and the
ResNets are checked against torch twins built from the same recipe, whose
state dicts have tinynet's keys: forward in train and eval mode, dx and every
parameter gradient on the ref and cpu backends, in float64; and their
parameter counts against a hand computation.
"""
import json
import os

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO, assert_close
from tinynet import zoo

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
needs_mnist = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                 reason="the real MNIST is not in ../shared/data/mnist")

CASES = [(name, norm) for name in zoo.MODELS for norm in zoo.NORMS]


def _build(name, norm, seed=0, **kw):
    tn.init.seed(seed)
    return zoo.build(name, norm, **kw)


def _batch(name, rng, n=2, dtype=np.float32):
    """A random batch of n inputs of the model ``name``."""
    return rng.standard_normal((n,) + zoo.MODELS[name][1]).astype(dtype)


def _count(model):
    return sum(p.size for p in model.parameters())


# -- every model, every norm -------------------------------------------------------------
@pytest.mark.parametrize("name,norm", CASES)
def test_every_model_builds_with_every_norm_and_outputs_logits(rng, name, norm):
    x = _batch(name, rng)
    y = _build(name, norm).forward(x)
    assert y.shape == (2, 10) and y.dtype == np.float32 and np.isfinite(y).all()
    assert _build(name, norm, num_classes=7).forward(x).shape == (2, 7)


@pytest.mark.parametrize("name,norm", CASES)
def test_one_training_step_changes_every_parameter(rng, name, norm):
    model = _build(name, norm)
    x, labels = _batch(name, rng), np.array([3, 7])
    before = {k: p.data.copy() for k, p in model.named_parameters()}
    optimizer = tn.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = tn.SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), labels)
    model.backward(loss_fn.backward())
    optimizer.step()
    assert np.isfinite(loss)
    unchanged = [k for k, p in model.named_parameters() if np.array_equal(p.data, before[k])]
    assert not unchanged, f"{name} norm={norm}: a step left {unchanged} unchanged"


@pytest.mark.parametrize("name,norm", CASES)
def test_config_and_file_round_trips_keep_the_model(rng, tmp_path, name, norm):
    model = _build(name, norm)
    model.forward(_batch(name, rng))  # running statistics away from their initial values
    config = tn.layer_to_config(model)
    assert json.loads(json.dumps(config)) == config
    rebuilt = tn.layer_from_config(config)
    assert tn.layer_to_config(rebuilt) == config
    rebuilt.load_state_dict(model.state_dict())
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = tn.load_model(path)
    assert tn.layer_to_config(loaded) == config
    state = model.state_dict()
    x = _batch(name, rng, n=3)
    model.eval()
    for other in (rebuilt, loaded):
        assert list(other.state_dict()) == list(state)
        for key, value in other.state_dict().items():
            np.testing.assert_array_equal(value, state[key], err_msg=key)
        np.testing.assert_array_equal(other.eval().forward(x), model.forward(x))


def test_unknown_names_are_refused_naming_them():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        zoo.build("resnet9")
    with pytest.raises(ValueError, match="norm must be one of .*'weight'"):
        zoo.build("lenet5", "weight")
    for builder, model in ((zoo.build_lenet5, "lenet5"), (zoo.build_resnet8, "resnet8"),
                           (zoo.build_resnet20, "resnet20")):
        with pytest.raises(ValueError, match=f"{model} takes a norm in .*'weight'"):
            builder("weight")
    for depth in (9, 2, 7, 20.0, True):
        with pytest.raises(ValueError, match="6n\\+2"):
            zoo.build_resnet(depth)


# -- structure ------------------------------------------------------------------------
def test_group_norm_groups():
    assert [zoo.group_norm_groups(c) for c in (1, 3, 4, 6, 16, 32, 64, 84, 120, 256)] == \
        [1, 1, 2, 3, 8, 16, 32, 28, 30, 32]
    for c in range(1, 300):
        g = zoo.group_norm_groups(c)
        assert c % g == 0 and g <= 32 and (c // g >= 2 or c < 2)


def _norms(model):
    """The normalization layers of a model, depth first, in state_dict order."""
    out, stack = [], [model]
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, (tn.BatchNorm, tn.GroupNorm, tn.InstanceNorm, tn.LayerNorm)):
            out.append(layer)
        stack[:0] = [child for _, child in layer.children()]
    return out


def test_resnet_layers_and_shapes_at_each_stage(rng):
    model = zoo.build_resnet(14, "batch")  # n = 2
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "BatchNorm", "ReLU"] + ["Residual", "ReLU"] * 6 + \
        ["GlobalAvgPool2D", "Dense"]
    blocks = model.layers[3:-2:2]
    assert [b.shortcut is not None for b in blocks] == [False, False, True, False, True, False]
    assert [type(layer).__name__ for layer in blocks[2].block] == \
        ["Conv2D", "BatchNorm", "ReLU", "Conv2D", "BatchNorm"]
    assert blocks[2].block[0].stride == (2, 2) and blocks[2].shortcut[0].stride == (2, 2)
    assert blocks[2].shortcut[0].kernel_size == (1, 1)
    h = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    shapes = []
    for layer in model.layers:
        h = layer.forward(h)
        shapes.append(h.shape[1:])
    assert shapes[2] == (16, 28, 28)
    assert [shapes[4 + 2 * i] for i in range(6)] == \
        [(16, 28, 28)] * 2 + [(32, 14, 14)] * 2 + [(64, 7, 7)] * 2
    assert shapes[-2:] == [(64,), (10,)]


@pytest.mark.parametrize("norm", zoo.NORMS)
def test_resnet_norms_and_conv_biases(norm):
    model = zoo.build_resnet20(norm)
    norms = _norms(model)
    convs = [p for k, p in model.named_parameters() if k.endswith("bias")]
    if norm == "none":
        assert norms == []
        assert len(convs) == 1 + 18 + 2 + 1  # every conv and the dense layer have a bias
        return
    assert len(norms) == 1 + 18 + 2 and len(convs) == 1 + 18 + 2 + 1  # the norms' betas, dense
    want = {"batch": lambda c: (tn.BatchNorm, c),
            "group": lambda c: (tn.GroupNorm, zoo.group_norm_groups(c)),
            "layer": lambda c: (tn.GroupNorm, 1),
            "instance": lambda c: (tn.InstanceNorm, c)}[norm]
    for layer in norms:
        c = layer.weight.shape[0]
        cls, groups = want(c)
        assert type(layer) is cls
        if cls is tn.GroupNorm:
            assert layer.num_groups == groups
    assert {layer.weight.shape[0] for layer in norms} == {16, 32, 64}


def test_lenet5_layers():
    kinds = [type(layer).__name__ for layer in zoo.build_lenet5("none").layers]
    assert kinds == ["Conv2D", "Tanh", "AvgPool2D", "Conv2D", "Tanh", "AvgPool2D", "Flatten",
                     "Dense", "Tanh", "Dense", "Tanh", "Dense"]
    model = zoo.build_lenet5("instance")
    assert [type(n).__name__ for n in _norms(model)] == ["InstanceNorm"] * 2
    assert model.layers[0].padding == (2, 2) and model.layers[0].bias is None
    assert model.layers[9].bias is not None  # C5 has no norm with instance, so its bias stays
    assert [type(n).__name__ for n in _norms(zoo.build_lenet5("layer"))] == \
        ["GroupNorm", "GroupNorm", "LayerNorm", "LayerNorm"]
    assert [n.num_groups for n in _norms(zoo.build_lenet5("group"))] == [3, 8, 30, 28]


# -- parameter counts -------------------------------------------------------------------
def _layer(cin, cout, k=1, bias=True):
    """Parameters of a conv (k x k) or dense (k = 1) layer."""
    return cin * cout * k * k + (cout if bias else 0)


def test_lenet5_parameter_count_by_hand():
    paper = (_layer(1, 6, 5) + _layer(6, 16, 5) + _layer(400, 120) + _layer(120, 84)
             + _layer(84, 10))
    assert paper == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert _count(zoo.build_lenet5("none")) == paper
    hidden = 6 + 16 + 120 + 84
    for norm in ("batch", "layer", "group"):  # the biases give way to gamma and beta
        assert _count(zoo.build_lenet5(norm)) == paper - hidden + 2 * hidden == 61_932
    assert _count(zoo.build_lenet5("instance")) == paper - 22 + 2 * 22 == 61_728


def _resnet_count(n, norm_params):
    """Parameters of ResNet-(6n+2): convs without bias, each followed by a norm of
    ``norm_params(C)`` parameters (with no norm, the conv's bias: C)."""
    def conv_norm(cin, cout, k):
        return _layer(cin, cout, k, bias=False) + norm_params(cout)

    total = conv_norm(1, 16, 3)
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        total += conv_norm(cin, cout, 3) + conv_norm(cout, cout, 3)  # the first block
        total += conv_norm(cin, cout, 1) if cin != cout else 0        # its projection
        total += (n - 1) * 2 * conv_norm(cout, cout, 3)               # the other blocks
    return total + _layer(64, 10)


def test_resnet20_parameter_count_by_hand():
    with_norm = _resnet_count(3, lambda c: 2 * c)
    assert with_norm == (144 + 32) + 3 * (2 * 2_304 + 64) + (4_608 + 9_216 + 128 + 512 + 64) \
        + 2 * (2 * 9_216 + 128) + (18_432 + 36_864 + 256 + 2_048 + 128) \
        + 2 * (2 * 36_864 + 256) + 650 == 272_186
    for norm in ("batch", "group", "layer", "instance"):
        assert _count(zoo.build_resnet20(norm)) == with_norm
    assert _count(zoo.build_resnet20("none")) == _resnet_count(3, lambda c: c) == 271_402
    assert _count(zoo.build_resnet8("batch")) == _resnet_count(1, lambda c: 2 * c) == 77_754


# -- the torch twins --------------------------------------------------------------------
def _torch_twins(torch):
    """torch builders of lenet5 and the ResNets, with tinynet's module keys."""
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, block, shortcut=None):
            super().__init__()
            self.block = block
            if shortcut is not None:
                self.shortcut = shortcut

        def forward(self, x):
            return self.block(x) + (self.shortcut(x) if hasattr(self, "shortcut") else x)

    class GlobalAvgPool(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    def maps(norm, c):
        return {"batch": lambda: nn.BatchNorm2d(c),
                "group": lambda: nn.GroupNorm(zoo.group_norm_groups(c), c),
                "layer": lambda: nn.GroupNorm(1, c),
                "instance": lambda: nn.InstanceNorm2d(c, affine=True),
                "none": lambda: None}[norm]()

    def features(norm, f):
        return {"batch": lambda: nn.BatchNorm1d(f),
                "group": lambda: nn.GroupNorm(zoo.group_norm_groups(f), f),
                "layer": lambda: nn.LayerNorm(f)}.get(norm, lambda: None)()

    def chain(*modules):
        return nn.Sequential(*[m for m in modules if m is not None])

    def lenet5(norm):
        n1, n2, n3, n4 = maps(norm, 6), maps(norm, 16), features(norm, 120), features(norm, 84)
        return chain(nn.Conv2d(1, 6, 5, padding=2, bias=n1 is None), n1, nn.Tanh(),
                     nn.AvgPool2d(2),
                     nn.Conv2d(6, 16, 5, bias=n2 is None), n2, nn.Tanh(), nn.AvgPool2d(2),
                     nn.Flatten(), nn.Linear(400, 120, bias=n3 is None), n3, nn.Tanh(),
                     nn.Linear(120, 84, bias=n4 is None), n4, nn.Tanh(), nn.Linear(84, 10))

    def resnet(depth, norm):
        bias = norm == "none"
        layers = [nn.Conv2d(1, 16, 3, padding=1, bias=bias), maps(norm, 16), nn.ReLU()]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range((depth - 2) // 6):
                stride = 2 if stage and not i else 1
                block = chain(nn.Conv2d(cin, cout, 3, stride, 1, bias=bias), maps(norm, cout),
                              nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=bias),
                              maps(norm, cout))
                shortcut = (chain(nn.Conv2d(cin, cout, 1, stride, bias=bias), maps(norm, cout))
                            if stride != 1 or cin != cout else None)
                layers += [Residual(block, shortcut), nn.ReLU()]
                cin = cout
        return chain(*layers, GlobalAvgPool(), nn.Linear(64, 10))

    return {"lenet5": lenet5, "resnet8": lambda norm: resnet(8, norm),
            "resnet20": lambda norm: resnet(20, norm)}


@pytest.mark.parametrize("norm", zoo.NORMS)
def test_parameter_counts_equal_the_torch_twins(norm):
    torch = pytest.importorskip("torch", reason="the torch twins need torch")
    for name, make in _torch_twins(torch).items():
        twin = make(norm)
        assert _count(zoo.build(name, norm)) == sum(p.numel() for p in twin.parameters()), name


def _run_tinynet(model, x, dy, backend):
    """y and dx in train mode, the parameter gradients, the state, then y in eval mode."""
    with tn.use_backend(backend):
        model.train()
        model.zero_grad()
        y = model.forward(x)
        dx = model.backward(dy)
        model.eval()
        y_eval = model.forward(x)
    grads = {k: p.grad for k, p in model.named_parameters()}
    return y, dx, grads, model.state_dict(), y_eval


def _run_torch(torch, twin, x, dy):
    twin.train()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = twin(xt)
    yt.backward(torch.from_numpy(dy))
    twin.eval()
    with torch.no_grad():
        y_eval = twin(torch.from_numpy(x)).numpy()
    grads = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    state = {k: v.numpy() for k, v in twin.state_dict().items()}
    return yt.detach().numpy(), xt.grad.numpy(), grads, state, y_eval


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("norm", zoo.NORMS)
@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_matches_its_torch_twin(rng, name, norm, backend):
    """tinynet's state loads into the twin; forward in train and eval mode, dx, every
    parameter gradient and the running statistics then agree in float64."""
    torch = pytest.importorskip("torch", reason="the torch twins need torch")
    model = _build(name, norm).to(np.float64)
    model.requires_input_grad = True
    model.forward(_batch(name, rng, n=3, dtype=np.float64))  # running statistics move
    twin = _torch_twins(torch)[name](norm).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = _batch(name, rng, n=3, dtype=np.float64)
    dy = rng.standard_normal((3, 10))
    got = _run_tinynet(model, x, dy, backend)
    want = _run_torch(torch, twin, x, dy)
    tol = dict(rtol=1e-10, atol=1e-10)
    for what, i in (("y", 0), ("dx", 1), ("y eval", 4)):
        assert_close(got[i], want[i], what=f"{name} {norm} {backend} {what}", **tol)
    assert list(got[2]) == list(want[2])
    for key in want[2]:
        assert_close(got[2][key], want[2][key], what=f"{backend} grad {key}", **tol)
    assert sorted(got[3]) == sorted(want[3])
    for key in want[3]:
        assert_close(got[3][key], want[3][key], what=f"{backend} state {key}", **tol)


# -- tinynet train and eval -------------------------------------------------------------
@needs_mnist
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_train_and_eval_every_zoo_model(tmp_path, capsys, name):
    from tinynet.cli import main
    out = tmp_path / "run"
    assert main(["train", "--model", name, "--limit", "64", "--val-split", "32",
                 "--test-limit", "32", "--epochs", "1", "--batch-size", "32", "--quiet",
                 "--out", str(out), "--data-dir", SHARED_DATA]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((out / "config.json").read_text())["model"] == name
    assert main(["eval", str(out), "--limit", "32", "--no-plots", "--data-dir", SHARED_DATA]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the same model on the same 32 test images as train's final measurement
    assert summary["test_acc"] == result["test_acc"]
    assert summary["test_loss"] == pytest.approx(result["test_loss"], rel=1e-4, abs=1e-6)
