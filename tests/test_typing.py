"""Type hints: mypy passes on tinynet's typed modules, and a typed user script checks.

The modules and mypy's settings are pyproject.toml's [tool.mypy]; `mypy` with
no arguments, run in the repository root, checks them. The client test shows
that the hints reach a user's code: a script that builds, trains and
evaluates a model type-checks, and wrong calls in it are reported.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra: "
                                   "pip install -e '.[test]')")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TYPED_CLIENT = '''
import numpy as np
from numpy.typing import NDArray

import tinynet as tn


def build() -> tn.Sequential:
    return tn.Sequential(tn.Conv2D(1, 4, 3, padding=1), tn.BatchNorm(4), tn.ReLU(),
                         tn.Residual(tn.Sequential(tn.Conv2D(4, 4, 3, padding=1))),
                         tn.Concat(tn.Conv2D(4, 2, 1), tn.Conv2D(4, 2, 1)),
                         tn.MaxPool2D(2), tn.Flatten(), tn.Dense(4 * 4 * 4, 10))


def main() -> float:
    rng = np.random.default_rng(0)
    x: NDArray[np.float32] = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    y: NDArray[np.int64] = rng.integers(0, 10, size=32)
    model = build()
    model.summary(input_shape=(1, 1, 8, 8))
    table: str = model.summary_text(input_shape=(1, 1, 8, 8))
    optimizer = tn.optim.Adam(model.parameters(), lr=1e-3)
    loader = tn.data.DataLoader(x, y, batch_size=8, shuffle=True, seed=0)
    history: tn.History = tn.fit(model, tn.SoftmaxCrossEntropy(), optimizer, loader,
                                 epochs=1, progress=False)
    probs: NDArray[np.float64] = tn.predict(model, x)
    loss, acc = tn.evaluate(model, tn.SoftmaxCrossEntropy(), (x, y))
    return float(probs.sum()) + loss + acc + len(history) + len(table)
'''

WRONG_CALLS = '''
import tinynet as tn

layer = tn.Dense("3", 4)
optimizer = tn.optim.Adam(layer.parameters(), lr="0.001")
'''

# gradcheck, the Recorder, the backend and device functions and the zoo, as a
# script uses them (mypy reads it; it never runs).
TYPED_TOOLS_CLIENT = '''
import io
from typing import Any

import numpy as np
from numpy.typing import NDArray

import tinynet as tn
from tinynet.gradcheck import GradcheckRow, check_layers
from tinynet.zoo import MODELS, build_lenet5, build_resnet


def check() -> float:
    rng = np.random.default_rng(0)
    result: tn.GradcheckResult = tn.gradcheck(tn.Dense(3, 2), rng.standard_normal((4, 3)),
                                              tol=1e-6, seed=1)
    rows: list[GradcheckRow] = result.rows
    worst: float = result.max_rel_err
    ok: bool = result.passed and check_layers("dense", out=io.StringIO())
    names: list[str] = tn.available_backends()
    tn.set_backend("ref")
    with tn.use_backend("cpu") as backend:
        x = tn.to_device(rng.standard_normal((2, 1, 28, 28)), "cpu", dtype=np.float32)
    host: NDArray[Any] = tn.to_host(x)
    tn.set_num_threads(2)
    numba_threads: int = tn.get_num_threads()["numba"]
    model: tn.Sequential = build_lenet5(norm="group", num_classes=10)
    builder, shape = MODELS["resnet8"]
    resnet: tn.Sequential = builder("batch", num_classes=10)
    deeper = build_resnet(20, norm="none")
    with tn.Recorder(model, every=2, kinds=("y", "dy"), hist_range=(-3.0, 3.0)) as rec:
        model.forward(host)
    records: list[dict[str, Any]] = rec.select(layer="0", kind="y")
    text: str = rec.to_json()
    return (worst + len(rows) + ok + len(names) + numba_threads + len(records) + len(text)
            + len(shape) + len(resnet) + len(deeper) + len(backend.NAME))
'''

WRONG_TOOLS_CALLS = '''
import tinynet as tn
from tinynet.zoo import build_resnet

result = tn.gradcheck(tn.Dense(3, 2), [[1.0, 2.0, 3.0]], tol="1e-6")
model = build_resnet("20")
'''


def _mypy(*args):
    """Run mypy in the repository root (its pyproject.toml configures it)."""
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)


def test_typed_modules_pass_mypy():
    result = _mypy()
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Success" in result.stdout, \
        f"mypy reports errors in tinynet's typed modules:\n{output}"


# (correct client, wrong calls, the error each wrong call must give)
CLIENT_CASES = {
    "layers-fit-optim": (TYPED_CLIENT, WRONG_CALLS, [
        '"Dense" has incompatible type "str"; expected "int"',
        '"lr" to "Adam" has incompatible type "str"; expected "float"']),
    "gradcheck-recorder-backends-zoo": (TYPED_TOOLS_CLIENT, WRONG_TOOLS_CALLS, [
        '"tol" to "gradcheck" has incompatible type "str"; expected "float"',
        '"build_resnet" has incompatible type "str"; expected "int"']),
}


@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_a_typed_client_checks_and_wrong_calls_are_reported(tmp_path, case):
    """A correct client of the typed API passes mypy, and each wrong call in the
    other file is reported (so the check is not vacuous)."""
    source, wrong_source, expected = CLIENT_CASES[case]
    client = tmp_path / "typed_client.py"
    client.write_text(textwrap.dedent(source))
    wrong = tmp_path / "wrong_calls.py"
    wrong.write_text(textwrap.dedent(wrong_source))
    result = _mypy(str(client), str(wrong))
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert not [line for line in errors if "typed_client.py" in line], \
        f"mypy rejects a correct use of tinynet's API:\n{output}"
    for message in expected:
        assert any(message in line for line in errors), f"not reported: {message}\n{output}"
    assert len(errors) == len(expected) and result.returncode == 1, output
