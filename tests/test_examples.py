"""The examples run end to end on a slice of the real MNIST."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                reason="the real MNIST is not in ../shared/data/mnist")


def run_example(name, args, cwd):
    env = dict(os.environ, TINYNET_DATA_DIR=os.path.abspath(SHARED_DATA), PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, os.path.join(REPO, "examples", name)] + args,
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_mnist_cnn_example(tmp_path):
    out = run_example("mnist_cnn.py", ["--epochs", "1", "--limit", "4096"], tmp_path)
    acc = float(re.search(r"test acc ([0-9.]+)%", out).group(1))
    assert acc > 80.0, out
    assert (tmp_path / "mnist_cnn.npz").exists()


def test_mnist_mlp_example(tmp_path):
    out = run_example("mnist_mlp.py", ["--epochs", "1", "--limit", "2048"], tmp_path)
    acc = float(re.search(r"test accuracy: ([0-9.]+)%", out).group(1))
    assert acc > 80.0, out


def test_seeds_example_tabulates_and_continues(tmp_path):
    args = ["--seeds", "0", "1", "--out", "runs", "--figure", "f.png", "--", "--model", "mlp",
            "--limit", "256", "--val-split", "128", "--test-limit", "128", "--epochs", "1"]
    out = run_example("seeds.py", args, tmp_path)
    errors = [float(e) for e in re.findall(r"^\s+\d\s+[0-9.]+%\s+([0-9.]+)%", out, flags=re.M)]
    assert len(errors) == 2
    mean = re.search(r"test error ([0-9.]+)% \+- ([0-9.]+)%", out)
    assert abs(float(mean.group(1)) - sum(errors) / 2) < 0.01
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    again = run_example("seeds.py", args, tmp_path)  # finished runs are only reported

    def table(text):
        return text[text.index("seed  "):]
    assert table(again) == table(out)
