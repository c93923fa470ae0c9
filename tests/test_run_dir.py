"""The run directory's guarantees (tinynet/run.py, docs/architecture.md "The run directory").

Every command here runs as a user runs it, in its own process (`python -m
tinynet`), and is checked for its exact message and exit code. Every refused
command is checked to leave the run directory byte for byte as it was.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO
from tinynet.cli import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, main
from tinynet.run import RunDir

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                reason="the real MNIST is not in ../shared/data/mnist")
BASE = ["train", "--data-dir", SHARED_DATA, "--model", "mlp", "--limit", "400",
        "--val-split", "200", "--test-limit", "200", "--epochs", "1", "--batch-size", "64",
        "--quiet"]


def env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def tinynet(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tinynet", *args], capture_output=True,
                          text=True, env=env(), cwd=REPO, timeout=timeout)


def digest(directory):
    """sha256 over every file's name and bytes under ``directory`` (empty when it is missing)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinynet: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-epoch run (cosine schedule, the defaults but tiny)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    done = tinynet(*BASE, "--out", str(out))
    assert done.returncode == EXIT_OK, done.stderr
    return out


@pytest.mark.parametrize("flag, value, saved", [
    ("--lr", "0.1", "0.002"),
    ("--batch-size", "32", "64"),
    ("--limit", "300", "400"),
    ("--optimizer", "adamw", "adam"),
    ("--seed", "1", "0"),
    ("--shift", "1", "0"),
    ("--weight-decay", "0.01", "0.0"),
    ("--label-smoothing", "0.1", "0.0"),
    ("--dataset", "fashion-mnist", "mnist"),
    ("--norm", "layer", "batch"),
    ("--schedule", "step", "cosine"),
    ("--val-split", "100", "200"),
    ("--test-limit", "100", "200"),
])
def test_resume_refuses_a_changed_setting_and_changes_nothing(finished, flag, value, saved):
    before = digest(finished)
    args = list(BASE) + ["--out", str(finished), "--resume"]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    done = tinynet(*args)
    assert done.returncode == EXIT_REFUSED, done.stderr
    line = one_error_line(done.stderr)
    assert f"cannot resume {finished}: {flag} {value} differs from the run's {saved}" in line
    assert digest(finished) == before


def test_resume_refuses_a_changed_switch(finished):
    before = digest(finished)
    done = tinynet(*BASE, "--out", str(finished), "--resume", "--flip")
    assert done.returncode == EXIT_REFUSED, done.stderr
    assert (f"cannot resume {finished}: --flip is given but the run was trained without it"
            in one_error_line(done.stderr))
    assert digest(finished) == before


def test_a_run_written_before_a_later_setting_resumes(finished, tmp_path):
    """config.json and the checkpoint of a run from before --flip existed lack it."""
    from tinynet.serialization import read_tensors, write_tensors
    old = tmp_path / "old"
    shutil.copytree(finished, old)
    config = json.loads((old / "config.json").read_text())
    del config["flip"]
    (old / "config.json").write_text(json.dumps(config))
    tensors, metadata = read_tensors(old / "checkpoint.safetensors")
    saved = json.loads(metadata["config"])
    assert saved.pop("flip") is False
    write_tensors(old / "checkpoint.safetensors", tensors, dict(metadata, config=json.dumps(saved)))
    done = tinynet(*BASE, "--out", str(old), "--resume")
    assert done.returncode == EXIT_OK, done.stderr
    done = tinynet(*BASE, "--out", str(old), "--resume", "--flip")
    assert "--flip is given but the run was trained without it" in one_error_line(done.stderr)


def test_resume_refuses_more_epochs_under_a_cosine_schedule(finished):
    before = digest(finished)
    done = tinynet(*BASE, "--out", str(finished), "--resume", "--epochs", "3")
    assert done.returncode == EXIT_REFUSED
    assert "--epochs 3 differs from the run's 1 (the cosine schedule spans the run's epochs" \
        in one_error_line(done.stderr)
    assert digest(finished) == before


def test_resume_of_a_finished_run_reports_it_and_rewrites_its_outputs(finished, tmp_path):
    (finished / "history.json").unlink()  # as after a kill between the checkpoint and history
    done = tinynet(*BASE, "--out", str(finished), "--resume")
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 1
    assert [r["epoch"] for r in json.loads((finished / "history.json").read_text())] == [1]


