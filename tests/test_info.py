"""tinynet info: versions, backends, threads, BLAS, kernel cache and data sets;
the cache accounting under it (tinynet.backends.cpu_jit): which signatures a
kernel's cache holds, and cache_only()."""
import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import tinynet as tn
from conftest import REPO
from tinynet.cli import main
from tinynet.info import format_info

NO_CACHE = "no cache directory is writable: every process compiles"


def test_info_json_reports_this_process(tmp_path, monkeypatch, capsys):
    (tmp_path / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"):
        (tmp_path / "mnist" / name).write_bytes(b"")
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    v = info["versions"]
    assert v["tinynet"] == tn.__version__ and v["numpy"] == np.__version__
    assert v["numba"] == numba.__version__
    assert set(info["backends"]) == {"ref", "cpu", "cuda"}
    for name, state in info["backends"].items():
        assert (state == "available") == (name in tn.available_backends()), (name, state)
        assert state == "available" or state.startswith("unavailable: "), state
    t = info["threads"]
    assert t["numba_threads"] == numba.get_num_threads()
    assert t["numba_threading_layer"] == numba.threading_layer()
    assert t["blas"] and all(b["threads"] >= 1 for b in t["blas"])
    c = info["kernel_cache"]
    assert 0 <= c["cached"] <= c["kernels"] and c["kernels"] > 10
    assert c["signatures"] >= c["cached"]
    assert c["state"] in ("warm", "partly warm", "cold", "not warmed up", NO_CACHE)
    w = c["warmup"]
    assert w["cached"] + len(w["missing"]) == w["signatures"] >= w["kernels"]
    assert all(os.path.isdir(d) for d in c["directories"])
    mnist = info["datasets"]["mnist"]
    assert mnist["found"] == [str(tmp_path / "mnist")] and mnist["missing"] == []


def test_info_text_names_missing_data_and_the_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("tinynet.data.datasets.FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "x"),))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for heading in ("versions", "backends", "threads", "kernel cache", "datasets"):
        assert heading in out
    assert "numba layer" in out and "BLAS" in out
    assert f"mnist           missing 4 of 4 files; searched {tmp_path / 'mnist'}" in out
    assert "apt-get install dataset-fashion-mnist" in out


def _cache_report(state, recorded=0, missing=()):
    dirs = [] if state == NO_CACHE else ["/c/norm_1", "/c/conv_2"]
    return {"directories": dirs, "state": state, "kernels": 67,
            "cached": 40, "signatures": 43, "NUMBA_CACHE_DIR": "/c",
            "warmup": {"kernels": 40 if recorded else 0, "signatures": recorded,
                       "cached": recorded - len(missing), "missing": list(missing)}}


@pytest.mark.parametrize("state,recorded,missing,expected", [
    ("warm", 43, (), "warm: 43/43 signatures of the 40 kernels that `tinynet warmup` "
                     "compiled are cached"),
    ("partly warm", 43, ("k(int64)",), "partly warm: 42/43 signatures"),
    ("not warmed up", 0, (), "not warmed up: no record of `tinynet warmup`"),
    (NO_CACHE, 0, (), f"kernel cache\n  {NO_CACHE}\n  all cpu kernels"),
])
def test_info_text_says_whether_the_warmed_kernels_are_cached(state, recorded, missing,
                                                               expected):
    report = {"versions": {}, "platform": "p", "cpu_count": 2, "backends": {},
              "threads": {"tinynet_threads": {}, "numba_threading_layer": "omp",
                          "numba_threading_layer_requested": "default",
                          "OMP_WAIT_POLICY": None, "blas": [], "openmp": []},
              "kernel_cache": _cache_report(state, recorded, missing),
              "datasets": {"root": "/d", "mnist": {"found": ["/d"], "missing": []},
                           "fashion-mnist": {"found": ["/d"], "missing": []}}}
    text = format_info(report)
    assert expected in text
    assert "all cpu kernels: 40/67 cached, 43 signatures" in text
    assert ("in /c (2 directories)" in text) == (state != NO_CACHE)
    assert ("missing (source changed" in text) == bool(missing)


ACCOUNTING = """
import json, numpy as np, tinynet as tn
from tinynet.backends import cpu_jit
from tinynet.ops.activation import cpu as kernels
tn.set_backend("cpu")
x = np.zeros((3, 4), np.float32)
try:
    with cpu_jit.cache_only():
        tn.get_backend().tanh_forward(x)
    hit = True
except cpu_jit.CacheMiss:
    hit = False
tn.get_backend().tanh_forward(x)
print(json.dumps({"hit": hit, "cached": sorted(cpu_jit.cached_signatures(kernels._tanh_forward)),
                  "held": sorted(cpu_jit.held_signatures()["%s._tanh_forward" % kernels.__name__]),
                  "inline": [cpu_jit.kernel_name(k) for k in cpu_jit.kernels()
                             if k.targetoptions.get("inline") == "always"]}))
"""


def test_cache_accounting_in_a_fresh_cache(tmp_path):
    """In an empty cache a call inside cache_only() raises CacheMiss; once compiled,
    the cache holds the signature and the next process loads it in cache_only()."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run():
        out = subprocess.run([sys.executable, "-c", ACCOUNTING], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    cold, warm = run(), run()
    signature = "array(float32, 1d, C), array(float32, 1d, C)"
    assert not cold["hit"] and warm["hit"]
    assert cold["cached"] == warm["cached"] == [signature]
    assert cold["held"] == [signature]
    assert cold["inline"] == []  # inline="always" helpers are not kernels of their own


def test_info_reports_a_missing_data_dir_and_a_root_named_like_the_dataset(tmp_path, monkeypatch,
                                                                           capsys):
    """info looks for the data as the loaders do: a $TINYNET_DATA_DIR that does not exist is
    reported (not raised), and a root named mnist/ holding the files is the dataset folder."""
    from tinynet.info import _datasets, format_info
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path / "typo"))
    d = _datasets()
    assert "does not exist" in d["mnist"]["error"]
    assert main(["info"]) == 0
    assert "typo" in capsys.readouterr().out
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / (name + ".gz")).write_bytes(b"")
    monkeypatch.setenv("TINYNET_DATA_DIR", str(folder))
    entry = _datasets()["mnist"]
    assert entry["missing"] == [] and entry["found"] == [str(folder)]
    from tinynet.info import collect
    assert f"mnist           found in {folder}" in format_info(collect())


def test_info_names_how_the_cuda_backend_launches(monkeypatch):
    """`tinynet info` says whose launcher the cuda kernels go through when the cuda
    backend loads, and nothing about it when it does not."""
    from tinynet import info
    from tinynet.backends import cuda_device
    assert info._cuda_launcher({"cuda": "unavailable: no GPU"}) is None
    base = info.collect()
    assert "cuda launches" not in format_info(dict(base, cuda_launcher=None))
    monkeypatch.setattr(cuda_device, "SIMULATOR", False)
    for launcher, says in (("cupy", "CuPy's launcher after each kernel's first launch "
                                    "(TINYNET_CUDA_LAUNCHER=cupy)"),
                           ("numba", "numba-cuda's launcher (TINYNET_CUDA_LAUNCHER=numba)")):
        monkeypatch.setattr(cuda_device, "LAUNCHER", launcher)
        assert info._cuda_launcher({"cuda": "available"}) == says
        assert f"  cuda launches   {says}\n" in format_info(dict(base, cuda_launcher=says)) + "\n"
    monkeypatch.setattr(cuda_device, "SIMULATOR", True)
    assert info._cuda_launcher({"cuda": "available"}) == "numba's CUDA simulator"
