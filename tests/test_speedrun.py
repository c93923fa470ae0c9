"""The speedrun recipe (tinynet/speedrun.py, ``tinynet speedrun``) and its bench
against torch (kernels/speedrun.py): the model against its torch twin, a short
run on a slice of MNIST, the command line, and the bench's table."""
import json
import math
import os

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO, assert_close
from kernels import speedrun as bench
from tinynet import speedrun, zoo

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")


def _slice(n_train=1024, n_test=200):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train + n_test, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n_train + n_test).astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def test_the_recipe_is_the_public_one():
    r = speedrun.RECIPE
    assert (r["batch_size"], r["epochs"], r["lr"], tuple(r["betas"])) == (256, 1, 0.01, (0.7, 0.9))
    assert (r["pct_start"], r["div_factor"], r["final_div_factor"]) == (0.3, 25.0, 1e4)
    model = zoo.build("speedrun", "none")
    assert [type(m).__name__ for m in model.layers] == [
        "Conv2D", "MaxPool2D", "ReLU", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dense",
        "ReLU", "Dense"]
    assert all(m.init == "torch" for m in model.layers if isinstance(m, (tn.Conv2D, tn.Dense)))
    assert sum(p.size for p in model.parameters()) == 215_194


def test_the_model_matches_the_benchs_torch_model():
    torch = pytest.importorskip("torch", reason="the torch side of the bench needs torch")
    model = zoo.build("speedrun", "none").to(np.float64)
    twin = bench.torch_model(torch).double()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28))
    dy = np.random.default_rng(2).standard_normal((3, 10))
    y = model.forward(x)
    model.zero_grad()
    model.backward(dy)
    yt = twin(torch.from_numpy(x))
    yt.backward(torch.from_numpy(dy))
    assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10, what="y")
    for (key, p), (tkey, tp) in zip(model.named_parameters(), twin.named_parameters()):
        assert key == tkey
        assert_close(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-10, what=key)


def test_a_run_is_a_function_of_its_seed():
    train, test = _slice()
    a = speedrun.train_speedrun(3, train, test)
    b = speedrun.train_speedrun(3, train, test)
    c = speedrun.train_speedrun(4, train, test)
    assert a["steps"] == math.ceil(1024 / 256) == 4
    assert 0 <= a["test_acc"] <= 1 and 0 < a["first_step_s"] <= a["train_s"]
    assert (a["final_loss"], a["test_acc"]) == (b["final_loss"], b["test_acc"])
    assert a["final_loss"] != c["final_loss"]


