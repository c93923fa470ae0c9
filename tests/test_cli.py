"""The tinynet command: gradcheck table, train with outputs and --resume."""
import json
import os

import pytest

from conftest import REPO
from tinynet.cli import main

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
needs_mnist = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                 reason="the real MNIST is not in ../shared/data/mnist")


def test_gradcheck_every_layer(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "17/17 layers passed" in out
    assert "FAIL" not in out
    for name in ("Conv2D", "BatchNorm", "GroupNorm", "Dropout", "GELU"):
        assert name in out


def test_gradcheck_one_layer_and_unknown(capsys):
    assert main(["gradcheck", "--layer", "GroupNorm"]) == 0
    assert "1/1 layers passed" in capsys.readouterr().out
    assert main(["gradcheck", "--layer", "Nope"]) == 2


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--data-dir", str(tmp_path), "--quiet", "--epochs", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "tinynet: error" in err and str(tmp_path) in err


@needs_mnist
def test_train_writes_outputs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", SHARED_DATA, "--model", "mlp", "--limit", "2000",
            "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["test_acc"] > 0.8
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors", "config.json", "curves.png",
                                       "history.json"]
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["norm"], config["dataset"]) == ("mlp", "batch", "mnist")
    assert main(args[:-3] + ["--epochs", "2", "--out", str(out), "--quiet", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]


@needs_mnist
def test_resume_of_a_finished_run_rewrites_its_outputs(tmp_path, capsys):
    """A kill between the last checkpoint and history.json: --resume brings them in line."""
    out = tmp_path / "run"
    args = ["train", "--data-dir", SHARED_DATA, "--model", "mlp", "--limit", "500",
            "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    (out / "history.json").unlink()
    (out / "curves.png").unlink()
    assert main(args + ["--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1] and (out / "curves.png").exists()


def test_resume_picks_an_older_npz_checkpoint(tmp_path):
    from tinynet.cli import _run_checkpoint
    assert _run_checkpoint(str(tmp_path), True) == str(tmp_path / "checkpoint.safetensors")
    (tmp_path / "checkpoint.npz").write_bytes(b"")
    assert _run_checkpoint(str(tmp_path), True) == str(tmp_path / "checkpoint.npz")
    assert _run_checkpoint(str(tmp_path), False) == str(tmp_path / "checkpoint.safetensors")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    assert _run_checkpoint(str(tmp_path), True) == str(tmp_path / "checkpoint.safetensors")


def test_study_subcommand_is_wired():
    from tinynet.study import cli as study_cli
    from tinynet.cli import make_parser
    args = make_parser().parse_args(["study", "lr", "--quick", "--workers", "1"])
    assert args.func is study_cli.main
    assert (args.name, args.quick, args.workers) == ("lr", True, 1)


def test_a_command_backend_does_not_outlive_the_command(tmp_path):
    import tinynet as tn
    before = tn.backend_name()
    assert main(["eval", str(tmp_path / "nope"), "--backend", "ref"]) == 1
    assert tn.backend_name() == before
