"""The cpu dropout kernels' own properties: their numba hash is the contract's
splitmix64 bit for bit, and the mask and outputs do not depend on the thread
count."""
import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import REPO
from tinynet.backends import cpu
from tinynet.ops.dropout import MAX_U64, splitmix64
from tinynet.ops.dropout.cpu import splitmix64_u64


def test_the_kernels_hash_is_the_contracts_splitmix64():
    for z in [0, 1, 12345, 2**63, 2**63 + 99, MAX_U64 - 1, MAX_U64]:
        assert int(splitmix64_u64(np.uint64(z))) == int(splitmix64(z)), z
    assert int(splitmix64_u64(np.uint64(0))) == 0xE220A8397B1DCDAF


def test_the_backend_exports_only_ops():
    # The hash is an internal of the kernels; the contract holds splitmix64.
    assert not hasattr(cpu, "splitmix64")


_CHILD = textwrap.dedent("""
    import hashlib, numba, numpy as np
    from tinynet.backends import cpu
    x = np.linspace(-3, 3, 7 * 14285, dtype=np.float32).reshape(7, 14285)
    y, keep = cpu.dropout_forward(x, 0.4, 2**63 + 5, 17)
    dx = cpu.dropout_backward(y, keep, 0.4)
    mask = cpu.dropout_mask((3, 33335), 0.7, 1, 2)
    digest = hashlib.sha256(y.tobytes() + keep.tobytes() + dx.tobytes() + mask.tobytes())
    print(numba.get_num_threads(), digest.hexdigest())
""")


def _child_digest(threads):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads is None:
        env.pop("NUMBA_NUM_THREADS", None)
    else:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, digest = out.stdout.split()
    return int(n), digest


def test_same_mask_and_outputs_for_any_thread_count():
    one, digest_one = _child_digest(1)
    default, digest_default = _child_digest(None)
    assert one == 1
    assert digest_one == digest_default, f"1 thread and {default} threads disagree"
