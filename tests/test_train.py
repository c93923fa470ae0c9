"""fit / evaluate / checkpoints / progress bar, on small synthetic data."""
import io
import json
import os

import numpy as np
import pytest

import tinynet as tn
from tinynet.checkpoint import load_checkpoint


def blobs(rng, n=240, d=6, k=3):
    """k Gaussian blobs in d dims: an easy, learnable classification task."""
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    x = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return x, y


def make_model():
    tn.init.seed(0)
    return tn.Sequential(tn.Dense(6, 16), tn.BatchNorm(16), tn.ReLU(), tn.Dropout(0.1, seed=3),
                         tn.Dense(16, 3))


def test_fit_learns_and_records_history(rng):
    x, y = blobs(rng)
    model = make_model()
    opt = tn.optim.Adam(model.parameters(), lr=1e-2)
    history = tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=4, val_data=(x, y),
                     batch_size=32, progress=False)
    assert len(history) == 4
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_acc"][-1] > 0.9
    assert all(r["seconds"] > 0 and r["samples_per_s"] > 0 for r in history.records)
    loss, acc = tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y))
    assert acc == pytest.approx(history["val_acc"][-1])
    assert model.training, "evaluate restores training mode"


def test_resume_continues_exactly(tmp_path, rng):
    x, y = blobs(rng)
    ckpt = tmp_path / "ckpt.npz"

    def run(epochs, resume, model, opt, sched):
        return tn.fit(model, tn.SoftmaxCrossEntropy(), opt,
                      tn.data.DataLoader(x, y, batch_size=32, shuffle=True, seed=5),
                      epochs=epochs, scheduler=sched, checkpoint=ckpt, resume=resume,
                      progress=False)

    def fresh():
        model = make_model()
        opt = tn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt, tn.optim.StepLR(opt, step_size=5, gamma=0.5)

    full_model, opt, sched = fresh()
    full = run(3, False, full_model, opt, sched)

    ckpt.unlink()
    m1, opt1, s1 = fresh()
    run(2, False, m1, opt1, s1)          # "crash" after epoch 2
    m2, opt2, s2 = fresh()               # a new process: fresh objects
    resumed = run(3, True, m2, opt2, s2)
    assert len(resumed) == 3
    np.testing.assert_allclose(resumed["train_loss"], full["train_loss"], rtol=1e-6)
    for k, v in full_model.state_dict().items():
        np.testing.assert_allclose(m2.state_dict()[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_checkpoint_is_plain_arrays(tmp_path, rng, ext):
    x, y = blobs(rng, n=64)
    model = make_model()
    opt = tn.optim.Adam(model.parameters())
    ckpt = tmp_path / f"ckpt{ext}"
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=1, checkpoint=ckpt,
           progress=False, config={"model": "blobs"})
    if ext == ".npz":
        with np.load(ckpt, allow_pickle=False) as f:
            assert "model/0.weight" in f.files and "step/3" in f.files
            assert json.loads(str(f["meta/history"]))[0]["epoch"] == 1
    else:
        from safetensors import safe_open
        with safe_open(str(ckpt), framework="numpy") as f:
            assert "model/0.weight" in f.keys() and "optim/step" in f.keys()
            meta = f.metadata()
        assert meta["format"] == "tinynet-checkpoint" and meta["epoch"] == "1"
        assert json.loads(meta["config"]) == {"model": "blobs"}
    assert os.listdir(tmp_path) == [ckpt.name], "no temp file is left behind"
    fresh = make_model()
    epoch, history, loader_epoch = load_checkpoint(ckpt, fresh)
    assert epoch == 1 and len(history) == 1 and loader_epoch == 1
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v, err_msg=k)
    assert fresh[3].step == model[3].step == 1  # one batch of 64


