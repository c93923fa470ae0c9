"""The grouped Conv2D layer, tn.Conv2D(..., groups=g), as torch.nn.Conv2d(groups=g):
the weight's shape and initialization, the bad-groups errors, forward and
backward against torch on every backend (groups 1, 2, 4 and depthwise,
strides 1 and 2, paddings 0 and 1, odd sizes), gradcheck, state_dict both
ways, the config and the repr. The ops themselves are tested in
tests/ops/test_conv.py (tinynet.ops.conv.cases.GROUPED_CASES)."""
import json
import math

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads

# (in_channels, out_channels, kernel_size, stride, padding, groups), x (N, C, H, W)
LAYERS = {
    "g1-s2-p1": ((4, 6, 3, 2, 1, 1), (2, 4, 7, 6)),
    "g2-s1-p1": ((4, 6, 3, 1, 1, 2), (3, 4, 5, 7)),
    "g2-s2-p0": ((6, 4, (3, 2), 2, 0, 2), (2, 6, 7, 5)),
    "g4-s1-p0": ((8, 12, 3, 1, 0, 4), (2, 8, 5, 6)),
    "g4-s2-p1": ((8, 4, 3, (2, 1), 1, 4), (2, 8, 7, 5)),
    "depthwise-s1-p1": ((5, 5, 3, 1, 1, 5), (3, 5, 7, 9)),
    "depthwise-s2-p1": ((4, 4, 3, 2, 1, 4), (2, 4, 7, 7)),
    "depthwise-s1-p0-x2": ((3, 6, (3, 2), 1, 0, 3), (2, 3, 5, 6)),
}


def _torch():
    return pytest.importorskip("torch", reason="torch.nn.Conv2d(groups=g) is this test's oracle")


def _pair(layer):
    """The layer (float64) and a torch.nn.Conv2d twin with torch's initial parameters loaded."""
    torch = _torch()
    (cin, cout, k, s, p, g), _ = LAYERS[layer]
    kw = dict(stride=s, padding=p, groups=g)
    tconv = torch.nn.Conv2d(cin, cout, k, **kw).double()
    conv = tn.Conv2D(cin, cout, k, **kw).to(np.float64)
    conv.load_state_dict(tconv.state_dict())
    return conv, tconv


# -- the layer ----------------------------------------------------------------

def test_weight_shape_and_initialization():
    layer = tn.Conv2D(8, 12, (3, 2), groups=4)
    assert layer.weight.shape == (12, 2, 3, 2) and layer.bias.shape == (12,)
    assert layer.groups == 4
    # torch's default init, U(-b, b) with b = 1/sqrt(fan_in), fan_in = in_channels /
    # groups * KH * KW as torch counts it (the whole 8 * 3 * 2 would give a smaller b).
    bound = 1.0 / math.sqrt(2 * 3 * 2)
    assert 0.8 * bound < np.abs(layer.weight.data).max() <= bound
    depthwise = tn.Conv2D(5, 5, 3, padding=1, groups=5)
    assert depthwise.weight.shape == (5, 1, 3, 3)
    assert tn.Conv2D(4, 6, 3).groups == 1


@pytest.mark.parametrize("cin, cout, groups", [(4, 6, 3), (6, 4, 4), (3, 3, 2), (2, 4, 4)])
def test_groups_must_divide_both_channel_counts(cin, cout, groups):
    message = (f"Conv2D: groups={groups} must divide in_channels={cin} and "
               f"out_channels={cout}")
    with pytest.raises(ValueError, match=message):
        tn.Conv2D(cin, cout, 3, groups=groups)


