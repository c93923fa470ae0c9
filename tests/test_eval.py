"""tinynet eval: metrics and figures of a trained run; tn.predict underneath."""
import json
import os

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO
from tinynet.cli import main
from tinynet.zoo import build as build_zoo


def build_model(config):
    return build_zoo(config["model"], config["norm"])

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
needs_mnist = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                 reason="the real MNIST is not in ../shared/data/mnist")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 1-epoch CNN run on 1000 MNIST images."""
    if not os.path.isdir(os.path.join(SHARED_DATA, "mnist")):
        pytest.skip("the real MNIST is not in ../shared/data/mnist")
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data-dir", SHARED_DATA, "--limit", "1000", "--epochs", "1",
                 "--val-split", "500", "--test-limit", "500", "--out", str(out), "--quiet",
                 "--overwrite"]) == 0
    return out


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@needs_mnist
def test_eval_run_dir_metrics_match_predict(run_dir, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data-dir", SHARED_DATA, "--limit", "600"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    # the same numbers, computed independently from the checkpoint
    config = json.loads((run_dir / "config.json").read_text())
    model = build_model(config)
    tn.checkpoint.load_checkpoint(run_dir / "checkpoint.safetensors", model)
    images, labels = tn.data.load_mnist("test", root=SHARED_DATA)
    x = tn.data.prepare_images(images[:600])
    loss, acc = tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, labels[:600]))
    assert result["test_acc"] == pytest.approx(acc)
    assert result["test_loss"] == pytest.approx(loss, rel=1e-4)
    assert result["tta"] is False
    saved = json.loads((run_dir / "eval.json").read_text())
    confusion = np.array(saved["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 600
    assert np.trace(confusion) / 600 == pytest.approx(acc)
    for k in range(10):
        rate = confusion[k, k] / confusion[k].sum()
        assert saved["per_class_acc"][str(k)] == pytest.approx(rate)
        assert f"({confusion[k, k]}/{confusion[k].sum()})" in out
    for name in ("confusion", "misclassified", "filters", "feature_maps"):
        path = run_dir / f"{name}.png"
        assert path.read_bytes()[:8] == PNG, name
        assert saved["figures"][name] == str(path)


@needs_mnist
def test_eval_checkpoint_file_with_tta(run_dir, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir / "checkpoint.safetensors"), "--data-dir", SHARED_DATA,
                 "--limit", "30", "--tta", "--backend", "ref"]) == 0
    result = last_json(capsys)
    assert result["tta"] is True
    config = json.loads((run_dir / "config.json").read_text())
    model = build_model(config)
    tn.checkpoint.load_checkpoint(run_dir / "checkpoint.safetensors", model)
    images, labels = tn.data.load_mnist("test", root=SHARED_DATA)
    x = tn.data.prepare_images(images[:30])
    views = tn.train.tta_views((28, 28), shift=1, hflip=False)
    p = tn.predict(model, x, tta=views)
    assert result["test_acc"] == pytest.approx(np.mean(p.argmax(1) == labels[:30]))
    saved = json.loads((run_dir / "eval-tta.json").read_text())
    assert saved["figures"]["confusion"] == str(run_dir / "confusion-tta.png")
    assert (run_dir / "misclassified-tta.png").read_bytes()[:8] == PNG


@needs_mnist
def test_eval_model_file_beside_a_config(run_dir, tmp_path, capsys):
    model = tn.load_model(run_dir)
    model.save(tmp_path / "model.npz")
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "model.npz"), "--data-dir", SHARED_DATA,
                 "--limit", "200"]) == 0
    assert 0.0 <= last_json(capsys)["test_acc"] <= 1.0
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


@needs_mnist
def test_eval_a_model_built_in_python_needs_no_config(tmp_path, capsys):
    """A model saved by model.save carries its architecture: eval needs no code or config."""
    tn.init.seed(0)
    model = tn.Sequential(tn.Flatten(), tn.Dense(784, 32), tn.ReLU(),
                          tn.Residual(tn.Sequential(tn.Dense(32, 32), tn.ReLU())),
                          tn.Dense(32, 10))
    model.save(tmp_path / "mine.safetensors")
    images, labels = tn.data.load_mnist("test", root=SHARED_DATA)
    expected = tn.predict(model, tn.data.prepare_images(images[:100], flatten=True))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "mine.safetensors"), "--data-dir", SHARED_DATA,
                 "--limit", "100", "--no-plots"]) == 0
    result = last_json(capsys)
    assert result["test_acc"] == pytest.approx(np.mean(expected.argmax(1) == labels[:100]))
    assert os.listdir(tmp_path) == ["mine.safetensors"], "--no-plots writes nothing"


@needs_mnist
def test_eval_prints_metrics_before_figures_and_takes_a_plots_dir(run_dir, tmp_path, capsys):
    plots = tmp_path / "plots"
    assert main(["eval", str(run_dir), "--data-dir", SHARED_DATA, "--limit", "50",
                 "--plots-dir", str(plots)]) == 0
    out = capsys.readouterr().out
    assert out.index("accuracy") < out.index("confusion:")
    assert sorted(os.listdir(plots)) == ["confusion.png", "eval.json", "feature_maps.png",
                                         "filters.png", "misclassified.png"]


def test_eval_errors_name_what_is_missing(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 1
    assert "no checkpoint.safetensors" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    from tinynet.serialization import write_tensors
    write_tensors(tmp_path / "m.safetensors", tn.Sequential(tn.Dense(784, 10)).state_dict())
    assert main(["eval", str(tmp_path / "m.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "holds no architecture" in err and err.count("\n") == 1


def test_conv_feature_maps_follow_each_block(rng):
    from tinynet.cli import _conv_feature_maps
    model = build_model({"model": "cnn", "norm": "batch"}).eval()
    maps, names = _conv_feature_maps(model, rng.standard_normal((1, 1, 28, 28)).astype(np.float32))
    assert [m.shape for m in maps] == [(32, 28, 28), (64, 14, 14)]
    assert names == ["Conv2D-BatchNorm-ReLU"] * 2
    assert (maps[0] >= 0).all(), "after the ReLU"
