"""tn.init: fans, He and Xavier statistics, torch's bounds, seeding, defaults."""
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


def test_layers_default_to_he_uniform_and_zero_bias():
    layer = tn.Dense(400, 300)
    bound = math.sqrt(6.0 / 400)
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.95 * bound
    assert not layer.bias.data.any()
    assert tn.init.zeros((3,)).sum() == 0 and tn.init.ones((3,)).sum() == 3
