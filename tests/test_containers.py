"""Residual and Concat: the fan-out sum, gradients, torch twins, keys and bad input.

Each model is checked with tn.gradcheck (float64, every parameter and dx), on
every backend against the ref backend (the same weights and inputs: forward,
dx, every parameter gradient, BatchNorm's running statistics and eval mode),
and against a torch twin whose state dict has the same keys.
"""
import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads


def res_identity(c=3):
    return tn.Residual(tn.Sequential(tn.Conv2D(c, c, 3, padding=1), tn.BatchNorm(c), tn.ReLU(),
                                     tn.Conv2D(c, c, 3, padding=1), tn.BatchNorm(c)))


def res_projection(c_in=3, c_out=4):
    return tn.Residual(tn.Sequential(tn.Conv2D(c_in, c_out, 3, stride=2, padding=1),
                                     tn.BatchNorm(c_out), tn.Tanh()),
                       tn.Sequential(tn.Conv2D(c_in, c_out, 1, stride=2), tn.BatchNorm(c_out)))


def concat(c=3):
    return tn.Concat(tn.Sequential(tn.Conv2D(c, 2, 1), tn.Tanh()),
                     tn.Sequential(tn.Conv2D(c, 3, 3, padding=1), tn.BatchNorm(3)),
                     tn.Sequential(tn.Conv2D(c, 1, 3, padding=1)))


def small_net():
    """A net with a residual stage, a projection stage and a concat, as a zoo model would."""
    return tn.Sequential(tn.Conv2D(2, 3, 3, padding=1), res_identity(3), res_projection(3, 4),
                         tn.Concat(tn.Sequential(tn.Conv2D(4, 2, 1)),
                                   tn.Sequential(tn.Conv2D(4, 3, 3, padding=1), tn.Tanh())),
                         tn.GlobalAvgPool2D(), tn.Flatten(), tn.Dense(5, 3))


MODELS = {"residual-identity": res_identity, "residual-projection": res_projection,
          "concat": concat, "net": small_net}
INPUT_CHANNELS = {"residual-identity": 3, "residual-projection": 3, "concat": 3, "net": 2}


def _model(name, seed=0):
    tn.init.seed(seed)
    return MODELS[name]()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients_check(rng, name, mode):
    model = _model(name).to(np.float64)
    if mode == "eval":  # running statistics away from their initial values first
        model.forward(rng.standard_normal((3, INPUT_CHANNELS[name], 5, 5)))
        model.eval()
    check_grads(model, rng.standard_normal((3, INPUT_CHANNELS[name], 5, 5)), tol=1e-6)


def test_concat_of_dense_branches_along_features_gradients_check(rng):
    model = tn.Concat(tn.Dense(4, 3), tn.Sequential(tn.Dense(4, 2), tn.Tanh()), axis=-1)
    check_grads(model, rng.standard_normal((5, 4)))


def test_state_dict_keys_are_torch_module_keys():
    keys = list(small_net().state_dict())
    assert keys[:2] == ["0.weight", "0.bias"]
    assert "1.block.0.weight" in keys and "1.block.1.running_mean" in keys
    assert "2.shortcut.0.weight" in keys and "2.shortcut.1.num_batches_tracked" in keys
    assert "1.shortcut.0.weight" not in " ".join(keys)  # the identity has no keys
    assert "3.branches.0.0.weight" in keys and "3.branches.1.0.bias" in keys
    model = small_net()
    assert [k for k, _ in model.named_parameters()] == [k for k in keys
                                                        if not k.endswith(("running_mean",
                                                                           "running_var",
                                                                           "num_batches_tracked"))]


