"""The notebooks (notebooks/*.ipynb) run top to bottom, and are committed stripped.

Every notebook found by the glob gets two tests:

- ``test_notebook_runs`` executes it with nbclient in a python3 kernel whose
  working directory is notebooks/, with a time budget for the whole notebook.
  The notebooks assert their own numeric checks (gradcheck, differences to
  torch), so a wrong backward fails here with the cell's source and error. A
  notebook that draws must also show its figures inline, as image/png outputs.
  Marked integration: CI's one-thread pass leaves it out.
- ``test_notebook_is_stripped`` checks the committed file as nbstripout
  would: no outputs and no execution counts in any code cell.
"""
import functools
import glob
import json
import os
import re
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
NAMES = [os.path.basename(path) for path in NOTEBOOKS]
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")

BUDGET_S = 300           # the whole notebook, kernel start included
CELL_TIMEOUT_S = 240     # one cell, and never past the budget
# Cell metadata that an editor writes when it runs or folds a cell (nbstripout removes them).
RUN_METADATA = ("collapsed", "scrolled", "ExecuteTime", "execution")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _source(cell):
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


@functools.cache
def _mnist_root():
    """The data root that holds MNIST, as the notebooks' ``tn.data.load_mnist()``
    will find it, and the reason when there is none: $TINYNET_DATA_DIR when it is
    set, else ../shared/data (CI's), else tinynet's default (~/.cache/tinynet)."""
    import tinynet as tn
    env = os.environ.get("TINYNET_DATA_DIR")
    roots = [env] if env else [SHARED_DATA, tn.data.data_root()]
    for root in roots:
        try:
            for split in ("train", "test"):
                tn.data.load_mnist(split, root=root, download=False)
        except (OSError, ValueError):
            continue
        return os.path.abspath(root), None
    where = "$TINYNET_DATA_DIR=" + env if env else " or ".join(roots)
    return None, f"the real MNIST is not in {where}"


def test_there_are_notebooks():
    # The glob must find the six notebooks, or every parametrized test would silently vanish.
    assert len(NOTEBOOKS) >= 6, f"expected at least 6 notebooks in {NOTEBOOK_DIR}, found {NAMES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_stripped(path):
    nb = _read(path)
    name = os.path.basename(path)
    assert nb.get("nbformat") == 4, f"{name}: not an nbformat 4 notebook"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", \
        f"{name}: the kernelspec must be python3"
    for index, cell in enumerate(nb["cells"]):
        where = f"{name}, cell {index} ({_source(cell)[:60]!r})"
        left = [key for key in RUN_METADATA if key in cell.get("metadata", {})]
        assert not left, f"{where}: metadata {left} left from running it; strip the notebook"
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{where}: has outputs; strip the notebook"
        assert cell.get("execution_count") is None, \
            f"{where}: execution_count is {cell.get('execution_count')}, not null; strip the notebook"


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    root, reason = _mnist_root()
    if root is None:
        pytest.skip(reason)
    monkeypatch.setenv("TINYNET_DATA_DIR", root)  # the kernel inherits the environment

    name = os.path.basename(path)
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()

    def cell_timeout(cell):
        left = BUDGET_S - (time.monotonic() - start)
        return max(1, int(min(CELL_TIMEOUT_S, left)))

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout_func=cell_timeout,
                                     resources={"metadata": {"path": NOTEBOOK_DIR}})
    failure = None
    try:
        client.execute()
    except CellExecutionError as e:  # its message holds the cell's source and the traceback
        failure = f"{name}: a cell failed after {time.monotonic() - start:.0f} s\n{e}"
    except (CellTimeoutError, DeadKernelError) as e:
        failure = (f"{name}: stopped after {time.monotonic() - start:.0f} s (budget {BUDGET_S} s, "
                   f"{CELL_TIMEOUT_S} s per cell)\n{e}")
    if failure is not None:
        pytest.fail(ANSI.sub("", failure), pytrace=False)
    elapsed = time.monotonic() - start
    print(f"{name}: {elapsed:.1f} s")
    assert elapsed <= BUDGET_S, f"{name}: took {elapsed:.0f} s, over the budget of {BUDGET_S} s"

    # A notebook that draws must show its figures inline (a non-inline backend shows none).
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    draws = any(re.search(r"\bplt\.|tinynet\.plots|\bplots\.", cell.source) for cell in code)
    pngs = sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs)
    if draws:
        assert pngs > 0, f"{name}: draws with matplotlib but shows no inline image/png figure"
