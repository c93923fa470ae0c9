"""tn.init: fans, He, Xavier and torch's default statistics, torch's bounds, seeding,
the layers' default (torch's) and named inits."""
import math

import numpy as np
import pytest

import tinynet as tn


def test_fans_like_torch():
    assert tn.init.fans((128, 3136)) == (3136, 128)
    assert tn.init.fans((64, 32, 3, 3)) == (32 * 9, 64 * 9)
    with pytest.raises(ValueError, match="at least 2 dims"):
        tn.init.fans((5,))


@pytest.mark.parametrize("name, std", [
    ("he_normal", math.sqrt(2.0 / 288)),
    ("he_uniform", math.sqrt(2.0 / 288)),
    ("xavier_normal", math.sqrt(2.0 / (288 + 576))),
    ("xavier_uniform", math.sqrt(2.0 / (288 + 576))),
])
def test_standard_deviation(name, std):
    w = getattr(tn.init, name)((64, 32, 3, 3), rng=np.random.default_rng(0))
    assert w.dtype == np.float32 and w.shape == (64, 32, 3, 3)
    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.03)
    if name.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3.0) * std


def test_bounds_match_torch():
    torch = pytest.importorskip("torch")
    t = torch.empty(64, 32, 3, 3)
    torch.nn.init.kaiming_uniform_(t, nonlinearity="relu")
    bound = float(t.abs().max())
    w = tn.init.he_uniform((64, 32, 3, 3), rng=np.random.default_rng(0))
    assert float(np.abs(w).max()) == pytest.approx(bound, rel=0.01)
    torch.nn.init.xavier_uniform_(t)
    w = tn.init.xavier_uniform((64, 32, 3, 3), rng=np.random.default_rng(0))
    assert float(np.abs(w).max()) == pytest.approx(float(t.abs().max()), rel=0.01)


def test_seed_makes_models_reproducible():
    tn.init.seed(7)
    a = tn.Sequential(tn.Conv2D(1, 4, 3), tn.Dense(5, 3), tn.Dropout(0.5))
    tn.init.seed(7)
    b = tn.Sequential(tn.Conv2D(1, 4, 3), tn.Dense(5, 3), tn.Dropout(0.5))
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(v, w, err_msg=k)
    assert a[2].seed == b[2].seed
    tn.init.seed(8)
    c = tn.Conv2D(1, 4, 3)
    assert not np.array_equal(c.weight.data, a[0].weight.data)


@pytest.mark.parametrize("make, fan_in", [(lambda **k: tn.Dense(400, 300, **k), 400),
                                           (lambda **k: tn.Conv2D(16, 300, 3, **k), 144),
                                           (lambda **k: tn.Conv2D(16, 300, 3, groups=4, **k), 36)])
def test_layers_default_to_torchs_init(make, fan_in):
    """W and b from U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's reset_parameters."""
    layer = make()
    assert layer.init == "torch" and layer.get_config()["init"] == "torch"
    bound = 1.0 / math.sqrt(fan_in)
    w, b = layer.weight.data, layer.bias.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.03)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.8 * bound and b.dtype == np.float32
    assert abs(b.mean()) < 0.2 * bound
    assert make(bias=False).bias is None


@pytest.mark.parametrize("name", ["he_uniform", "he_normal", "xavier_uniform", "xavier_normal"])
def test_layers_take_a_named_init_with_zero_bias(name):
    for layer in (tn.Dense(400, 300, init=name), tn.Conv2D(16, 64, 3, init=name)):
        shape = layer.weight.data.shape
        fan_in, fan_out = tn.init.fans(shape)
        std = (math.sqrt(2.0 / fan_in) if name.startswith("he")
               else math.sqrt(2.0 / (fan_in + fan_out)))
        assert layer.weight.data.std() == pytest.approx(std, rel=0.05), (name, shape)
        assert not layer.bias.data.any()
        assert type(layer).from_config(layer.get_config()).init == name


def test_torch_init_is_the_same_draw_as_named_function():
    tn.init.seed(3)
    layer = tn.Dense(20, 30)
    tn.init.seed(3)
    w = tn.init.torch_uniform((30, 20))
    b = tn.init.get_rng().uniform(-1 / math.sqrt(20), 1 / math.sqrt(20), size=30)
    np.testing.assert_array_equal(layer.weight.data, w)
    np.testing.assert_array_equal(layer.bias.data, b.astype(np.float32))


def test_bad_init_names_the_layer_and_the_choices():
    with pytest.raises(ValueError, match="Dense: init must be one of 'torch', 'he_uniform', "
                                         "'he_normal', 'xavier_uniform', 'xavier_normal', "
                                         "got 'kaiming'"):
        tn.Dense(3, 4, init="kaiming")
    with pytest.raises(ValueError, match="Conv2D: init must be one of .*got None"):
        tn.Conv2D(3, 4, 3, init=None)


def test_torch_bound_matches_torch():
    torch = pytest.importorskip("torch")
    for t in (torch.nn.Linear(400, 300), torch.nn.Conv2d(16, 300, 3)):
        t.requires_grad_(False)
        fan_in = t.weight[0].numel()
        w = tn.init.torch_uniform(tuple(t.weight.shape), rng=np.random.default_rng(0))
        assert float(np.abs(w).max()) == pytest.approx(float(t.weight.abs().max()), rel=0.01)
        assert float(t.bias.abs().max()) <= 1 / math.sqrt(fan_in)


def test_zoo_and_study_keep_he_uniform():
    from tinynet import zoo
    from tinynet.study.common import build_model
    for model in (zoo.build("cnn", "none"), zoo.build("resnet8", "none"),
                  build_model({"arch": "cnn", "norm": "none", "depth": 2, "width": 8,
                               "init_scale": 1.0, "seed": 0, "dropconnect": 0.0,
                               "bn_momentum": 0.1, "act": "relu", "dropout": 0.0,
                               "dropout_kind": "inverted"})):
        layers = [m for m in _walk(model) if isinstance(m, (tn.Dense, tn.Conv2D))]
        assert layers and all(m.init == "he_uniform" for m in layers)
        assert all(not m.bias.data.any() for m in layers if m.bias is not None)


def _walk(layer):
    yield layer
    for _, child in getattr(layer, "children", lambda: [])():
        yield from _walk(child)


def test_ones_and_zeros():
    assert tn.init.zeros((3,)).sum() == 0 and tn.init.ones((3,)).sum() == 3