def _run(model, x, dy, backend):
    """Forward and backward in train mode, then forward in eval mode, on ``backend``."""
    with backend.active():
        model.to(backend.device)
        model.train()
        model.zero_grad()
        y = model.forward(backend.put(x))
        dx = model.backward(backend.put(dy))
        model.eval()
        y_eval = model.forward(backend.put(x))
    state = model.state_dict()
    grads = {k: tn.to_host(p.grad) for k, p in model.named_parameters()}
    return backend.get(y), backend.get(dx), grads, state, backend.get(y_eval)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_backend_matches_ref(backend, rng, name, dtype):
    x = rng.standard_normal((3, INPUT_CHANNELS[name], 6, 6)).astype(dtype)
    out_shape = _model(name).forward(x.astype(np.float32)).shape
    dy = rng.standard_normal(out_shape).astype(dtype)
    want = _run(_model(name).to(np.float64), x.astype(np.float64), dy.astype(np.float64),
                type(backend)("ref"))
    got = _run(_model(name).to(dtype), x, dy, backend)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    for what, g, w in (("y", got[0], want[0]), ("dx", got[1], want[1]),
                       ("y eval", got[4], want[4])):
        assert g.dtype == dtype, what
        assert_close(g, w, what=f"{backend.name} {what}", **tol)
    for key in want[2]:
        assert_close(got[2][key], want[2][key], what=f"{backend.name} grad {key}", **tol)
    for key in want[3]:
        assert_close(got[3][key], want[3][key], what=f"{backend.name} state {key}", **tol)


class _TorchTwins:
    """torch modules with tinynet's container keys."""

    def __init__(self, torch):
        nn = torch.nn

        class Residual(nn.Module):
            def __init__(self, block, shortcut=None):
                super().__init__()
                self.block = block
                if shortcut is not None:
                    self.shortcut = shortcut

            def forward(self, x):
                return self.block(x) + (self.shortcut(x) if hasattr(self, "shortcut") else x)

        class Concat(nn.Module):
            def __init__(self, *branches, axis=1):
                super().__init__()
                self.branches = nn.ModuleList(branches)
                self.axis = axis

            def forward(self, x):
                return torch.cat([b(x) for b in self.branches], self.axis)

        self.net = nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                   nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))),
            Residual(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4),
                                   nn.Tanh()),
                     nn.Sequential(nn.Conv2d(3, 4, 1, stride=2), nn.BatchNorm2d(4))),
            Concat(nn.Sequential(nn.Conv2d(4, 2, 1)),
                   nn.Sequential(nn.Conv2d(4, 3, 3, padding=1), nn.Tanh())),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_its_torch_twin(rng, dtype):
    """Forward, dx, every parameter gradient, the running statistics and eval mode,
    with the weights going torch -> tinynet; then the state back into torch."""
    torch = pytest.importorskip("torch")
    twin = _TorchTwins(torch).net.to(torch.float64 if dtype == np.float64 else torch.float32)
    model = small_net().to(dtype)
    model.load_state_dict(twin.state_dict())
    x = rng.standard_normal((4, 2, 7, 7)).astype(dtype)
    dy = rng.standard_normal((4, 3)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = twin(xt)
    yt.backward(torch.from_numpy(dy))
    y = model.forward(x)
    dx = model.backward(dy)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    assert_close(y, yt.detach().numpy(), what="y", **tol)
    assert_close(dx, xt.grad.numpy(), what="dx", **tol)
    torch_grads = {k: p.grad.numpy() for k, p in twin.named_parameters()}
    for key, p in model.named_parameters():
        assert_close(p.grad, torch_grads[key], what=f"grad {key}", **tol)
    theirs = twin.state_dict()
    for key, value in model.state_dict().items():
        assert_close(value, theirs[key].numpy(), what=f"state {key}", **tol)
    model.eval()
    twin.eval()
    assert_close(model.forward(x), twin(torch.from_numpy(x)).detach().numpy(), what="eval", **tol)
    fresh = _TorchTwins(torch).net.to(twin[0].weight.dtype)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})