@pytest.mark.parametrize("groups, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                           ("2", TypeError), (True, TypeError)])
def test_bad_groups_values(groups, error):
    with pytest.raises(error, match="Conv2D: groups"):
        tn.Conv2D(4, 4, 3, groups=groups)


def test_input_channels_are_checked():
    layer = tn.Conv2D(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"Conv2D.*\(N, 4, H, W\)"):
        layer.forward(np.ones((2, 2, 5, 5), np.float32))


@pytest.mark.parametrize("kwargs", [dict(groups=2), dict(groups=4, padding=1, bias=False),
                                    dict(groups=8, stride=2), dict(groups=1)])
def test_repr_matches_torch(kwargs):
    torch = _torch()
    expected = repr(torch.nn.Conv2d(8, 8, 3, **kwargs)).replace("Conv2d", "Conv2D")
    assert repr(tn.Conv2D(8, 8, 3, **kwargs)) == expected


def test_config_holds_groups_and_rebuilds_the_layer():
    layer = tn.Conv2D(8, 4, 3, stride=2, padding=1, bias=False, groups=4)
    assert layer.get_config()["groups"] == 4
    config = json.loads(json.dumps(tn.layer_to_config(layer)))
    again = tn.layer_from_config(config)
    assert again.groups == 4 and again.weight.shape == (4, 2, 3, 3)
    assert repr(again) == repr(layer)
    # A config written before groups existed builds an ungrouped layer.
    del config["config"]["groups"]
    assert tn.layer_from_config(config).groups == 1


def test_saved_model_loads_with_its_groups(tmp_path, rng):
    model = tn.Sequential(tn.Conv2D(4, 4, 3, padding=1, groups=4), tn.ReLU(),
                          tn.Conv2D(4, 6, 1, groups=2))
    path = str(tmp_path / "model.safetensors")
    model.save(path)
    again = tn.load_model(path)
    assert [getattr(layer, "groups", None) for layer in again.layers] == [4, None, 2]
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    assert np.array_equal(again.forward(x), model.forward(x))


# -- against torch ------------------------------------------------------------

def _layer_step(backend, layer, x, dy):
    """layer.forward(x) and layer.backward(dy) on ``backend``; (y, dx, dW, db) on the host."""
    with backend.active():
        layer.to(backend.device)
        y = layer.forward(backend.put(x))
        dx = layer.backward(backend.put(dy))
        grads = [p.grad for p in layer.parameters()]
        out = [backend.get(a) for a in [y, dx] + grads]
        layer.to("cpu")
        return out


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch(backend, rng, name):
    torch = _torch()
    conv, tconv = _pair(name)
    x = rng.standard_normal(LAYERS[name][1])
    xt = torch.tensor(x, requires_grad=True)
    yt = tconv(xt)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    y, dx, dW, db = _layer_step(backend, conv, x, dy)
    tol = dict(rtol=1e-11, atol=1e-11)
    assert_close(y, yt.detach().numpy(), what="y", **tol)
    assert_close(dx, xt.grad.numpy(), what="dx", **tol)
    assert_close(dW, tconv.weight.grad.numpy(), what="dW", **tol)
    assert_close(db, tconv.bias.grad.numpy(), what="db", **tol)


def test_state_dict_both_ways_with_torch(rng):
    torch = _torch()
    x = rng.standard_normal((2, 6, 7, 5))
    for groups in (1, 2, 3, 6):
        tconv = torch.nn.Conv2d(6, 6, 3, padding=1, groups=groups).double()
        conv = tn.Conv2D(6, 6, 3, padding=1, groups=groups).to(np.float64)
        # tinynet -> torch: the keys and shapes are torch's.
        state = conv.state_dict()
        assert list(state) == list(tconv.state_dict()) == ["weight", "bias"]
        tconv.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        y_torch = tconv(torch.tensor(x)).detach().numpy()
        assert_close(conv.forward(x), y_torch, rtol=1e-12, atol=1e-12, what="tinynet -> torch")
        # torch -> tinynet, into a fresh layer.
        other = tn.Conv2D(6, 6, 3, padding=1, groups=groups).to(np.float64)
        other.load_state_dict(tconv.state_dict())
        assert_close(other.forward(x), y_torch, rtol=1e-12, atol=1e-12, what="torch -> tinynet")
    wrong = tn.Conv2D(6, 6, 3, padding=1, groups=2)
    with pytest.raises(ValueError, match="weight"):
        wrong.load_state_dict(torch.nn.Conv2d(6, 6, 3, padding=1, groups=3).state_dict())


def test_depthwise_separable_block_matches_torch(rng):
    """A MobileNet block, depthwise 3x3 then pointwise 1x1, loaded from torch."""
    torch = _torch()
    tmodel = torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
        torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 1)).double()
    model = tn.Sequential(tn.Conv2D(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
                          tn.BatchNorm(4), tn.ReLU(), tn.Conv2D(4, 8, 1)).to(np.float64)
    model.load_state_dict(tmodel.state_dict())
    x = rng.standard_normal((3, 4, 9, 7))
    xt = torch.tensor(x, requires_grad=True)
    yt = tmodel(xt)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    assert_close(model.forward(x), yt.detach().numpy(), rtol=1e-11, atol=1e-11, what="y")
    assert_close(model.backward(dy), xt.grad.numpy(), rtol=1e-11, atol=1e-11, what="dx")
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        assert_close(p.grad, tp.grad.numpy(), rtol=1e-11, atol=1e-11, what=name)


# -- gradcheck ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, x_shape", [
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2), (3, 4, 5, 5)),
    (dict(in_channels=4, out_channels=2, kernel_size=(3, 2), stride=2, groups=2), (2, 4, 7, 5)),
    (dict(in_channels=5, out_channels=5, kernel_size=3, padding=1, groups=5), (3, 5, 5, 5)),
    (dict(in_channels=3, out_channels=6, kernel_size=3, stride=2, padding=1, groups=3,
          bias=False), (2, 3, 7, 6)),
], ids=["groups2", "groups2-s2", "depthwise", "depthwise-x2-s2-nobias"])
def test_gradcheck(rng, kwargs, x_shape):
    check_grads(tn.Conv2D(**kwargs), rng.standard_normal(x_shape))


def test_weightnorm_of_a_grouped_conv():
    """WeightNorm passes the wrapped layer's groups on: at creation it computes the
    same function as the grouped Conv2D it wraps, and its backward checks out."""
    rng = np.random.default_rng(0)
    conv = tn.Conv2D(4, 6, 3, padding=1, groups=2).to(np.float64)
    wn = tn.WeightNorm(conv)
    x = rng.standard_normal((2, 4, 5, 5))
    np.testing.assert_allclose(wn.forward(x), conv.forward(x), rtol=1e-12, atol=1e-12)
    assert tn.gradcheck(tn.WeightNorm(tn.Conv2D(4, 6, 3, groups=2)).to(np.float64),
                        rng.standard_normal((2, 4, 5, 5))).passed
    again = tn.layer_from_config(tn.layer_to_config(wn))
    assert again._op.groups == 2
