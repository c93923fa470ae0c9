"""tinynet info: versions, backends, threads, BLAS, kernel cache and data sets."""
import json
import os

import numba
import numpy as np

import tinynet as tn
from tinynet.cli import main


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
