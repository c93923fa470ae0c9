"""Crash safety: `tinynet train` killed with SIGKILL at random moments, then resumed.

What is guaranteed (docs/architecture.md, "After a crash"):
- the checkpoint path always holds a complete checkpoint that loads (the one
  of the last finished epoch), never a partial file;
- a kill during a write can leave only a temp file named .<name>.<random>.tmp
  beside it, which the next `tinynet train` (or `fit` with that checkpoint)
  deletes before it writes anything;
- `--resume` finishes the run with each epoch recorded once and the same
  weights, bit for bit, as a run that was never interrupted.

Half of the kills land inside a checkpoint write: those runs go through a
wrapper that slows every checkpoint write down (it writes part of the file,
sleeps, then writes it whole), and are killed while its temp file exists.
"""
import fnmatch
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from tinynet.checkpoint import load_checkpoint
from tinynet.run import RUN_FILES
from tinynet.zoo import build

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                reason="the real MNIST is not in ../shared/data/mnist")
EPOCHS = 6
KILLS = 8
ARGS = ["train", "--data-dir", SHARED_DATA, "--model", "mlp", "--limit", "6000",
        "--val-split", "500", "--test-limit", "500", "--batch-size", "32", "--shift", "1",
        "--epochs", str(EPOCHS), "--seed", "3", "--quiet"]
TRAIN = [sys.executable, "-m", "tinynet"] + ARGS
# `tinynet train` whose checkpoint writes each take a while: part of the file, a pause, the rest
SLOW_WRITES = r"""
import sys, time
from tinynet import serialization
from tinynet.cli import main

real = serialization.atomic_write
def slow(target, write):
    def paused(f):
        if "checkpoint" in str(target):
            f.write(b"the first bytes of a checkpoint")
            f.flush()
            time.sleep(0.5)
            f.seek(0)
            f.truncate()
        write(f)
    real(target, paused)
serialization.atomic_write = slow
sys.exit(main(sys.argv[1:]))
"""
SLOW_TRAIN = [sys.executable, "-c", SLOW_WRITES] + ARGS


def env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(out, *extra, timeout=300):
    return subprocess.run(TRAIN + ["--out", str(out), *extra], env=env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def temp_files(out):
    return [f for f in os.listdir(out) if fnmatch.fnmatch(f, ".*.tmp")]


def training(out, pid):
    """True once process ``pid`` holds the run (its checks passed; it is training)."""
    try:
        return json.loads((out / ".lock").read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def checkpoint_temp(out):
    return any(f.startswith(".checkpoint.") for f in temp_files(out)) if out.exists() else False


def weights(out):
    config = json.loads((out / "config.json").read_text())
    model = build(config["model"], config["norm"])
    epoch, history, _ = load_checkpoint(out / "checkpoint.safetensors", model)
    return model.state_dict(), epoch, history


def epochs_done(out):
    try:
        return len(json.loads((out / "history.json").read_text()))
    except (FileNotFoundError, ValueError):
        return 0


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    done = run(reference)
    assert done.returncode == 0, done.stderr
    expected, _, history = weights(reference)
    epoch_time = min(r["seconds"] for r in history.records)

    out = tmp_path / "killed"
    seed = int(os.environ.get("TINYNET_FAULT_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    kills = in_write = attempts = 0
    # A run that finishes before its kill (the machine is shared, so an epoch can
    # be quicker than the reference's) would leave nothing for the kills after it:
    # the run then starts again from nothing, up to 3 * KILLS attempts in all.
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        if epochs_done(out) >= EPOCHS:
            shutil.rmtree(out)
        # kill in the epoch after the ones done, or the one after that (never after the
        # last), at a random moment; every other kill while its checkpoint write is under way
        target = min(epochs_done(out) + rng.randrange(2), EPOCHS - 1)
        during_write = kills % 2 == 1
        proc = subprocess.Popen((SLOW_TRAIN if during_write else TRAIN) + [
            "--out", str(out), "--resume"], env=env(), cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (training(out, proc.pid)
                                           and epochs_done(out) >= target):
            time.sleep(0.002)
        if during_write:
            while proc.poll() is None and not checkpoint_temp(out):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.4))
        else:
            time.sleep(rng.uniform(0, 0.8 * epoch_time))
        if proc.poll() is None:
            in_write += during_write and checkpoint_temp(out)
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if not out.exists():
            continue
        # only the run's own files, its lock, or the temp file of a write the kill cut short
        unknown = set(os.listdir(out)) - set(RUN_FILES) - {".lock"} - set(temp_files(out))
        assert not unknown, (unknown, f"TINYNET_FAULT_SEED={seed}")
        if (out / "checkpoint.safetensors").exists():
            state, epoch, history = weights(out)  # it loads
            assert [r["epoch"] for r in history.records] == list(range(1, epoch + 1))
    assert kills >= KILLS // 2, f"only {kills} of {attempts} runs were killed before they " \
                                f"finished (seed {seed})"
    assert in_write >= 1, f"no kill landed inside a checkpoint write (seed {seed})"

    resumed = run(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert temp_files(out) == [], "the resumed run removes what the kills left"
    state, epoch, history = weights(out)
    assert epoch == EPOCHS
    assert [r["epoch"] for r in history.records] == list(range(1, EPOCHS + 1))
    saved = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in saved] == list(range(1, EPOCHS + 1))
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


KILL_DURING_WRITE = r"""
import os, sys, time
import numpy as np
import tinynet as tn
from tinynet import serialization

path = sys.argv[1]
model = tn.Sequential(tn.Dense(4, 3))
model.save(path)                     # a complete first version
print("saved", flush=True)

real = serialization.atomic_write
def slow(target, write):
    def half(f):
        f.write(b"partial bytes of a new version")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)               # killed here
        write(f)
    real(target, half)
serialization.atomic_write = slow
model[0].weight.data[...] = 7.0
model.save(path)
"""


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_kill_during_a_write_keeps_the_old_file(tmp_path, ext):
    import tinynet as tn
    path = tmp_path / f"ckpt{ext}"
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_WRITE, str(path)], env=env(),
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saved"
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".ckpt{ext}.")
    model = tn.Sequential(tn.Dense(4, 3)).load(path)   # the old version, complete
    assert not (model[0].weight.data == 7.0).any()
    from tinynet.serialization import remove_stale_temps
    assert remove_stale_temps(path) == [str(tmp_path / leftovers[0])]
    assert os.listdir(tmp_path) == [path.name]
