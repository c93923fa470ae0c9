"""fit / evaluate / checkpoints / progress bar, on small synthetic data."""
import io
import json

import numpy as np
import pytest

import tinynet as tn
from tinynet.train import ProgressBar, load_checkpoint


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


def test_checkpoint_is_plain_arrays(tmp_path, rng):
    x, y = blobs(rng, n=64)
    model = make_model()
    opt = tn.optim.Adam(model.parameters())
    ckpt = tmp_path / "ckpt.npz"
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=1, checkpoint=ckpt,
           progress=False)
    with np.load(ckpt, allow_pickle=False) as f:
        assert "model/0.weight" in f.files and "epoch" in f.files
        assert json.loads(str(f["history"]))[0]["epoch"] == 1
    epoch, history, _ = load_checkpoint(ckpt, make_model())
    assert epoch == 1 and len(history) == 1


def test_progress_bar_reports_throughput():
    out = io.StringIO()
    bar = ProgressBar(20, desc="epoch 1/1", file=out)
    for i in range(1, 21):
        bar.update(i, i * 10, loss=0.5)
    text = out.getvalue()
    assert "samples/s" in text and "20/20" in text and "loss 0.5000" in text
    assert text.count("\n") <= 11, "off a terminal it prints about every 10%"


def test_fit_rejects_bad_arguments(rng):
    x, y = blobs(rng, n=32)
    model = make_model()
    with pytest.raises(ValueError, match="epochs"):
        tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.Adam(model.parameters()), (x, y),
               epochs=0)
    with pytest.raises(TypeError, match="DataLoader"):
        tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.Adam(model.parameters()), x)
