"""The study runner: keys, atomic result files, resume, corrupt files redone,
local spawn workers, and a real Dask LocalCluster that loses a worker mid-run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tinynet.study import runner
from tinynet.study.common import run_train
from conftest import REPO


def tiny(seed, steps=20):
    return {"data": "synthetic", "n_train": 256, "n_test": 64, "depth": 1, "width": 16,
            "steps": steps, "batch_size": 32, "seed": seed, "log_every": 5}


def run_train_one_thread(config):
    """run_train here with one numba and one BLAS thread, as a study worker runs it.

    A run is a pure function of its config at a given thread count; across
    thread counts BLAS may round differently (tests/test_thread_counts.py
    bounds that), so the comparison with a worker's result uses its count.
    """
    import threadpoolctl
    import tinynet as tn
    before = tn.get_num_threads()
    tn.set_num_threads(1)
    try:
        return run_train(config)
    finally:
        tn.set_num_threads(before["numba"])
        if before["blas"] is not None:
            threadpoolctl.threadpool_limits(limits=before["blas"], user_api="blas")


def pure(result):
    """A result without its wall-clock times, the one part that is not a function of the config."""
    return {k: v for k, v in result.items() if k not in ("wall", "threads")}


def test_config_key_is_canonical_and_distinct():
    a = {"lr": 0.1, "norm": "bn", "nested": {"x": [1, 2]}}
    b = {"nested": {"x": [1, 2]}, "norm": "bn", "lr": 0.1}
    assert runner.config_key(a) == runner.config_key(b)
    assert runner.config_key(a) != runner.config_key({**a, "lr": 0.2})
    assert len(runner.config_key(a)) == 20


def test_runs_are_pure_functions_of_the_config():
    r1, r2 = run_train(tiny(3)), run_train(tiny(3))
    assert r1["loss"] == r2["loss"] and r1["test_acc"] == r2["test_acc"]
    assert run_train(tiny(4))["loss"] != r1["loss"]


def test_local_workers_store_every_result_and_rerun_skips(tmp_path):
    configs = [tiny(s) for s in range(4)]
    records = runner.run_grid(run_train, configs, tmp_path, workers=2, progress=False)
    assert [r["config"] for r in records] == configs
    files = sorted(os.listdir(tmp_path))
    assert files == sorted(runner.config_key(c) + ".json" for c in configs)
    assert pure(records[0]["result"]) == pure(run_train_one_thread(configs[0]))
    assert all(r["result"]["threads"] == {"numba": 1, "blas": 1} for r in records)
    stamps = {f: os.stat(tmp_path / f).st_mtime_ns for f in files}
    again = runner.run_grid(run_train, configs, tmp_path, workers=2, progress=False)
    assert again == records
    assert {f: os.stat(tmp_path / f).st_mtime_ns for f in files} == stamps


def test_corrupt_partial_or_foreign_files_are_redone(tmp_path):
    configs = [tiny(s) for s in range(3)]
    records = runner.run_grid(run_train, configs, tmp_path, workers=1, progress=False)
    paths = [runner.result_path(tmp_path, c) for c in configs]
    with open(paths[0], "w") as f:
        f.write('{"key": "trunc')                       # partial write
    with open(paths[1], "w") as f:
        json.dump({**records[2], "key": records[1]["key"]}, f)  # another config's record
    untouched = os.stat(paths[2]).st_mtime_ns
    assert runner.load_result(tmp_path, configs[0]) is None
    assert runner.load_result(tmp_path, configs[1]) is None
    again = runner.run_grid(run_train, configs, tmp_path, workers=1, progress=False)
    assert pure(again[0]["result"]) == pure(records[0]["result"])
    assert pure(again[1]["result"]) == pure(records[1]["result"])
    assert os.stat(paths[2]).st_mtime_ns == untouched
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_resume_after_the_driver_is_killed(tmp_path):
    configs = [tiny(s, steps=150) for s in range(6)]
    script = textwrap.dedent(f"""
        from tinynet.study import runner
        from tinynet.study.common import run_train
        runner.run_grid(run_train, {configs!r}, {str(tmp_path)!r}, workers=1, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": REPO}
    # A session of its own, so that the kill takes the driver's workers too.
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(f.endswith(".json") for f in os.listdir(tmp_path)):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {f: os.stat(tmp_path / f).st_mtime_ns
            for f in os.listdir(tmp_path) if f.endswith(".json")}
    assert 1 <= len(done) < len(configs), "the driver must be killed part-way"
    records = runner.run_grid(run_train, configs, tmp_path, workers=2, progress=False)
    assert all(r["result"]["test_acc"] >= 0 for r in records)
    for f, stamp in done.items():
        assert os.stat(tmp_path / f).st_mtime_ns == stamp, "a finished run was redone"
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".json")]) == len(configs)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        runner.run_grid(run_train, [tiny(1), tiny(1)], tmp_path)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        runner.run_grid(run_train, [tiny(1)], tmp_path, workers=0)


def test_dask_cluster_survives_a_killed_worker(tmp_path):
    distributed = pytest.importorskip("distributed", reason="the cluster test needs dask")
    configs = [tiny(s, steps=400) for s in range(8)]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  worker_dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
            killed = {}

            def kill_one_mid_run():
                # Wait until a worker is running a task and at least one result is in.
                deadline = time.time() + 120
                while time.time() < deadline:
                    busy = [w for w, tasks in client.processing().items() if tasks]
                    if busy and any(f.endswith(".json") for f in os.listdir(tmp_path)):
                        killed["worker"] = busy[0]
                        os.kill(pids[busy[0]], 9)
                        return
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_one_mid_run)
            killer.start()
            records = runner.run_grid(run_train, configs, tmp_path,
                                      scheduler=cluster.scheduler_address, progress=False)
            killer.join()
    assert "worker" in killed, "no worker was killed"
    assert [r["config"] for r in records] == configs
    files = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert sorted(files) == sorted(runner.config_key(c) + ".json" for c in configs)
    assert pure(records[5]["result"]) == pure(run_train_one_thread(configs[5]))
    assert all(r["result"]["threads"] == {"numba": 1, "blas": 1} for r in records)


def test_progress_bar_shows_done_running_left_and_time_left(tmp_path, capfd):
    runner.run_grid(run_train, [tiny(s) for s in range(3)], tmp_path, workers=1,
                    progress=True, desc="probe")
    err = capfd.readouterr().err
    assert "probe" in err and "3/3" in err
    assert "running 1, left 2" in err and "running 0, left 0" in err
    assert "<" in err  # tqdm's elapsed<remaining field


def test_status_counts_running_and_waiting():
    assert runner._status(2, 5) == "running 2, left 3"
    assert runner._status(4, 1) == "running 1, left 0"
