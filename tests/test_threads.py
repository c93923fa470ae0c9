"""Tests for tinynet.threads (thread counts, threading default) and the cpu jit decorator."""
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import threadpoolctl

from conftest import REPO
from tinynet import threads

from tinynet.backends import cpu_jit as jit

JIT_PATH = jit.__file__


@jit.njit_kernel(parallel=True)
def scaled_row_sums(x, a, out):
    # Parallel over rows: iteration i writes only out[i].
    for i in numba.prange(x.shape[0]):
        acc = 0.0
        for j in range(x.shape[1]):
            acc += a * x[i, j]
        out[i] = acc


@jit.njit_kernel()
def count_nan(x):
    n = 0
    for i in range(x.shape[0]):
        if np.isnan(x[i]):
            n += 1
    return n


def _run(code, env):
    """Run python code in a fresh process; return its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-B", "-c", textwrap.dedent(code)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean_env(**overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY",
                        "OMP_WAIT_POLICY", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = REPO
    env.update(overrides)
    return env


@pytest.fixture
def restore_threads():
    """Put numba's and BLAS's thread counts back after the test."""
    before = threads.get_num_threads()
    yield before
    numba.set_num_threads(before["numba"])
    if before["blas"] is not None:
        threadpoolctl.threadpool_limits(limits=before["blas"], user_api="blas")


def test_set_num_threads_sets_numba_and_blas(restore_threads):
    limit = numba.config.NUMBA_NUM_THREADS
    for n in sorted({1, limit}):
        threads.set_num_threads(n)
        assert numba.get_num_threads() == n
        counts = threads.get_num_threads()
        assert counts["numba"] == n
        if restore_threads["blas"] is not None:
            assert counts["blas"] == n


def test_blas_info_finds_numpys_blas():
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    info = threads.blas_info()
    assert info is not None, f"threadpoolctl found no BLAS, numpy was built with {blas!r}"
    assert info["internal_api"] in blas.lower()
    assert os.path.dirname(np.__file__) in info["filepath"]
    assert threads.get_num_threads()["blas"] == info["num_threads"]


def test_set_num_threads_sets_numpys_blas_beside_torch():
    pytest.importorskip("torch")
    counts = _run("""
        import json, torch, numpy as np
        import tinynet as tn
        tn.set_num_threads(1)
        info = tn.threads.blas_info()
        print(json.dumps({"blas": info["num_threads"], "path": info["filepath"],
                          "numpy": np.__file__}))
    """, _clean_env())
    assert counts["blas"] == 1
    assert counts["path"].startswith(os.path.dirname(counts["numpy"]))


@pytest.mark.parametrize("n", [0, -1, "max+1"])
def test_set_num_threads_rejects_out_of_range(n, restore_threads):
    limit = numba.config.NUMBA_NUM_THREADS
    n = limit + 1 if n == "max+1" else n
    with pytest.raises(ValueError, match=rf"set_num_threads: n must be in 1\.\.{limit}"):
        threads.set_num_threads(n)
    assert threads.get_num_threads() == restore_threads


@pytest.mark.parametrize("n", [1.0, True, "2"])
def test_set_num_threads_rejects_non_int(n):
    with pytest.raises(TypeError, match="set_num_threads: n must be an int"):
        threads.set_num_threads(n)


def test_configure_threading_applies_default_when_unset(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    monkeypatch.setattr(threads, "_numba_pool_running", lambda numba: False)
    monkeypatch.setattr(threads, "_gomp_loaded", lambda: False)
    applied = threads.configure_threading()
    assert applied == {"OMP_WAIT_POLICY": "PASSIVE",
                       "NUMBA_THREADING_LAYER_PRIORITY": "tbb omp workqueue"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert numba.config.THREADING_LAYER_PRIORITY == ["tbb", "omp", "workqueue"]


@pytest.mark.parametrize("name, value", [("THREADING_LAYER", "workqueue"),
                                         ("THREADING_LAYER_PRIORITY", ["workqueue", "omp", "tbb"])])
def test_configure_threading_keeps_config_layer(monkeypatch, name, value):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    monkeypatch.setattr(numba.config, name, value)
    monkeypatch.setattr(threads, "_numba_pool_running", lambda numba: False)
    assert threads.configure_threading() == {}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ
    assert getattr(numba.config, name) == value


def test_configure_threading_does_nothing_once_pool_runs(monkeypatch):
    scaled_row_sums(np.ones((4, 3)), 1.0, np.empty(4))  # launches numba's pool
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    assert threads.configure_threading() == {}
    assert "OMP_WAIT_POLICY" not in os.environ


CHILD_LAYER = """
    import json, os
    import numba, numpy as np
    from tinynet import threads
    threads.configure_threading()

    @numba.njit(parallel=True)
    def fill(out):
        for i in numba.prange(out.shape[0]):
            out[i] = i

    fill(np.empty(8))
    print(json.dumps({"config_layer": numba.config.THREADING_LAYER,
                      "priority": numba.config.THREADING_LAYER_PRIORITY,
                      "layer": numba.threading_layer(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def test_configure_threading_respects_user_environment():
    env = _clean_env(NUMBA_THREADING_LAYER="workqueue", OMP_WAIT_POLICY="ACTIVE")
    result = _run(CHILD_LAYER, env)
    assert result["config_layer"] == "workqueue"
    assert result["layer"] == "workqueue"
    assert result["omp_wait_policy"] == "ACTIVE"


def test_configure_threading_default_in_fresh_process():
    result = _run(CHILD_LAYER, _clean_env())
    assert result["config_layer"] == "default"
    assert result["priority"] == ["tbb", "omp", "workqueue"]
    assert result["omp_wait_policy"] == "PASSIVE"
    if _tbb_installed():
        # pyproject.toml makes tbb a dependency where its wheels exist; preload_tbb finds it in a venv
        assert result["layer"] == "tbb"
    elif importlib.util.find_spec("numba.np.ufunc.omppool") is not None:
        assert result["layer"] == "omp"


def test_njit_kernel_parallel_matches_numpy():
    x = np.random.default_rng(0).standard_normal((37, 11))
    out = np.empty(37)
    scaled_row_sums(x, 0.5, out)
    np.testing.assert_allclose(out, 0.5 * x.sum(axis=1), rtol=1e-12)


def test_njit_kernel_keeps_isnan():
    assert count_nan(np.array([1.0, np.nan, 2.0, np.nan])) == 2


def test_njit_kernel_rejects_fastmath():
    with pytest.raises(TypeError, match="fastmath is fixed"):
        jit.njit_kernel(**{"fastmath": True})


def test_njit_kernel_caches_when_writable():
    assert scaled_row_sums.stats.cache_path is not None


def test_njit_kernel_cache_false_never_caches():
    @jit.njit_kernel(cache=False)
    def twice(x):
        return 2 * x

    assert twice(3) == 6
    assert twice.stats.cache_path is None


def test_njit_kernel_falls_back_when_save_fails(monkeypatch):
    def refuse(self, key, data):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(numba.core.caching.IndexDataCacheFile, "save", refuse)

    @jit.njit_kernel(parallel=True)
    def double(x, out):
        # Parallel over elements: iteration i writes only out[i].
        for i in numba.prange(x.shape[0]):
            out[i] = 2 * x[i]

    out = np.empty(5)
    with pytest.warns(RuntimeWarning, match="cannot write the compile cache"):
        double(np.arange(5.0), out)
    np.testing.assert_array_equal(out, 2 * np.arange(5.0))


def test_njit_kernel_compiles_when_cache_unreadable(monkeypatch):
    def refuse(self, key):
        raise PermissionError("cannot read the cache index")

    monkeypatch.setattr(numba.core.caching.IndexDataCacheFile, "load", refuse)

    @jit.njit_kernel()
    def add_one(x):
        return x + 1

    assert add_one(41) == 42
    assert add_one.stats.cache_path is not None


KERNEL_MODULE = """
import numba
import numpy as np
from tn_jit import njit_kernel


@njit_kernel(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.shape[0]):
        s += x[i]
    return s
"""

CHILD_CALL = """
    import json
    import numpy as np
    import kern
    print(json.dumps({"total": kern.total(np.arange(100.0)),
                      "cache_path": kern.total.stats.cache_path}))
"""


def _kernel_package(root):
    """A directory holding a copy of cpu_jit.py (and its jit_cache.py) and a module
    with one cached parallel kernel."""
    package = os.path.join(root, "pkg")
    os.makedirs(package)
    # cpu_jit.py imports its cache key from jit_cache.py beside it: copy both.
    with open(JIT_PATH) as f:
        source = f.read()
    assert "from .jit_cache import" in source
    with open(os.path.join(package, "tn_jit.py"), "w") as f:
        f.write(source.replace("from .jit_cache import", "from jit_cache import"))
    shutil.copy(os.path.join(os.path.dirname(JIT_PATH), "jit_cache.py"), package)
    with open(os.path.join(package, "kern.py"), "w") as f:
        f.write(KERNEL_MODULE)
    return package


def test_njit_kernel_without_writable_directory_read_only(tmp_path):
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("chmod does not stop root from writing; see the blocked-path test")
    package = _kernel_package(str(tmp_path))
    home = tmp_path / "home"
    home.mkdir()
    read_only = stat.S_IRUSR | stat.S_IXUSR
    os.chmod(package, read_only)
    os.chmod(home, read_only)
    try:
        result = _run(CHILD_CALL, _clean_env(PYTHONPATH=package, HOME=str(home)))
    finally:
        os.chmod(package, stat.S_IRWXU)
        os.chmod(home, stat.S_IRWXU)
    assert result == {"total": 4950.0, "cache_path": None}


def test_njit_kernel_without_writable_directory_blocked_paths(tmp_path):
    # Regular files where numba's cache directories would go: no user, root
    # included, can create them.
    package = _kernel_package(str(tmp_path))
    (tmp_path / "pkg" / "__pycache__").write_text("")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("")
    env = _clean_env(PYTHONPATH=package, HOME=str(home),
                     NUMBA_CACHE_DIR=str(home / ".cache" / "numba"))
    assert _run(CHILD_CALL, env) == {"total": 4950.0, "cache_path": None}


def test_njit_kernel_caches_beside_a_writable_source(tmp_path):
    package = _kernel_package(str(tmp_path))
    result = _run(CHILD_CALL, _clean_env(PYTHONPATH=package))
    assert result == {"total": 4950.0, "cache_path": os.path.join(package, "__pycache__")}
    assert any(name.endswith(".nbi") for name in os.listdir(result["cache_path"]))


def test_configure_threading_avoids_a_spinning_openmp_loaded_first(monkeypatch):
    """An OpenMP runtime already loaded (torch imported before tinynet) has read
    its wait policy; numba's omp layer would share it, so tbb, then workqueue
    come first."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    monkeypatch.setattr(threads, "_numba_pool_running", lambda numba: False)
    monkeypatch.setattr(threads, "_gomp_loaded", lambda: True)
    applied = threads.configure_threading()
    assert applied["NUMBA_THREADING_LAYER_PRIORITY"] == "tbb workqueue omp"
    assert numba.config.THREADING_LAYER_PRIORITY == ["tbb", "workqueue", "omp"]


def _tbb_installed():
    """Whether pip installed the tbb package (its libtbb.so.12) into this environment."""
    import importlib.metadata
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_torch_imported_first_avoids_omp():
    """torch first: tbb when the tbb package is installed (its library in the
    environment's lib/, which the loader does not search), workqueue otherwise."""
    pytest.importorskip("torch")
    code = ("import torch, numpy as np, numba, tinynet\n"
            "from tinynet.backends import cpu\n"
            "cpu.relu_forward(np.ones(3, np.float32))\n"
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER",
                        "NUMBA_THREADING_LAYER_PRIORITY")}
    env["PYTHONPATH"] = REPO
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[-1] == ("tbb" if _tbb_installed() else "workqueue")


@pytest.mark.skipif(not _tbb_installed(), reason="the tbb package is not installed here")
def test_preload_tbb_makes_numbas_tbb_layer_loadable():
    """In a new process: numba's tbbpool extension fails to import until the
    library that pip installed in <prefix>/lib is loaded."""
    code = ("import sys, numba\n"
            "try:\n"
            "    import numba.np.ufunc.tbbpool\n"
            "    print('found-by-loader')\n"
            "    sys.exit(0)\n"
            "except ImportError:\n"
            "    pass\n"
            "from tinynet import threads\n"
            "path = threads.preload_tbb()\n"
            "import numba.np.ufunc.tbbpool\n"
            "print(path)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO),
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    assert out == "found-by-loader" or out.endswith("/lib/libtbb.so.12"), out


def test_preload_tbb_without_a_library_loads_nothing(monkeypatch, tmp_path):
    import ctypes
    loaded = []

    def cdll(name, mode=0):
        loaded.append(name)
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    assert threads.preload_tbb() is None
    assert loaded == ["libtbb.so.12"]  # only the loader's own search; no file to load
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libtbb.so.12").write_bytes(b"not a library")
    assert threads.preload_tbb() is None  # a broken library: numba falls back as before
    assert loaded[-1] == str(tmp_path / "lib" / "libtbb.so.12")