def test_save_and_load_keep_a_residual_net(tmp_path, rng):
    model = small_net()
    model.forward(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    path = tmp_path / "net.safetensors"
    model.save(path)
    other = small_net()
    other.load(path)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(other.forward(x), model.forward(x))


def test_train_eval_to_and_zero_grad_reach_every_layer(rng):
    model = small_net()
    nested = [model[1].block[1], model[2].shortcut[1], model[3].branches[1][1], model[3]]
    model.eval()
    assert not any(layer.training for layer in nested)
    model.train()
    assert all(layer.training for layer in nested)
    model.to(np.float64)
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    model.forward(rng.standard_normal((2, 2, 6, 6)))
    model.backward(np.ones((2, 3)))
    assert any(np.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())


def test_without_input_gradient_the_parameters_still_learn(rng):
    block = res_projection()
    block.requires_input_grad = False
    assert not block.block[0].requires_input_grad and not block.shortcut[0].requires_input_grad
    y = block.forward(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    assert block.backward(np.ones_like(y)) is None
    assert all(np.any(p.grad != 0) for p in block.parameters()[:2])


def test_layers_that_pass_dy_through_do_not_corrupt_it(rng):
    """A block that returns dy itself (an empty Sequential, Dropout in eval mode) or a
    view of it: the fan-out sum must not write into the caller's dy."""
    x = rng.standard_normal((2, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 4)).astype(np.float32)
    kept = dy.copy()
    res = tn.Residual(tn.Sequential())
    res.forward(x)
    np.testing.assert_array_equal(res.backward(dy), 2 * kept)
    np.testing.assert_array_equal(dy, kept)
    both = tn.Concat(tn.Dropout(0.5).eval(), tn.Dropout(0.5).eval(), axis=1)
    both.forward(x)
    dy2 = rng.standard_normal((2, 8)).astype(np.float32)
    kept2 = dy2.copy()
    np.testing.assert_allclose(both.backward(dy2), kept2[:, :4] + kept2[:, 4:])
    np.testing.assert_array_equal(dy2, kept2)


def test_summary_counts_every_parameter():
    model = small_net()
    text = model.summary_text(input_shape=(1, 2, 6, 6))
    total = sum(p.size for p in model.parameters())
    assert f"total parameters: {total:,}" in text and "Residual(" in text and "Concat(" in text


def test_an_identity_shortcut_under_a_shape_change_asks_for_a_projection(rng):
    block = tn.Residual(tn.Sequential(tn.Conv2D(3, 4, 3, padding=1)))
    with pytest.raises(ValueError, match=r"Residual: the block maps \(2, 3, 5, 5\) to "
                                         r"\(2, 4, 5, 5\).*pass a projection shortcut"):
        block.forward(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))


def test_outputs_that_cannot_be_added_or_joined_name_both_shapes(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    res = tn.Residual(tn.Conv2D(3, 4, 3), tn.Conv2D(3, 4, 1))
    with pytest.raises(ValueError, match=r"Residual: the block's output \(2, 4, 4, 4\) and the "
                                         r"shortcut's output \(2, 4, 6, 6\) cannot be added"):
        res.forward(x)
    cat = tn.Concat(tn.Conv2D(3, 2, 3), tn.Conv2D(3, 2, 1))
    with pytest.raises(ValueError, match=r"Concat: branch 0's output \(2, 2, 4, 4\) and branch "
                                         r"1's output \(2, 2, 6, 6\) cannot be joined"):
        cat.forward(x)
    with pytest.raises(ValueError, match="axis 4 is out of range"):
        tn.Concat(tn.ReLU(), axis=4).forward(x)


@pytest.mark.parametrize("make, error, match", [
    (lambda: tn.Residual(None), TypeError, "block must be a tinynet layer"),
    (lambda: tn.Residual(tn.ReLU(), shortcut="identity"), TypeError, "shortcut"),
    (lambda: tn.Concat(), ValueError, "at least one branch"),
    (lambda: tn.Concat(tn.ReLU(), "x"), TypeError, "branch 1"),
    (lambda: tn.Concat(tn.ReLU(), axis=0), ValueError, "non-batch axis"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("layer", [res_identity(), concat()])
def test_backward_before_forward_and_a_wrong_dy_raise(layer, rng):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((2, 3, 4, 4), np.float32))
    y = layer.forward(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="dy must have the output's shape"):
        layer.backward(np.ones(y.shape[:-1], np.float32))