def test_a_new_run_into_a_run_dir_is_refused_unless_overwrite(finished, tmp_path):
    before = digest(finished)
    done = tinynet(*BASE, "--out", str(finished), "--seed", "5")
    assert done.returncode == EXIT_REFUSED
    assert (f"{finished} already holds a run (checkpoint.safetensors, config.json, curves.png, "
            f"history.json, result.json); continue it with --resume, or replace it with "
            f"--overwrite") in one_error_line(done.stderr)
    assert digest(finished) == before

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(finished):
        (copy / name).write_bytes((finished / name).read_bytes())
    (copy / "eval.json").write_text("{}")  # what tinynet eval left there
    (copy / "confusion.png").write_bytes(b"old")
    (copy / "notes.txt").write_text("mine")  # not tinynet's: kept
    done = tinynet(*BASE, "--out", str(copy), "--seed", "5", "--overwrite")
    assert done.returncode == EXIT_OK, done.stderr
    assert sorted(os.listdir(copy)) == ["checkpoint.safetensors", "config.json", "curves.png",
                                        "history.json", "notes.txt", "result.json"]
    assert json.loads((copy / "config.json").read_text())["seed"] == 5


def test_resume_without_a_checkpoint(tmp_path):
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    before = digest(stray)
    done = tinynet(*BASE, "--out", str(stray), "--resume")
    assert done.returncode == EXIT_REFUSED
    assert f"--resume: {stray} has no checkpoint to continue (it holds notes.txt)" in \
        one_error_line(done.stderr)
    assert digest(stray) == before
    # an empty or missing directory: nothing to resume, so the run starts
    done = tinynet(*BASE, "--out", str(tmp_path / "fresh"), "--resume")
    assert done.returncode == EXIT_OK, done.stderr


def _weights(run):
    from tinynet.checkpoint import load_checkpoint
    from tinynet.zoo import build
    config = json.loads((run / "config.json").read_text())
    model = build(config["model"], config["norm"])
    load_checkpoint(run / "checkpoint.safetensors", model)
    return model.state_dict()


def test_a_run_killed_in_its_first_checkpoint_write_resumes_from_the_start(finished, tmp_path):
    """Killed while writing its first checkpoint, a run holds its config.json and
    that write's temp file: --resume starts it again, removes the temp file, and
    ends where an uninterrupted run does."""
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(finished / "config.json", killed / "config.json")
    (killed / ".checkpoint.safetensors.x1y2z3.tmp").write_bytes(b"the first bytes")
    (killed / ".history.json.a1b2c3.tmp").write_bytes(b"[")
    done = tinynet(*BASE, "--out", str(killed), "--resume")
    assert done.returncode == EXIT_OK, done.stderr
    assert not [n for n in os.listdir(killed) if n.endswith(".tmp")]
    for key, value in _weights(finished).items():
        np.testing.assert_array_equal(_weights(killed)[key], value, err_msg=key)
    # a stray file beside the temp file is still refused
    (killed / "checkpoint.safetensors").unlink()
    (killed / ".checkpoint.safetensors.q.tmp").write_bytes(b"x")
    (killed / "notes.txt").write_text("x")
    done = tinynet(*BASE, "--out", str(killed), "--resume")
    assert done.returncode == EXIT_REFUSED


def test_extending_a_constant_schedule_equals_the_longer_run(tmp_path):
    """--epochs may grow on --resume when the schedule does not depend on it."""
    args = [a for a in BASE if a not in ("--epochs", "1")] + ["--schedule", "none"]
    short, full = tmp_path / "short", tmp_path / "full"
    assert tinynet(*args, "--epochs", "1", "--out", str(short)).returncode == EXIT_OK
    done = tinynet(*args, "--epochs", "2", "--out", str(short), "--resume")
    assert done.returncode == EXIT_OK, done.stderr
    assert tinynet(*args, "--epochs", "2", "--out", str(full)).returncode == EXIT_OK
    a, b = tn.load_model(short).state_dict(), tn.load_model(full).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((short / "config.json").read_text())["epochs"] == 2


def test_a_second_writer_is_refused_naming_the_holder(finished):
    before = digest(finished)
    holder = RunDir(finished).acquire()
    try:
        holder.mark_holder(["train", "--out", str(finished)])
        held = digest(finished)
        done = tinynet(*BASE, "--out", str(finished), "--resume")
        assert done.returncode == EXIT_REFUSED
        assert (f"{finished} is in use by process {os.getpid()} (tinynet train --out "
                f"{finished}); wait for it to finish, or pick another --out") in \
            one_error_line(done.stderr)
        assert digest(finished) == held
    finally:
        holder.release()
    assert digest(finished) == before, "release removes .lock"


