"""The tinynet command: its parser, exit codes, one-line errors, and train's outputs.

The run directory's guarantees (resume, one writer, refusals) are in
tests/test_run_dir.py; crash safety in tests/test_fault.py.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tinynet.cli import EXIT_ERROR, EXIT_USAGE, main, make_parser

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
needs_mnist = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                 reason="the real MNIST is not in ../shared/data/mnist")
TINY = ["--model", "mlp", "--limit", "500", "--val-split", "300", "--test-limit", "300",
        "--epochs", "1", "--quiet"]


def run_tinynet(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tinynet", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


def test_gradcheck_every_layer(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    passed = re.search(r"(\d+)/(\d+) layers passed", out)
    assert passed and passed.group(1) == passed.group(2)
    assert "FAIL" not in out
    for name in ("Conv2D", "BatchNorm", "GroupNorm", "Dropout", "GELU", "WeightNorm",
                 "DropConnect", "MeanOnlyBatchNorm", "RandomAffineNoise"):
        assert name in out


def test_gradcheck_one_layer_any_case_and_unknown(capsys):
    assert main(["gradcheck", "--layer", "groupnorm"]) == 0
    assert "1/1 layers passed" in capsys.readouterr().out
    assert main(["gradcheck", "--layer", "Nope"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("tinynet: error: ") and "Nope" in err and err.count("\n") == 1


def test_version_and_python_dash_m():
    import tinynet
    done = run_tinynet("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"tinynet {tinynet.__version__}"


def test_every_option_shows_its_default_in_help():
    import argparse
    subparsers = next(a for a in make_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "eval", "warmup", "gradcheck", "info"):
        parser = subparsers.choices[command]
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, (command, action.dest)
            entry = " ".join(f"{action.help} (default: {action.default})".split())
            assert entry in text, (command, action.dest)
    train = " ".join(run_tinynet("train", "--help").stdout.split())
    assert "--epochs EPOCHS epochs to train (default: 5)" in train


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "-5", "must be an integer >= 0, got -5"),
    ("--shift", "30", "must be an integer in [0, 13], got 30"),
    ("--epochs", "0", "must be an integer in [1, 10000], got 0"),
    ("--lr", "nan", "must be a number in (0, 10], got nan"),
    ("--lr", "0", "must be a number in (0, 10], got 0"),
    ("--label-smoothing", "1", "must be a number in [0, 1), got 1"),
    ("--batch-size", "x", "must be an integer, got 'x'"),
])
def test_bad_values_are_usage_errors(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args(["train", option, value])
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err


def test_resume_and_overwrite_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_:
        make_parser().parse_args(["train", "--resume", "--overwrite"])
    assert exit_.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_missing_data_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "no-such-dir"
    out = tmp_path / "run"
    code = main(["train", "--data-dir", str(typo), "--out", str(out), *TINY])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("tinynet: error: ") and str(typo) in err and err.count("\n") == 1
    assert not typo.exists() and not out.exists()


def test_info_json_into_a_closed_pipe_has_no_traceback():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(f"{sys.executable} -m tinynet info --json | head -c 10",
                          shell=True, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert done.stdout.startswith("{")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_models_lists_the_zoo_with_parameter_counts(capsys):
    from tinynet import zoo
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, (build, _) in zoo.MODELS.items():
        count = sum(p.size for p in build("batch").parameters())
        assert re.search(rf"^{name}\s+\S+\s+{count:,}$", out, flags=re.M), (name, out)


@needs_mnist
def test_train_writes_a_complete_run(tmp_path, capsys):
    import tinynet as tn
    out = tmp_path / "run"
    assert main(["train", "--data-dir", SHARED_DATA, "--out", str(out), *TINY,
                 "--weight-decay", "0.001", "--label-smoothing", "0.1", "--shift", "1",
                 "--flip"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["test_acc"] > 0.3 and result["val_acc"] > 0.3
    assert result["test_images"] == 300
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors", "config.json", "curves.png",
                                       "history.json", "result.json"]
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["norm"], config["dataset"]) == ("mlp", "batch", "mnist")
    assert (config["weight_decay"], config["label_smoothing"], config["shift"], config["flip"]) \
        == (0.001, 0.1, 1, True)
    assert (config["val_split"], config["limit"], config["test_limit"]) == (300, 500, 300)
    assert config["normalization"] == list(tn.data.NORMALIZATION["mnist"])
    assert config["architecture"]["class"] == "Sequential"
    history = json.loads((out / "history.json").read_text())
    assert history[0]["val_acc"] == result["val_acc"]
    assert json.loads((out / "result.json").read_text())["test_acc"] == result["test_acc"]
    # the run loads without code, as a directory, a checkpoint or a model file
    model = tn.load_model(out)
    model.save(tmp_path / "model.safetensors")
    again = tn.load_model(tmp_path / "model.safetensors")
    for key, value in model.state_dict().items():
        assert (again.state_dict()[key] == value).all()


@needs_mnist
def test_the_validation_set_is_held_out_of_training(tmp_path):
    """--val-split N: N training images, the same for every seed, never trained on."""
    import numpy as np

    from tinynet.cli import _split
    x = np.arange(1000)[:, None].repeat(2, 1)
    y = np.arange(1000)
    (xt, yt), (xv, yv) = _split(x, y, 100)
    assert len(yv) == 100 and len(yt) == 900 and not set(yt) & set(yv)
    assert (np.diff(yt) > 0).all() and (np.diff(yv) > 0).all(), "file order kept"
    (_, yt2), (_, yv2) = _split(x, y, 100)
    assert (yv2 == yv).all(), "the same split every time"
    with pytest.raises(ValueError, match="leaves no training images"):
        _split(x, y, 1000)


def test_study_subcommand_is_wired():
    from tinynet.study import cli as study_cli
    args = make_parser().parse_args(["study", "lr", "--quick", "--workers", "1"])
    assert args.func is study_cli.main
    assert (args.name, args.quick, args.workers) == ("lr", True, 1)


def test_a_command_backend_does_not_outlive_the_command(tmp_path):
    import tinynet as tn
    before = tn.backend_name()
    assert main(["eval", str(tmp_path / "nope"), "--backend", "ref"]) == 1
    assert tn.backend_name() == before


def test_train_augmentation_follows_the_settings():
    from tinynet.cli import _augment
    base = {"shift": 0, "flip": False}
    assert _augment(base, flatten=False) is None
    assert repr(_augment(dict(base, shift=2, flip=True), flatten=False)) == \
        "Compose(RandomShift(2), HorizontalFlip(p=0.5))"
    flat = _augment(dict(base, flip=True), flatten=True)
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 784)
    out = flat(x, np.random.default_rng(0))
    images = x.reshape(2, 28, 28)
    assert out.shape == (2, 784)
    for n in range(2):  # each row is its image or the image mirrored
        row = out[n].reshape(28, 28)
        assert np.array_equal(row, images[n]) or np.array_equal(row, images[n][:, ::-1])


def test_train_compiles_missing_kernels_first_and_says_so(tmp_path, capsys, monkeypatch):
    """On the cpu backend train runs tinynet.warmup before the first step: the run's
    kernels, this model's optimizer and loss included; a cold cache is announced."""
    from tinynet import warmup
    calls = []

    def fake_warmup(model, x, loss_fn, optimizer, eval_batch_size, announce):
        calls.append((x.shape, type(loss_fn).__name__, eval_batch_size,
                      type(optimizer([tn_param()])).__name__))
        announce(3, 10, 2)
        return {"compiled": 3}
    monkeypatch.setattr(warmup, "warmup", fake_warmup)
    args = ["train", "--data-dir", SHARED_DATA, "--out", str(tmp_path / "a"), *TINY,
            "--optimizer", "sgd", "--batch-size", "50"]
    args.remove("--quiet")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert calls == [((50, 784), "SoftmaxCrossEntropy", warmup.EVAL_BATCH_SIZE, "SGD")]
    assert ("compiling kernels (first run only): 3 of 10 kernel groups in 2 processes; "
            "`tinynet warmup` does it ahead of time") in err
    assert "kernels compiled in " in err
    # --quiet: the same work, nothing said
    assert main(args[:-4] + ["--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_train_without_a_writable_cache_compiles_as_it_goes(tmp_path, capsys, monkeypatch):
    from tinynet import warmup

    def no_cache(*args, **kwargs):
        raise RuntimeError("warmup: no directory is writable for the kernel cache")
    monkeypatch.setattr(warmup, "warmup", no_cache)
    args = ["train", "--data-dir", SHARED_DATA, "--out", str(tmp_path / "a"), *TINY]
    args.remove("--quiet")
    assert main(args) == 0
    assert ("kernels compile during the first step (warmup: no directory is writable for "
            "the kernel cache)") in capsys.readouterr().err


def tn_param():
    from tinynet.parameter import Parameter
    return Parameter(np.zeros(3, np.float32))
