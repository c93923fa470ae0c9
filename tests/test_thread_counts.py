"""The cpu backend gives the same results with 1 thread as with the default count.

A child process with NUMBA_NUM_THREADS=1 runs a forward and backward pass of the
reference CNN (with each normalization) and one Adam step, and saves every
output and gradient; a second child does the same with the default thread count.
A kernel whose result depends on how prange splits its work (a race, or a
reduction combined in thread order) shows up as a difference.
"""
import os
import subprocess
import sys

import numpy as np
from conftest import REPO

SCRIPT = r"""
import sys
import numpy as np
import tinynet as tn
from tinynet.zoo import build_cnn

def run():
    out = {}
    tn.set_backend("cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 1, 28, 28)).astype(np.float32)
    y = np.arange(9) % 10
    for norm in ("batch", "layer", "instance", "group"):
        tn.init.seed(0)
        model = build_cnn(norm)
        model.requires_input_grad = True
        loss_fn = tn.SoftmaxCrossEntropy(label_smoothing=0.1)
        opt = tn.optim.Adam(model.parameters(), lr=1e-3)
        logits = model.forward(x)
        out[norm + "/loss"] = np.array(loss_fn.forward(logits, y))
        model.zero_grad()
        out[norm + "/dx"] = model.backward(loss_fn.backward())
        opt.step()
        for k, v in model.state_dict().items():
            out[norm + "/" + k] = v
        for i, p in enumerate(model.parameters()):
            out[f"{norm}/grad{i}"] = p.grad
    return out

np.savez(sys.argv[1], **run())
"""


def run_script(tmp_path, name, threads):
    """Run SCRIPT in a new process (``threads`` None: numba's default count)."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"{name}.npz"
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("NUMBA_NUM_THREADS", None)
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, cwd=REPO)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_one_thread_matches_default(tmp_path):
    one = run_script(tmp_path, "one", 1)
    default = run_script(tmp_path, "default", None)
    assert sorted(one) == sorted(default)
    for k in one:
        np.testing.assert_allclose(one[k], default[k], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{k}: NUMBA_NUM_THREADS=1 vs default")
