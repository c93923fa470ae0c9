"""tinynet.warmup: it fills the compile cache so that the next training step
compiles nothing, leaves the model unchanged, and rejects bad arguments;
``tinynet warmup`` runs it for the train models."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO
from tinynet.cli import main
from tinynet.warmup import warmup

SMALL_MODEL = """
import numpy as np, tinynet as tn
tn.set_backend("cpu")
tn.init.seed(0)
model = tn.Sequential(tn.Conv2D(1, 4, 3, padding=1), tn.BatchNorm(4), tn.ReLU(),
                      tn.MaxPool2D(2), tn.Flatten(), tn.Dense(4 * 3 * 3, 3))
model.requires_input_grad = False
x = np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
loss_fn = tn.SoftmaxCrossEntropy()
"""

WARM = SMALL_MODEL + """
from tinynet.warmup import warmup
print(warmup(model, x, loss_fn, tn.optim.Adam, workers=2)["workers"])
"""

STEP = SMALL_MODEL + """
import json
from kernels.system.latency import CompileTimer
timer = CompileTimer()
opt = tn.optim.Adam(model.parameters())
loss_fn.forward(model.forward(x), np.arange(5) % 3)
model.zero_grad()
model.backward(loss_fn.backward())
opt.step()
print(json.dumps(sorted(k for k in timer.per_kernel() if k.startswith("tinynet."))))
"""


def _python(code, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_step_after_warmup_compiles_nothing(tmp_path):
    # Control: with an empty cache the step compiles tinynet kernels.
    assert json.loads(_python(STEP, tmp_path / "cold"))
    assert _python(WARM, tmp_path / "warm") == "2"
    assert json.loads(_python(STEP, tmp_path / "warm")) == []


def _small_model():
    tn.init.seed(0)
    return tn.Sequential(tn.Dense(6, 5), tn.BatchNorm(5), tn.ReLU(), tn.Dropout(0.5, seed=1),
                         tn.Dense(5, 3))


def test_warmup_leaves_the_model_unchanged():
    model = _small_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.ones((4, 6), np.float32)
    with tn.use_backend("cpu"):
        report = warmup(model, x, tn.SoftmaxCrossEntropy(), tn.optim.Adam, workers=1)
    assert report["backend"] == "cpu" and report["workers"] == 1
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert all(not p.grad.any() for p in model.parameters())


def test_warmup_on_another_backend_compiles_nothing():
    with tn.use_backend("ref"):
        report = warmup(_small_model(), np.ones((4, 6), np.float32))
    assert report == {"seconds": 0.0, "workers": 0, "backend": "ref"}


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_warmup_rejects_bad_workers(workers):
    with tn.use_backend("cpu"), pytest.raises(ValueError, match="warmup: workers"):
        warmup(_small_model(), np.ones((4, 6), np.float32), workers=workers)


def test_cli_warmup(capsys):
    assert main(["warmup", "--model", "mlp", "--norm", "none", "--workers", "1",
                 "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "mlp norm=none:" in out and "kernels cached in" in out
