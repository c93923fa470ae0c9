"""Every lab's ``--check`` (kernels/, CPU and GPU): each variant against the
reference over its family's cases, and the GPU report's plumbing.

The CPU labs run in the default test run; the GPU labs on a GPU or under the
CUDA simulator (marked ``cuda``), with small blocks.
"""
import importlib

import pytest

from cudasim import SIMULATOR, requires_cuda

CPU_LABS = ("norm", "conv", "dense", "pool", "elementwise", "dropout", "optim", "fused")
GPU_LABS = ("gpu_norm", "gpu_gemm", "gpu_launch")
LABS = list(CPU_LABS) + [pytest.param(lab, marks=[pytest.mark.cuda, requires_cuda])
                         for lab in GPU_LABS]


@pytest.mark.parametrize("lab", LABS)
def test_lab_check_passes(lab, capsys):
    module = importlib.import_module(f"kernels.{lab}")
    module.main(["--check"])
    assert f"{lab}: every variant matches the reference" in capsys.readouterr().out


@pytest.mark.cuda
@requires_cuda
@pytest.mark.skipif(SIMULATOR, reason="one training step of the full-size CNN takes about 3 "
                    "minutes under the simulator; tests/test_cuda_model.py runs whole steps "
                    "of a small one there")
def test_gpu_step_check_passes(capsys):
    from kernels import step
    step.main(["--device", "cuda", "--check"])
    assert "step: every variant matches the reference" in capsys.readouterr().out


@pytest.mark.parametrize("pad", [0, 1])
def test_conv_breakdown_runs_production_stages(pad, capsys):
    """The breakdown's stage-switched kernels give production's results with
    every stage on (it checks that before timing), and it times every stage."""
    from kernels import conv
    rows = conv.breakdown(layers=(("small", 5, 7, 3, 6, pad),), repeat=2)
    stages = [(what, stage) for _, what, stage, _, _ in rows]
    expected = [("forward", s) for s, _ in conv.FORWARD_STAGES] + [
        ("forward", "production (forward_chunks / backward_chunks)")] + [
        ("backward", s) for s, _ in conv.BACKWARD_STAGES] + [
        ("backward", "production (forward_chunks / backward_chunks)")]
    assert stages == expected
    assert all(ms > 0 for _, _, _, ms, _ in rows)
    conv.print_breakdown(rows)
    assert "col2im" in capsys.readouterr().out


def test_conv_chunks_races_every_pair(capsys):
    from kernels import conv
    result = conv.chunks(layers=(("small", 5, 7, 3, 6, 0),), choices=((64, 128), (128, 512)),
                         rounds=1, repeat=2)
    assert list(result) == ["small"] and set(result["small"]) == {(64, 128), (128, 512)}
    assert all(t > 0 for t in result["small"].values())
    conv.print_chunks(result)
    assert "64/128 KB" in capsys.readouterr().out


def test_report_replaces_only_between_markers():
    from kernels.report import MARKERS, replace_between
    for key in ("ptx", "report"):
        start, end = MARKERS[key]
        text = f"head\n{start}\nold\n{end}\ntail\n"
        assert replace_between(text, key, "new") == f"head\n{start}\nnew\n{end}\ntail\n"


def test_gpu_rows_give_percent_of_copy_bandwidth():
    from kernels.common import GpuRow, format_gpu_rows
    row = GpuRow("op", "v", 1e-3, floor_bytes=2e9, torch_seconds=2e-3)
    d = row.as_dict(bandwidth=4e12)
    assert d["GB/s"] == pytest.approx(2000) and d["% copy"] == pytest.approx(50)
    assert d["ratio"] == pytest.approx(0.5)
    assert "| op | v | 1.000 | 2000 | 50 |" in format_gpu_rows([row], 4e12)


def test_conv_winograd_chunks_races_every_size(capsys):
    from kernels import conv
    result = conv.winograd_chunks(layers=(("small", 5, 7, 3, 6, 1),), choices=(1, 64),
                                  rounds=1, repeat=1)
    assert list(result) == ["small"]
    assert set(result["small"]) == {"1 KB", "64 KB", "im2col"}
    assert all(t > 0 for t in result["small"].values())
    conv.print_winograd_chunks(result)
    assert "64 KB" in capsys.readouterr().out


def test_conv_winograd_sweep_races_both_forwards(capsys):
    from kernels import conv
    result = conv.winograd_sweep(shapes=((6, 3, 4),), N=2, rounds=1, repeat=1)
    assert list(result) == [(6, 3, 4)] and all(t > 0 for t in result[(6, 3, 4)])
    conv.print_winograd_sweep(result)
    assert "winograd ms" in capsys.readouterr().out


def test_gelu_fit_reproduces_the_cpu_kernels_coefficients():
    """kernels/gelu_fit.py gives the p, S and S_e that the cpu backend's float32
    GELU carries (to a few float32 ulps: the least-squares solves may round
    differently with another BLAS)."""
    import numpy as np

    from kernels import gelu_fit
    from tinynet.backends.cpu_jit import EXP_NORMAL_COEFFICIENTS
    from tinynet.ops.activation import cpu
    p = gelu_fit.best_p()
    assert np.isclose(p, cpu._GELU_P, rtol=1e-5)
    np.testing.assert_allclose(gelu_fit.fit_gelu(cpu._GELU_P)[0], cpu._GELU_S, rtol=1e-5)
    np.testing.assert_allclose(gelu_fit.fit_exp()[0], EXP_NORMAL_COEFFICIENTS, rtol=1e-5)
