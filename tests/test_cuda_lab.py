"""The GPU lab's --check runs (every variant against the reference) and its report plumbing."""
import pytest

from cudasim import requires_cuda


@requires_cuda
@pytest.mark.parametrize("lab", ["gpu_norm", "gpu_gemm", "gpu_launch"])
def test_lab_check_passes(lab, capsys):
    import importlib
    module = importlib.import_module(f"kernels.{lab}")
    module.main(["--check"])
    assert "every variant matches the reference" in capsys.readouterr().out


def test_report_replaces_only_between_markers():
    from kernels.gpu_report import MARKERS, replace_between
    start, end = MARKERS["ptx"]
    text = f"head\n{start}\nold\n{end}\ntail\n"
    assert replace_between(text, "ptx", "new") == f"head\n{start}\nnew\n{end}\ntail\n"


def test_gpu_rows_give_percent_of_copy_bandwidth():
    from kernels.common import GpuRow, format_gpu_rows
    row = GpuRow("op", "v", 1e-3, floor_bytes=2e9, torch_seconds=2e-3)
    d = row.as_dict(bandwidth=4e12)
    assert d["GB/s"] == pytest.approx(2000) and d["% copy"] == pytest.approx(50)
    assert d["ratio"] == pytest.approx(0.5)
    assert "| op | v | 1.000 | 2000 | 50 |" in format_gpu_rows([row], 4e12)