def test_the_one_cycle_runs_exactly_one_epoch(monkeypatch):
    """The schedule spans the epoch's steps, the short last batch included: one
    step more would raise in OneCycleLR."""
    seen = []
    train, test = _slice(n_train=1000)
    speedrun.train_speedrun(0, train, test, progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_command_line_prints_each_seed(monkeypatch, capsys):
    from tinynet.cli import main
    monkeypatch.setattr(speedrun, "load_data", lambda data_dir=None: _slice())
    assert main(["speedrun", "--seeds", "0", "1", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["seed"] for r in lines] == [0, 1] and all(r["steps"] == 4 for r in lines)
    assert main(["speedrun", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 0: test accuracy ") and "(4 steps, cpu)" in out


def test_bench_table_and_summary(monkeypatch, capsys):
    fake = {"tinynet": [2.0, 3.0, 4.0], "torch": [4.0, 5.0, 8.0]}
    monkeypatch.setattr(bench, "run_tinynet", lambda seed, d=None, device="cpu": {
        "seed": seed, "train_s": fake["tinynet"][seed], "test_acc": 0.99})
    monkeypatch.setattr(bench, "run_torch", lambda seed, d=None, device="cpu": {
        "seed": seed, "train_s": fake["torch"][seed], "test_acc": 0.985 + 0.005 * seed})
    rows = bench.bench(3)
    s = bench.summary(rows)
    assert s["tinynet"]["median_train_s"] == 3.0 and s["torch"]["median_train_s"] == 5.0
    assert s["ratio"] == pytest.approx(0.6)
    assert s["torch"]["mean_test_acc"] == pytest.approx(0.99)
    assert s["torch"]["min_test_acc"] == pytest.approx(0.985)
    bench.print_summary(s)
    out = capsys.readouterr().out
    assert "seed   1  tinynet    3.00 s  99.00%   torch    5.00 s  99.00%   ratio 0.60" in out
    assert "ratio of the medians (tinynet / torch): 0.60" in out
    alone = bench.summary(bench.bench(2, torch=False, say=lambda line: None))
    assert "torch" not in alone and "ratio" not in alone
    table = bench.markdown(rows, s).splitlines()
    assert table[0].startswith("| seed | tinynet s |") and len(table) == 2 + 3 + 1
    assert table[3] == "| 1 | 3.00 | 99.00% | 5.00 | 99.00% | 0.60 |"
    assert table[-1] == "| median / mean | 3.00 | 99.00% | 5.00 | 99.00% | 0.60 |"
    lone = bench.markdown(bench.bench(1, torch=False, say=lambda line: None), alone)
    assert lone.splitlines()[2] == "| 0 | 2.00 | 99.00% | | | |"


def test_the_bench_runs_both_frameworks_on_the_device(monkeypatch):
    """--device cuda reaches tinynet's backend and torch's device, each a new process."""
    commands = []

    class Done:
        returncode = 0
        stdout = json.dumps({"seed": 0, "train_s": 1.0, "test_acc": 0.99}) + "\n"

    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or Done)
    bench.bench(1, device="cuda", say=lambda line: None)
    tinynet_cmd, torch_cmd = commands
    assert tinynet_cmd[1:4] == ["-m", "tinynet", "speedrun"]
    assert tinynet_cmd[tinynet_cmd.index("--backend") + 1] == "cuda"
    assert torch_cmd[torch_cmd.index("--device") + 1] == "cuda"
    commands.clear()
    bench.bench(1, say=lambda line: None)
    assert commands[0][commands[0].index("--backend") + 1] == "cpu"


def test_a_failed_run_says_why(monkeypatch):
    """A framework's process that fails raises with its command, exit status and
    the end of its stderr, not a bare exit status."""
    class Failed:
        returncode, stdout = 70, ""
        stderr = "Traceback ...\nAttributeError: module 'numpy' has no attribute 'row_stack'\n"

    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: Failed)
    with pytest.raises(RuntimeError, match=r"-m tinynet speedrun --seeds 0 --json --backend "
                                           r"cuda exited 70; the end of its stderr:\n"
                                           r"Traceback \.\.\.\nAttributeError: module"):
        bench.bench(1, device="cuda", say=lambda line: None)


def test_the_clock_waits_for_the_gpu(monkeypatch):
    """On the cuda backend the training time is read after a device synchronize
    (kernels run asynchronously); on the host backends nothing is called."""
    import numba.cuda
    calls = []
    monkeypatch.setattr(numba.cuda, "synchronize", lambda: calls.append(1))
    speedrun._synchronize()
    assert calls == []
    monkeypatch.setattr(speedrun.backends, "backend_name", lambda: "cuda")
    speedrun._synchronize()
    assert calls == [1]


@pytest.mark.cuda
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="the recipe's 28x28 batches of 256 would take minutes in the CUDA "
                           "simulator; this test runs on a GPU")
def test_the_recipe_on_a_gpu_follows_the_cpu():
    from cudasim import requires_cuda
    if requires_cuda.args[0]:
        pytest.skip(requires_cuda.kwargs["reason"])
    # Four steps: the fewest for which the one-cycle schedule has both phases.
    train, test = _slice(n_train=1024, n_test=100)
    with tn.use_backend("cpu"):
        cpu = speedrun.train_speedrun(1, train, test)
    with tn.use_backend("cuda"):
        gpu = speedrun.train_speedrun(1, train, test)
    assert gpu["backend"] == "cuda" and gpu["steps"] == cpu["steps"] == 4
    assert gpu["final_loss"] == pytest.approx(cpu["final_loss"], rel=1e-3)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                    reason="the real MNIST is not in ../shared/data/mnist")
def test_load_data_is_the_normalized_mnist():
    (x, y), (xt, yt) = speedrun.load_data(SHARED_DATA)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
