"""torch's remaining normalization options, each against torch in float64:
BatchNorm momentum=None / affine=False / track_running_stats=False, LayerNorm
elementwise_affine=False / bias=False, GroupNorm affine=False, InstanceNorm
track_running_stats=True with momentum; gradcheck for each; state_dict keys."""
import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads

torch = pytest.importorskip("torch", reason="the option tests compare with torch")
nn = torch.nn

CASES = {
    "bn_cma": (lambda: tn.BatchNorm(6, momentum=None),
               lambda: nn.BatchNorm2d(6, momentum=None), (3, 6, 4, 4)),
    "bn_noaffine": (lambda: tn.BatchNorm(6, affine=False),
                    lambda: nn.BatchNorm2d(6, affine=False), (3, 6, 4, 4)),
    "bn_nostats": (lambda: tn.BatchNorm(6, track_running_stats=False),
                   lambda: nn.BatchNorm2d(6, track_running_stats=False), (3, 6, 4, 4)),
    "bn1d_nostats_noaffine": (lambda: tn.BatchNorm(6, affine=False, track_running_stats=False),
                              lambda: nn.BatchNorm1d(6, affine=False, track_running_stats=False),
                              (5, 6)),
    "ln_noaffine": (lambda: tn.LayerNorm((4, 4), elementwise_affine=False),
                    lambda: nn.LayerNorm((4, 4), elementwise_affine=False), (3, 6, 4, 4)),
    "ln_nobias": (lambda: tn.LayerNorm(6, bias=False), lambda: nn.LayerNorm(6, bias=False),
                  (5, 6)),
    "gn_noaffine": (lambda: tn.GroupNorm(3, 6, affine=False),
                    lambda: nn.GroupNorm(3, 6, affine=False), (3, 6, 4, 4)),
    "in_stats": (lambda: tn.InstanceNorm(6, track_running_stats=True, momentum=0.3),
                 lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True,
                                           momentum=0.3), (3, 6, 4, 4)),
    "in_stats_noaffine": (lambda: tn.InstanceNorm(6, affine=False, track_running_stats=True),
                          lambda: nn.InstanceNorm2d(6, track_running_stats=True), (3, 6, 4, 4)),
    "in_stats_cma": (lambda: tn.InstanceNorm(6, track_running_stats=True, momentum=None),
                     lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True,
                                               momentum=None), (3, 6, 4, 4)),
}


def pair(kind, rng):
    make, make_torch, shape = CASES[kind]
    layer = make().to(np.float64)
    module = make_torch().double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.data[...] = rng.uniform(0.5, 1.5, p.shape)
            getattr(module, name).copy_(torch.from_numpy(p.data))
    return layer, module, shape


def step_both(layer, module, x, dy, backend):
    module.zero_grad()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = module(xt)
    yt.backward(torch.from_numpy(dy))
    layer.zero_grad()
    with tn.use_backend(backend):
        y = layer.forward(x)
        dx = layer.backward(dy)
    assert_close(y, yt.detach().numpy(), 1e-10, 1e-10, "y")
    assert_close(dx, xt.grad.numpy(), 1e-10, 1e-10, "dx")
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    assert sorted(grads) == sorted(n for n, _ in layer.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(p.grad, grads[name], 1e-10, 1e-10, f"d{name}")


def assert_same_state(layer, module):
    ours, theirs = layer.state_dict(), module.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert_close(ours[key], theirs[key].numpy(), 1e-12, 1e-12, key)


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_train_then_eval_matches_torch(rng, kind, backend):
    layer, module, shape = pair(kind, rng)
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        step_both(layer, module, x, rng.standard_normal(shape), backend)
    assert_same_state(layer, module)
    layer.eval()
    module.eval()
    step_both(layer, module, rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape),
              backend)
    assert_same_state(layer, module)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_state_dict_loads_from_torch(rng, kind):
    layer, module, shape = pair(kind, rng)
    module(torch.from_numpy(rng.standard_normal(shape)))
    fresh = CASES[kind][0]().to(np.float64)
    fresh.load_state_dict(module.state_dict())
    assert_same_state(fresh, module)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_gradcheck(rng, kind, training):
    layer, _, shape = pair(kind, rng)
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

