"""The CPU lab's shared tools: the GEMM-floor column, the environment of
child processes, the peak-RSS probe of kernels.step, the compile timer of
kernels.system.latency and the per-layer timing of kernels.system.instep."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

from kernels import common, step
from kernels.system import instep, latency


def test_row_gemm_floor():
    row = common.Row("op", "v", 0.002, flops=2e8, gemm_rate=2e11)
    d = row.as_dict(1e10)
    assert d["gemm_floor_ms"] == pytest.approx(1.0)
    assert d["time/gemm_floor"] == pytest.approx(2.0)
    assert "time/gemm_floor" not in common.Row("op", "v", 0.002, flops=2e8).as_dict(1e10)


def test_child_env_drops_what_tinynet_set(monkeypatch):
    from tinynet import process
    monkeypatch.setitem(process.APPLIED, "OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("TINYNET_LAB_PROBE", "kept")
    env = common.child_env(EXTRA="1")
    assert "OMP_WAIT_POLICY" not in env
    assert env["TINYNET_LAB_PROBE"] == "kept" and env["EXTRA"] == "1"
    # A value the user changed after import is the user's, and stays.
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert common.child_env()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_rss_probe():
    # In a fresh process: in this one, memory that earlier tests freed may
    # still be resident and serve the new array without growing the RSS.
    code = """
import json
import numpy as np
from kernels import step
current, peak = step._rss_mb()
big = np.ones(64 << 20, np.uint8)  # 64 MB, touched
current2, peak2 = step._rss_mb()
print(json.dumps([current, peak, current2, peak2]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    current, peak, current2, peak2 = json.loads(out.strip().splitlines()[-1])
    assert 0 < current <= peak and peak2 >= current2 >= current + 60


def test_compile_timer_counts_self_time():
    import numba
    timer = latency.CompileTimer()

    @numba.njit
    def helper(v):
        return v + 1

    @numba.njit
    def caller(v):
        return helper(v) * 2

    assert caller(1) == 4
    kernels = timer.per_kernel()
    names = {k.rsplit(".", 1)[-1]: v for k, v in kernels.items()}
    assert names["caller"][0] == 1 and names["helper"][0] == 1
    assert names["caller"][1] > 0 and names["helper"][1] > 0


def test_instep_child_times_every_layer(capsys):
    instep.child("none", 2, False)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    layers = [k for k in out if k[0].isdigit()]
    assert len(layers) == 11  # the CNN without norms: 11 layers
    assert out["step"] > 0 and out["layer"]
    for name in layers:
        in_step, alone = out[name]
        assert in_step > 0 and alone > 0, name


def test_instep_child_takes_any_zoo_model_and_batch(capsys):
    instep.child("none", 2, False, model_name="speedrun", batch=8)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    layers = [k for k in out if k[0].isdigit()]
    # conv, pool, relu, conv, pool, relu, flatten, dense, relu, dense
    assert [k.split()[1] for k in layers] == ["Conv2D", "MaxPool2D", "ReLU", "Conv2D",
                                              "MaxPool2D", "ReLU", "Flatten", "Dense", "ReLU",
                                              "Dense"]
    assert all(out[k][0] > 0 and out[k][1] > 0 for k in layers)
    instep.print_table({"no torch": out}, "none", model_name="speedrun", batch=8)
    assert "zoo model speedrun, norm=none, batch 8" in capsys.readouterr().out


def test_instep_settings_name_their_environment():
    for name, (env, torch_first) in instep.SETTINGS.items():
        assert torch_first == name.startswith("torch first"), name
        assert all(isinstance(v, str) for v in env.values()), name


def test_compare_times_both_checkouts_and_gives_the_ratio(capsys):
    from kernels.system import compare
    table = compare.main([REPO, REPO, "--rounds", "1"])
    assert "Adam 2^20" in table and "Dense(3136, 128) batch 64" in table
    assert "Conv2D(24, 32, 3) 12x12 batch 256" in table
    assert all(a > 0 and b > 0 for a, b in table.values())
    assert "B / A" in capsys.readouterr().out


@pytest.mark.parametrize("name, norm", [("cnn", "layer"), ("lenet5", "none"),
                                        ("resnet8", "batch"), ("resnet8", "group")])
def test_torch_twin_computes_what_the_zoo_model_computes(name, norm):
    """The step bench's torch side is the same model with the same weights."""
    torch = pytest.importorskip("torch", reason="the torch twin needs torch")
    import tinynet as tn
    from kernels.common import torch_twin
    from tinynet.zoo import MODELS, build
    tn.init.seed(0)
    model = build(name, norm).to(np.float64)
    twin = torch_twin(torch, model, MODELS[name][1]).double()
    x = np.random.default_rng(0).standard_normal((3,) + MODELS[name][1])
    with tn.use_backend("ref"):
        for mode in (False, True):  # eval, then train (batch statistics)
            model.train(mode), twin.train(mode)
            if mode:  # no dropout masks to match
                for m in twin.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.p = 0.0
                for layer in model.layers:
                    if isinstance(layer, tn.Dropout):
                        layer.eval()
            np.testing.assert_allclose(model.forward(x), twin(torch.from_numpy(x)).detach().numpy(),
                                       rtol=1e-9, atol=1e-9)


def test_step_profile_names_the_kernels_of_the_step(capsys):
    ms, rows = step.profile("batch", repeat=2, model_name="resnet8", top=5)
    assert ms > 0 and len(rows) == 5
    times = [t for _, t, _ in rows]
    assert times == sorted(times, reverse=True)
    assert all(0 <= share <= 1 for _, _, share in rows)
    assert sum(share for _, _, share in rows) <= 1.0
    # the convolutions dominate a ResNet's step: its backward kernel is at the top
    assert rows[0][0].startswith("conv/cpu.py:"), rows
    step.print_profile(ms, rows, "resnet8", "batch")
    out = capsys.readouterr().out
    assert "tinynet resnet8 (batch) at batch 64" in out and rows[0][0] in out