def test_two_concurrent_trains_one_is_refused_and_the_other_is_unharmed(tmp_path):
    out = tmp_path / "run"
    args = [a for a in BASE if a not in ("--epochs", "1")] + ["--epochs", "2", "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-m", "tinynet", *args, "--seed", str(seed)],
                              env=env(), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes == [EXIT_OK, EXIT_REFUSED], results
    winner = next(seed for seed, (_, _, code) in zip((1, 2), results) if code == EXIT_OK)
    loser_err = next(err for _, err, code in results if code == EXIT_REFUSED)
    # The lock holder writes .lock (its pid and command) only after its checks,
    # so a loser that arrives in between is told "another process".
    assert any(reason in loser_err for reason in ("is in use by process",
                                                  "is in use by another process",
                                                  "already holds a run")), loser_err
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == winner
    # the winner's checkpoint is the winner's run: the same weights as that run alone
    alone = tmp_path / "alone"
    assert tinynet(*args[:-2], "--out", str(alone), "--seed", str(winner)).returncode == EXIT_OK
    a, b = tn.load_model(out).state_dict(), tn.load_model(alone).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("tamper, message", [
    ("[1]", "config.json: must be a JSON object, got list"),
    ('"cnn"', "config.json: must be a JSON object, got str"),
    ("num_classes=Infinity", "config.json: num_classes must be 10 (the datasets have 10 "
                             "classes), got inf"),
    ("num_classes=1e12", "config.json: num_classes must be 10 (the datasets have 10 classes), "
                         "got 1000000000000.0"),
    ("epochs=-1", "config.json: epochs must be an int in [1, 10000], got -1"),
])
def test_a_tampered_config_is_one_line_error_and_eval_still_works(finished, tmp_path, tamper,
                                                                   message):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.safetensors", "config.json"):
        (run / name).write_bytes((finished / name).read_bytes())
    if "=" in tamper:
        key, value = tamper.split("=")
        text = (run / "config.json").read_text()
        config = json.loads(text)
        text = text.replace(f'"{key}": {json.dumps(config[key])}', f'"{key}": {value}')
        (run / "config.json").write_text(text)
    else:
        (run / "config.json").write_text(tamper)
    before = digest(run)
    done = tinynet(*BASE, "--out", str(run), "--resume")
    assert done.returncode == EXIT_ERROR
    assert message in one_error_line(done.stderr)
    assert digest(run) == before
    # the checkpoint describes itself: eval reads its own config, not the tampered file
    done = tinynet("eval", str(run), "--data-dir", SHARED_DATA, "--limit", "50", "--no-plots")
    assert done.returncode == EXIT_OK, done.stderr


def test_a_directory_where_the_checkpoint_goes_fails_before_training(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint.safetensors").mkdir(parents=True)
    done = tinynet(*BASE, "--out", str(out), "--overwrite")
    assert done.returncode == EXIT_ERROR
    assert f"{out}/checkpoint.safetensors is a directory" in one_error_line(done.stderr)
    assert "epoch" not in done.stderr


def test_an_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = tinynet(*BASE, "--out", str(blocker / "run"))
    assert done.returncode == EXIT_ERROR
    assert f"{blocker}/run: Not a directory" in one_error_line(done.stderr)


def test_eval_prints_its_metrics_before_a_failing_figure_write(finished, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = tinynet("eval", str(finished), "--data-dir", SHARED_DATA, "--limit", "50",
                   "--plots-dir", str(blocker / "plots"))
    assert done.returncode == EXIT_ERROR
    assert "test loss" in done.stdout and "accuracy" in done.stdout
    assert "Not a directory" in one_error_line(done.stderr)


def test_ctrl_c_says_how_to_continue_and_the_continuation_finishes(tmp_path):
    out = tmp_path / "run"
    args = [a for a in BASE if a not in ("--limit", "400", "--quiet", "--epochs", "1")] + [
        "--limit", "30000", "--epochs", "3", "--out", str(out)]
    # SIGINT's default action, even where this test runs as a background job (whose
    # shell ignores SIGINT, which Python would then keep ignoring)
    proc = subprocess.Popen([sys.executable, "-m", "tinynet", *args], env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the first epoch
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted; continue with: tinynet train ")
    assert last.endswith(" --resume")
    command = last.split("continue with: tinynet ", 1)[1].split()
    done = tinynet(*command)
    assert done.returncode == EXIT_OK, done.stderr


def test_a_bug_shows_a_traceback_and_exit_code_70(monkeypatch, capsys):
    import tinynet.cli as cli

    def broken(args):
        return 1 / 0
    monkeypatch.setattr(cli, "cmd_models", broken)
    assert main(["models"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "a bug in tinynet" in err
