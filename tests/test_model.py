"""Sequential: forward/backward chaining, parameters, state_dict, save/load, summary."""
import os
import sys

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads


def small_cnn(norm=True):
    layers = [tn.Conv2D(2, 4, 3, padding=1)]
    if norm:
        layers.append(tn.BatchNorm(4))
    layers += [tn.ReLU(), tn.MaxPool2D(2), tn.Flatten(), tn.Dense(4 * 3 * 3, 5)]
    return tn.Sequential(*layers)


def test_forward_backward_chain_matches_layer_by_layer(rng):
    model = small_cnn()
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    y = model.forward(x)
    h = x
    for layer in model:
        h = layer.forward(h)
    assert_close(y, h, what="Sequential.forward vs layer-by-layer")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    model.zero_grad()
    dx = model.backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_sequential_gradcheck(rng):
    model = tn.Sequential(tn.Dense(5, 7), tn.Tanh(), tn.LayerNorm(7), tn.Dense(7, 3))
    check_grads(model, rng.standard_normal((3, 5)))


def test_parameters_in_state_dict_order():
    model = small_cnn()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
    assert [p for _, p in model.named_parameters()] == model.parameters()
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                        "1.running_mean", "1.running_var",
                                        "1.num_batches_tracked", "5.weight", "5.bias"]


def test_zero_grad_and_accumulation(rng):
    model = tn.Sequential(tn.Dense(4, 3))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    model.forward(x)
    model.backward(dy)
    g1 = model[0].weight.grad.copy()
    model.forward(x)
    model.backward(dy)
    assert_close(model[0].weight.grad, 2 * g1, what="backward adds into .grad")
    model.zero_grad()
    assert not model[0].weight.grad.any()


def test_train_eval_propagates():
    model = small_cnn()
    model.eval()
    assert not model.training and all(not layer.training for layer in model)
    model.train()
    assert all(layer.training for layer in model)


def test_requires_input_grad_skips_dx(rng):
    model = small_cnn()
    model.requires_input_grad = False
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = model.forward(x)
    assert model.backward(np.ones_like(y)) is None
    assert model[0].weight.grad.any(), "the first layer still gets its weight gradient"


def test_save_load_roundtrip(tmp_path, rng):
    model = small_cnn()
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    model.forward(x)  # updates BatchNorm running stats
    model.eval()
    path = tmp_path / "model.npz"
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"], "no temp file is left behind"
    other = small_cnn().eval()
    other.load(path)
    assert_close(other.forward(x), model.forward(x), what="outputs after load")
    for k, v in model.state_dict().items():
        assert_close(other.state_dict()[k], v, what=k)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    model = small_cnn()
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_bytes() == before, "a failed save leaves the old file intact"
    assert os.listdir(tmp_path) == ["model.npz"]


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"0.weight": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        small_cnn().load(path)


def test_load_state_dict_names_first_bad_key():
    model = small_cnn()
    sd = model.state_dict()
    missing = dict(sd)
    del missing["1.running_var"]
    with pytest.raises(KeyError, match="1.running_var"):
        model.load_state_dict(missing)
    extra = dict(sd, **{"9.weight": np.zeros(3)})
    with pytest.raises(KeyError, match="unexpected key '9.weight'"):
        model.load_state_dict(extra)
    wrong = dict(sd, **{"5.weight": np.zeros((5, 7))})
    with pytest.raises(ValueError, match=r"5.weight.*\(5, 7\).*\(5, 36\)"):
        model.load_state_dict(wrong)
    before = model[5].weight.data.copy()
    assert_close(model[5].weight.data, before, what="nothing written after a failed load")


def test_to_float64(rng):
    model = small_cnn().to(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64
               for p in model.parameters())
    assert model[1].running_mean.dtype == np.float64
    y = model.forward(rng.standard_normal((2, 2, 6, 6)))
    assert y.dtype == np.float64


def test_summary_lists_shapes_and_counts(capsys):
    model = small_cnn()
    text = model.summary_text(input_shape=(1, 2, 6, 6))
    assert "(1, 4, 6, 6)" in text and "(1, 5)" in text
    total = sum(p.size for p in model.parameters())
    assert f"total parameters: {total:,}" in text
    assert capsys.readouterr().out == "", "summary_text only returns the table"
    assert model.summary(input_shape=(1, 2, 6, 6)) is None
    assert capsys.readouterr().out == text + "\n"
    assert all(layer.training for layer in model), "summary restores the training mode"
    assert model.training, "... of the model itself too"
    model.eval()
    model.summary_text(input_shape=(1, 2, 6, 6))
    assert not model.training and not any(layer.training for layer in model)


def test_summary_is_shown_once_in_a_notebook(capsys):
    # A notebook (IPython's displayhook, like the REPL's sys.displayhook) shows
    # a cell's value unless it is None: the table must be the printed text only.
    model = small_cnn()
    result = model.summary()
    printed = capsys.readouterr().out
    assert result is None
    sys.__displayhook__(result)
    assert capsys.readouterr().out == "", "the call's value adds nothing to the output"
    assert printed == model.summary_text() + "\n"
    assert printed.count("total parameters:") == 1


def test_summary_writes_to_a_file(tmp_path, capsys):
    path = tmp_path / "summary.txt"
    with open(path, "w") as f:
        assert small_cnn().summary(input_shape=(1, 2, 6, 6), file=f) is None
    assert capsys.readouterr().out == ""
    assert path.read_text() == small_cnn().summary_text(input_shape=(1, 2, 6, 6)) + "\n"


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="argument 1"):
        tn.Sequential(tn.ReLU(), lambda x: x)


def test_torch_state_dict_loads_and_matches():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    tmodel = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 5)).double()
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    tmodel.train()
    tmodel(torch.from_numpy(x))  # move the running stats away from their init
    tmodel.eval()
    model = small_cnn().to(np.float64)
    model.load_state_dict(tmodel.state_dict())
    model.eval()
    assert_close(model.forward(x), tmodel(torch.from_numpy(x)).detach().numpy(),
                 rtol=1e-10, atol=1e-10, what="tinynet vs torch after loading torch's state")


def test_tinynet_state_dict_loads_into_torch(rng):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = small_cnn(norm=False).to(np.float64)
    tmodel = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(36, 5)).double()
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = rng.standard_normal((2, 2, 6, 6))
    assert_close(tmodel(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                 rtol=1e-10, atol=1e-10, what="torch after loading tinynet's state")