def test_legacy_npz_checkpoint_loads(tmp_path, rng):
    """Checkpoints of the earlier .npz layout (counters and history as arrays) still load."""
    model = make_model()
    opt = tn.optim.Adam(model.parameters())
    history = tn.History([{"epoch": 1, "train_loss": 1.0}])
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in opt.state_dict().items()})
    arrays.update({"step/3": np.array(7), "epoch": np.array(1), "loader_epoch": np.array(1),
                   "history": np.array(history.to_json())})
    np.savez(tmp_path / "old.npz", **arrays)
    other = make_model()
    epoch, restored, loader_epoch = load_checkpoint(tmp_path / "old.npz", other,
                                                    tn.optim.Adam(other.parameters()))
    assert (epoch, loader_epoch, other[3].step) == (1, 1, 7)
    assert restored.records == history.records


def test_bad_checkpoint_changes_nothing(tmp_path, rng):
    x, y = blobs(rng, n=64)
    model = make_model()
    opt = tn.optim.Adam(model.parameters())
    ckpt = tmp_path / "ckpt.safetensors"
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=1, checkpoint=ckpt,
           progress=False)
    other = tn.Sequential(tn.Dense(6, 16), tn.BatchNorm(16), tn.ReLU(), tn.Dropout(0.1, seed=3),
                          tn.Dense(16, 3))
    sgd = tn.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)  # a different optimizer state
    before = other.state_dict()
    with pytest.raises(KeyError, match="ckpt.safetensors"):
        load_checkpoint(ckpt, other, sgd)
    for k, v in before.items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)


def test_history_keeps_every_step(rng):
    x, y = blobs(rng, n=100)
    model = make_model()
    opt = tn.optim.SGD(model.parameters(), lr=0.1)
    sched = tn.optim.StepLR(opt, step_size=2, gamma=0.5)
    history = tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=2, batch_size=32,
                     scheduler=sched, progress=False)
    for r in history.records:
        assert len(r["step_loss"]) == len(r["step_lr"]) == 4  # ceil(100 / 32)
        sizes = [32, 32, 32, 4]
        mean = sum(l * n for l, n in zip(r["step_loss"], sizes)) / 100
        assert mean == pytest.approx(r["train_loss"])
    assert history.records[0]["step_lr"] == [0.1, 0.1, 0.05, 0.05]
    assert history.records[1]["step_lr"] == [0.025, 0.025, 0.0125, 0.0125]
    assert tn.History.from_json(history.to_json()).records == history.records


def test_progress_bar_off_the_terminal(rng, capsys):
    """stderr is captured (not a terminal): the bar stays quiet, the epoch line shows."""
    x, y = blobs(rng, n=64)
    model = make_model()
    tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.Adam(model.parameters()), (x, y),
           epochs=1, progress=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoch 1: train loss" in err and "samples/s" in err
    assert "\r" not in err and "img/s" not in err


def test_progress_bar_on_a_terminal_shows_throughput_and_eta(monkeypatch):
    from tinynet.train import _progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.delenv("CI", raising=False)
    with _progress_bar(100, "epoch 1/1", True) as bar:
        for _ in range(5):
            bar.update(10)
        bar.refresh()  # tqdm redraws at most every 0.1 s; force one now
    text = term.getvalue()
    assert "epoch 1/1" in text and "img/s" in text and "50.0/100" in text
    assert "<" in text.split("50.0/100")[-1], "the ETA follows the elapsed time"
    term.truncate(0)
    monkeypatch.setenv("CI", "1")
    with _progress_bar(100, "epoch 1/1", True) as bar:
        bar.update(100)
    with _progress_bar(100, "epoch 1/1", False) as bar:
        bar.update(100)
    assert term.getvalue().strip("\x00") == "", "quiet in CI and with progress=False"


