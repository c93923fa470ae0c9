"""tinynet.warmup: it fills the compile cache so that the next training step
(and evaluation) compiles nothing, a second warmup loads from the cache and
starts no process, ``tinynet info`` then reports every warmed kernel as
cached; it leaves the model unchanged and rejects bad arguments;
``warmup_models`` and ``tinynet warmup`` run it for the train models."""
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO
from tinynet.cli import main
from tinynet.warmup import warmup, warmup_models

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
import json
from tinynet.warmup import warmup
print(json.dumps(warmup(model, x, loss_fn, tn.optim.Adam, workers=2)))
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
model.eval()  # evaluation, at another batch size
model.forward(np.random.default_rng(1).standard_normal((9, 1, 6, 6)).astype(np.float32))
print(json.dumps(sorted(k for k in timer.per_kernel() if k.startswith("tinynet."))))
"""


def _env(cache_dir):
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _python(code, cache_dir):
    out = subprocess.run([sys.executable, "-c", code], env=_env(cache_dir), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _tinynet(args, cache_dir):
    """Run the command ``tinynet ARGS`` with the cache in cache_dir: (stdout, wall seconds)."""
    t0 = time.perf_counter()
    command = "import sys; from tinynet.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", command, *args], env=_env(cache_dir),
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout, time.perf_counter() - t0


def test_step_after_warmup_compiles_nothing(tmp_path):
    # Control: with an empty cache the step compiles tinynet kernels.
    assert json.loads(_python(STEP, tmp_path / "cold"))
    first = json.loads(_python(WARM, tmp_path / "warm"))
    assert first["workers"] == 2 and first["compiled"] == first["groups"] - 1  # Flatten: no kernel
    assert json.loads(_python(STEP, tmp_path / "warm")) == []
    # A second warmup loads every kernel from the cache, in this process only.
    second = json.loads(_python(WARM, tmp_path / "warm"))
    assert second["compiled"] == 0 and second["workers"] == 1
    info = json.loads(_tinynet(["info", "--json"], tmp_path / "warm")[0])["kernel_cache"]
    warmed = info["warmup"]
    assert info["state"] == "warm", info
    assert warmed["signatures"] >= warmed["kernels"] > 10 and warmed["missing"] == []
    assert warmed["cached"] == warmed["signatures"]
    assert warmed["kernels"] <= info["cached"] < info["kernels"]


@pytest.mark.integration
def test_tinynet_warmup_then_info_and_a_second_warmup(tmp_path):
    """`tinynet warmup --model cnn` (every norm) into a fresh cache; then
    `tinynet info --json` finds every signature it compiled in the cache, and a
    second `tinynet warmup` takes less than half the first's time. (One model
    keeps the test's compile time in bounds; --model all runs the same code.)"""
    cache = tmp_path / "cache"
    before = json.loads(_tinynet(["info", "--json"], cache)[0])["kernel_cache"]
    assert before["state"] == "not warmed up" and before["warmup"]["signatures"] == 0
    _, first = _tinynet(["warmup", "--model", "cnn"], cache)
    info = json.loads(_tinynet(["info", "--json"], cache)[0])["kernel_cache"]
    warmed = info["warmup"]
    assert info["state"] == "warm", info
    assert warmed["cached"] == warmed["signatures"] > 30 and warmed["missing"] == []
    out, second = _tinynet(["warmup", "--model", "cnn"], cache)
    assert second < 0.5 * first, (first, second, out)


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
    assert report == {"seconds": 0.0, "workers": 0, "backend": "ref", "groups": 0, "compiled": 0}


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_warmup_rejects_bad_workers(workers):
    with tn.use_backend("cpu"), pytest.raises(ValueError, match="warmup: workers"):
        warmup(_small_model(), np.ones((4, 6), np.float32), workers=workers)


def test_cli_warmup(capsys):
    assert main(["warmup", "--model", "mlp", "--norm", "none", "--workers", "1",
                 "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "mlp norm=none:" in out and "kernels cached in" in out


def test_warmup_models_prints_one_line_per_model_and_norm():
    out = io.StringIO()
    seconds = warmup_models(("mlp",), ("none", "layer"), batch_size=8, workers=1, out=out)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["mlp norm=none", "mlp norm=layer"]
    assert all("kernel groups" in line for line in lines)
    assert seconds > 0


@pytest.mark.parametrize("models,norms,match", [(("vgg",), ("none",), "unknown model 'vgg'"),
                                                (("mlp",), ("weight",), "unknown norm 'weight'")])
def test_warmup_models_rejects_unknown_names(models, norms, match):
    with pytest.raises(ValueError, match=match):
        warmup_models(models, norms, out=io.StringIO())
