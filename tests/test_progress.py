"""The progress bar's policy (tinynet/progress.py): on in a terminal, on in
Jupyter (a widget with ipywidgets, text without), off in CI, in pipes and when
the caller says so."""
import sys

import pytest

from tinynet import progress


def _bar(monkeypatch, jupyter, ci=False, enabled=True, widgets=True):
    monkeypatch.setattr(progress, "in_jupyter", lambda: jupyter)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    if not widgets:
        monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    return progress.progress_bar(10, "epoch 1/1", enabled)


def test_in_jupyter_the_bar_is_on_although_stderr_is_no_terminal(monkeypatch):
    pytest.importorskip("ipywidgets", reason="the widget bar needs ipywidgets")
    bar = _bar(monkeypatch, jupyter=True)
    assert not bar.disable and type(bar).__module__ == "tqdm.notebook"
    bar.close()


def test_in_jupyter_without_ipywidgets_the_bar_is_text(monkeypatch):
    bar = _bar(monkeypatch, jupyter=True, widgets=False)
    assert not bar.disable and type(bar).__module__ == "tqdm.std"
    bar.close()


def test_off_in_ci_and_when_the_caller_says_so_even_in_jupyter(monkeypatch):
    assert _bar(monkeypatch, jupyter=True, ci=True).disable
    assert _bar(monkeypatch, jupyter=True, enabled=False).disable
    assert _bar(monkeypatch, jupyter=False, enabled=False).disable


def test_outside_jupyter_a_captured_stderr_turns_it_off(monkeypatch):
    bar = _bar(monkeypatch, jupyter=False)  # pytest's captured stderr is no terminal
    assert bar.disable and type(bar).__module__ == "tqdm.std"


def test_in_jupyter_is_false_in_a_plain_process():
    assert progress.in_jupyter() is False


@pytest.mark.integration
def test_a_real_jupyter_kernel_gets_a_live_bar():
    """In an IPython kernel (nbclient), with CI unset in the kernel: the bar is on,
    and a widget when ipywidgets is installed."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="nbclient needs the python3 kernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n"
        "os.environ.pop('CI', None)\n"
        "from tinynet import progress\n"
        "bar = progress.progress_bar(3, 'x')\n"
        "print(progress.in_jupyter(), bar.disable, type(bar).__module__)\n"
        "bar.close()")]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o["output_type"] == "stream")
    try:
        import ipywidgets  # noqa: F401
        expected = "tqdm.notebook"
    except ImportError:
        expected = "tqdm.std"
    assert f"True False {expected}" in text, text