def test_predict_restores_mode_and_gives_probabilities(rng):
    x, y = blobs(rng, n=50)
    model = make_model()
    model[3].train()
    model[1].eval()  # a mixed mode must come back as it was
    p = tn.predict(model, x, batch_size=16)
    assert p.shape == (50, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert [layer.training for layer in model] == [True, False, True, True, True]
    model.eval()
    logits = model.forward(x).astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, expected / expected.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        tn.predict(model, x, batch_size=0)


def test_tta_views_are_exact_shifts():
    from tinynet.train import tta_views
    x = np.arange(2 * 1 * 4 * 5, dtype=np.float32).reshape(2, 1, 4, 5)
    views = tta_views((4, 5), shift=1, hflip=True)
    assert len(views) == 6
    identity, up, down, left, right, flip = (v(x) for v in views)
    np.testing.assert_array_equal(identity, x)
    np.testing.assert_array_equal(up[..., :-1, :], x[..., 1:, :])     # out[r] = x[r + 1]
    assert not up[..., -1, :].any()
    np.testing.assert_array_equal(down[..., 1:, :], x[..., :-1, :])
    np.testing.assert_array_equal(left[..., :, :-1], x[..., :, 1:])
    np.testing.assert_array_equal(right[..., :, 1:], x[..., :, :-1])
    np.testing.assert_array_equal(flip, x[..., ::-1])
    flat = x.reshape(2, 20)
    np.testing.assert_array_equal(views[2](flat), down.reshape(2, 20))
    assert len(tta_views(shift=0)) == 1


def test_evaluate_with_tta_averages_view_probabilities(rng):
    from tinynet.train import tta_views
    x = rng.standard_normal((40, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    tn.init.seed(0)
    model = tn.Sequential(tn.Conv2D(1, 2, 3, padding=1), tn.ReLU(), tn.Flatten(),
                          tn.Dense(50, 3))
    views = tta_views((5, 5), shift=1)
    loss, acc = tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y), batch_size=16, tta=views)
    p = np.mean([tn.predict(model, v(x)) for v in views], axis=0)
    assert acc == pytest.approx(np.mean(p.argmax(1) == y))
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(40), y])))
    plain = tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y), tta=views[:1])
    assert plain == pytest.approx(tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y)))
    with pytest.raises(TypeError, match="tta"):
        tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y), tta=[])


def test_fit_rejects_bad_arguments(rng):
    x, y = blobs(rng, n=32)
    model = make_model()
    with pytest.raises(ValueError, match="epochs"):
        tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.Adam(model.parameters()), (x, y),
               epochs=0)
    with pytest.raises(TypeError, match="DataLoader"):
        tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.Adam(model.parameters()), x)


@pytest.mark.parametrize("change", ["seed", "model", "lr", "batch_size", "fewer_epochs"])
def test_fit_resume_refuses_another_run(tmp_path, rng, change):
    """resume=True continues only the run that wrote the checkpoint (more epochs allowed)."""
    from tinynet.checkpoint import ResumeMismatch
    x, y = blobs(rng, n=64)
    ckpt = tmp_path / "ckpt.safetensors"

    def run(epochs=2, seed=5, lr=0.05, batch_size=16, dropout_seed=1):
        tn.init.seed(0)
        model = tn.Sequential(tn.Dense(6, 8), tn.ReLU(), tn.Dropout(0.1, seed=dropout_seed),
                              tn.Dense(8, 3))
        opt = tn.optim.SGD(model.parameters(), lr=lr)
        return tn.fit(model, tn.SoftmaxCrossEntropy(), opt,
                      tn.data.DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed),
                      epochs=epochs, checkpoint=ckpt, resume=True, progress=False)

    run()
    before = ckpt.read_bytes()
    changed = {"seed": {"seed": 6}, "model": {"dropout_seed": 2}, "lr": {"lr": 0.1},
               "batch_size": {"batch_size": 32}, "fewer_epochs": {"epochs": 1}}[change]
    with pytest.raises(ResumeMismatch, match="cannot resume: the run differs") as err:
        run(**changed)
    assert {"seed": "data.seed: checkpoint 5, now 6", "model": "architecture.config.layers",
            "lr": "optimizer.lr: checkpoint 0.05, now 0.1",
            "batch_size": "data.batch_size: checkpoint 16, now 32",
            "fewer_epochs": "epochs: checkpoint 2, now 1"}[change] in str(err.value)
    assert ckpt.read_bytes() == before
    assert len(run(epochs=3)) == 3, "a longer run of the same settings continues"
