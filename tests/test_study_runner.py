"""The study runner: keys, atomic result files, resume, corrupt files redone,
local spawn workers that die with their driver, a real Dask LocalCluster that
loses a worker mid-run, an unreachable scheduler, and the progress bar."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import tinynet.cli
from tinynet.study import runner
from tinynet.study.common import run_train
from conftest import REPO

# A grid function for driver subprocesses, importable by their spawn workers
# from the directory it is written to: it records its worker's pid, then sleeps.
SLEEPER = textwrap.dedent("""
    import os
    import time

    def sleep_long(config):
        with open(os.path.join(config["dir"], f"pid-{os.getpid()}"), "w"):
            pass
        time.sleep(config["seconds"])
        return {"slept": config["seconds"]}
""")


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
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_results_are_fsynced_and_stale_temps_removed(tmp_path, monkeypatch):
    configs = [tiny(s, steps=5) for s in range(2)]
    # A temp file that a driver killed inside atomic_write leaves, named as it names them.
    name = os.path.basename(runner.result_path(tmp_path, configs[0]))
    fd, stale = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    (tmp_path / "notes.txt").write_text("not the runner's")
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    runner.run_grid(run_train, configs, tmp_path, workers=1, progress=False)
    assert not os.path.exists(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["notes.txt"] + [runner.config_key(c) + ".json" for c in configs])
    assert len(synced) == len(configs), "every result file is fsynced before its rename"


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


def alive(pid):
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_die_with_a_killed_driver(tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    configs = [{"dir": str(pid_dir), "seconds": 600, "i": i} for i in range(2)]
    script = textwrap.dedent(f"""
        import sleeper
        from tinynet.study import runner
        runner.run_grid(sleeper.sleep_long, {configs!r}, {str(tmp_path / "runs")!r},
                        workers=2, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, str(tmp_path)])}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    pids = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(pids) < 2 and driver.poll() is None:
            pids = [int(f.split("-")[1]) for f in os.listdir(pid_dir)]
            time.sleep(0.05)
        assert len(pids) == 2 and driver.poll() is None, "both workers must be running"
        assert all(alive(p) for p in pids)
        # The driver alone, as a killed terminal or an OOM kill ends it.
        driver.kill()
        driver.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        assert not [p for p in pids if alive(p)], "workers outlived their driver"
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
            driver.wait()


# A process that calls _die_with_parent (with prctl missing for "poll"), records
# its pid, and sleeps; its parent, the stand-in for the driver, sleeps too.
ORPHAN = textwrap.dedent("""
    import ctypes, os, sys, time

    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    if sys.argv[2] == "poll":
        ctypes.CDLL = no_libc
    from tinynet.study import runner
    runner._die_with_parent(os.getppid())
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
""")


@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_die_with_parent_ends_the_process_when_its_parent_exits(tmp_path, how):
    pid_file = tmp_path / "pid"
    parent_script = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                     f"{ORPHAN!r}, {str(pid_file)!r}, {how!r}]); time.sleep(600)")
    env = {**os.environ, "PYTHONPATH": REPO}
    parent = subprocess.Popen([sys.executable, "-c", parent_script], env=env,
                              start_new_session=True)
    pid = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not pid:
            pid = pid_file.exists() and int(pid_file.read_text() or 0)
            time.sleep(0.05)
        assert pid and alive(pid)
        parent.kill()
        parent.wait()
        deadline = time.time() + 5
        while time.time() < deadline and alive(pid):
            time.sleep(0.05)
        assert not alive(pid), f"the child outlived its parent ({how})"
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


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
        killed = {}

        def kill_one_mid_run():
            # Wait until a worker is running a task and at least one result is in.
            # The scheduler lives in this process: its worker states are read
            # directly. A second Client beside run_grid's once made run_grid's
            # future.result() raise "bound to a different event loop" after the kill.
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    busy = [ws for ws in list(cluster.scheduler.workers.values())
                            if ws.processing and ws.pid]
                except RuntimeError:  # the scheduler's dict changed while copied
                    continue
                if busy and any(f.endswith(".json") for f in os.listdir(tmp_path)):
                    killed["worker"] = busy[0].address
                    os.kill(busy[0].pid, 9)
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


def test_unreachable_scheduler_is_a_one_line_error_within_seconds(tmp_path, capsys):
    pytest.importorskip("distributed", reason="--scheduler needs dask distributed")
    t0 = time.perf_counter()
    code = tinynet.cli.main(["study", "lr", "--quick", "--scheduler", "tcp://127.0.0.1:9",
                             "--out", str(tmp_path), "--no-progress"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("tinynet: error: study: cannot reach the Dask scheduler at "
                          "tcp://127.0.0.1:9 within 5 s ("), err
    assert elapsed < 20


def test_progress_bar_shows_done_running_left_and_time_left(tmp_path, capfd, monkeypatch):
    # The bar is drawn on a terminal only: make the captured stderr one, outside CI.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    runner.run_grid(run_train, [tiny(s) for s in range(3)], tmp_path, workers=1,
                    progress=True, desc="probe")
    err = capfd.readouterr().err
    assert "probe" in err and "3/3" in err
    assert "running 1, left 2" in err and "running 0, left 0" in err
    assert "<" in err  # tqdm's elapsed<remaining field


def test_status_counts_running_and_waiting():
    assert runner._status(2, 5) == "running 2, left 3"
    assert runner._status(4, 1) == "running 1, left 0"


def test_progress_bar_prints_nothing_when_stderr_is_a_pipe(tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    configs = [{"dir": str(tmp_path), "seconds": 0.3, "i": i} for i in range(2)]
    script = textwrap.dedent(f"""
        import sleeper
        from tinynet.study import runner
        runner.run_grid(sleeper.sleep_long, {configs!r}, {str(tmp_path / "runs")!r},
                        workers=1, progress=True, desc="probe")
    """)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, str(tmp_path)])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"" and proc.stdout == b""
    assert len(os.listdir(tmp_path / "runs")) == len(configs)
