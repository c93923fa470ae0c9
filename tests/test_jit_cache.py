"""Numba's disk cache notices an edit to a helper in another file
(tinynet/backends/jit_cache.py): a kernel whose inlined helper, called
helper or imported constant changed recompiles; an unchanged one loads from
the cache; the digest is the same in every process."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO
from tinynet.backends import jit_cache

HELPER = textwrap.dedent("""
    from tinynet.backends.cpu_jit import njit_kernel

    SCALE = 10.0

    @njit_kernel(inline="always")
    def add_one(x):
        return x + 1.0

    @njit_kernel()
    def times_ten(x):
        return x * 10.0
""")

KERNEL = textwrap.dedent("""
    from tinynet.backends.cpu_jit import njit_kernel
    from .helpers import add_one, times_ten, SCALE

    @njit_kernel()
    def kernel(a):
        return add_one(a) + times_ten(a) + SCALE
""")

RUN = ("from pkg.kern import kernel; print(kernel(1.0), "
       "sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))")


def _package(root):
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text(HELPER)
    (pkg / "kern.py").write_text(KERNEL)
    return pkg


def _run(root, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=f"{root}:{REPO}")
    out = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=env,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    value, hits, misses = out.stdout.split()
    return float(value), int(hits), int(misses)


def test_an_edit_to_a_helper_in_another_file_recompiles_the_kernel(tmp_path):
    pkg = _package(tmp_path)
    cache = tmp_path / "cache"
    assert _run(tmp_path, cache) == (2.0 + 10.0 + 10.0, 0, 1)   # compiled
    assert _run(tmp_path, cache) == (22.0, 1, 0)                # loaded
    helpers = pkg / "helpers.py"
    helpers.write_text(HELPER.replace("x + 1.0", "x + 2.0"))      # the inlined helper
    assert _run(tmp_path, cache) == (23.0, 0, 1)
    helpers.write_text(HELPER.replace("x + 1.0", "x + 2.0").replace("x * 10.0", "x * 100.0"))
    assert _run(tmp_path, cache) == (113.0, 0, 1)               # a called helper
    assert _run(tmp_path, cache) == (113.0, 1, 0)
    helpers.write_text(HELPER.replace("x + 1.0", "x + 2.0").replace("x * 10.0", "x * 100.0")
                       .replace("SCALE = 10.0", "SCALE = 0.5"))
    assert _run(tmp_path, cache) == (103.5, 0, 1)               # an imported constant


def test_the_files_and_constants_a_kernel_reaches():
    from tinynet.backends import cpu_jit
    from tinynet.ops.optim import cpu as optim_cpu
    from tinynet.ops.conv import cpu as conv_cpu
    files = jit_cache.dependency_files(optim_cpu._adam_parallel.py_func)
    assert [f.split("tinynet/")[-1] for f in files] == ["ops/optim/__init__.py", "ops/optim/cpu.py"]
    files = jit_cache.dependency_files(conv_cpu._forward_winograd.py_func)
    assert "backends/cpu_blas.py" in [f.split("tinynet/")[-1] for f in files]
    # vector_exp's helpers live in cpu_jit.py, with the float constants they read
    _, constants = jit_cache._walk(cpu_jit.vector_exp_f64.py_func)
    assert ("tinynet.backends.cpu_jit._LOG2E", repr(1.4426950408889634).encode()) in constants


def test_only_constants_with_a_stable_repr_are_hashed():
    assert jit_cache._is_constant((1, 2.5, np.float32(3)))
    assert jit_cache._is_constant(np.arange(3))
    assert not jit_cache._is_constant((1, len))          # a repr with an address
    assert not jit_cache._is_constant(np.array([None]))
    assert not jit_cache._is_constant([1, 2])            # numba does not freeze a list


def test_the_digest_is_the_same_in_every_process():
    code = ("import tinynet.ops.conv.cpu, tinynet.ops.norm.cpu, tinynet.ops.optim.cpu\n"
            "from tinynet.backends import cpu_jit, jit_cache\n"
            "print(sorted((cpu_jit.kernel_name(k), jit_cache.dependency_digest(k.py_func))"
            " for k in cpu_jit.kernels()))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout and "_adam_parallel" in runs[0].stdout


def test_the_index_key_ends_with_the_digest():
    from tinynet.ops.optim import cpu as optim_cpu
    kernel = optim_cpu._adam_parallel
    if not isinstance(kernel._cache, jit_cache.DependencyKeyed):
        pytest.skip("no writable cache directory here: the kernel is not cached")
    key = kernel._cache._index_key((), kernel.targetctx.codegen())
    assert key[-1] == ("dependencies", jit_cache.dependency_digest(kernel.py_func))
    assert len(key) == 4   # numba's signature, target and hashes, then the digest
