"""The study runner: a grid of independent runs, on local processes or a Dask cluster.

An experiment is a function ``run(config) -> result`` (both JSON-serializable
dicts) and a list of configs. Each run is a pure function of its config: it
seeds everything it draws from the config. Its result is stored as

    OUT/<key>.json = {"key": key, "config": config, "result": result, "seconds": s}

where ``key = config_key(config)``, a SHA-256 of the whole config in
canonical JSON. Files are written by ``tinynet.serialization.atomic_write``
(a temp file beside the target, fsynced, then renamed over it) by the
process that drives the study, never by a worker, so a worker on another
machine needs no shared disk. A rerun deletes the temp files a killed
driver left, loads the keys whose files parse and hold the same config, and
runs only the others: an interrupted study resumes where it stopped, and a
corrupt or partial file is redone.

Where the runs go is the executor's business, not the experiment's:

- ``workers=N`` (default 1): N local processes from the ``spawn`` context
  (GNU OpenMP is not fork-safe), each with ``numba_threads`` numba and BLAS
  threads (default 1): NUMBA_NUM_THREADS and the BLAS variables are set in
  the children's environment before they import numba. The workers die
  with the driver: on Linux the kernel sends them SIGKILL when it exits
  (prctl PR_SET_PDEATHSIG), elsewhere a thread in each worker polls its
  parent pid every second, so a killed driver leaves no workers behind.
- ``scheduler="tcp://HOST:PORT"``: the runs are Dask futures on that
  distributed cluster (``pip install "tinynet[cluster]"``). Dask reruns a
  task whose worker died, so a killed worker costs time, not results. A
  scheduler that does not answer within ``CONNECT_TIMEOUT`` seconds is a
  RuntimeError.

A progress bar (tinynet.progress.progress_bar: off under $CI and when stderr
is not a terminal) shows the runs done, running and left, and the time left.
"""
import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..progress import progress_bar
from ..serialization import atomic_write, remove_stale_temps

__all__ = ["config_key", "result_path", "load_result", "run_grid", "CONNECT_TIMEOUT"]

# Seconds to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = 5
# prctl's option that sets the signal a process gets when its parent exits (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS")


def config_key(config):
    """The run's key: the first 20 hex digits of SHA-256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def result_path(out_dir, config):
    """Where the result of ``config`` is stored: ``out_dir/<key>.json``."""
    return os.path.join(os.fspath(out_dir), config_key(config) + ".json")


def load_result(out_dir, config):
    """The stored record of ``config``, or None when it is missing, corrupt or another run's."""
    try:
        with open(result_path(out_dir, config)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("config") != config
            or record.get("key") != config_key(config) or "result" not in record):
        return None
    return record


def _timed(fn, config, threads):
    """Run ``fn(config)`` with ``threads`` threads; return (result, seconds). Runs in the worker.

    The thread count is set for every run, so a worker that a cluster
    restarted after a failure gets it too.
    """
    _init_worker(threads)
    t0 = time.perf_counter()
    result = fn(config)
    return result, time.perf_counter() - t0


def _init_worker(threads):
    """Worker start-up: numba and BLAS thread counts (numba read its variable at import)."""
    import tinynet
    tinynet.set_num_threads(threads)


def _init_local_worker(threads, driver):
    """A local worker's start-up: die with the driver (pid ``driver``), then ``_init_worker``."""
    _die_with_parent(driver)
    _init_worker(threads)


def _die_with_parent(driver):
    """End this process when its parent, the process ``driver``, exits.

    On Linux the kernel sends SIGKILL to this process when its parent exits
    (prctl PR_SET_PDEATHSIG); the parent may have exited before the call, so
    the parent pid is checked after it. Where prctl is missing, a daemon
    thread checks the parent pid every second and exits when it changed.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, TypeError):
        prctl = None
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
        if os.getppid() != driver:
            os._exit(1)
        return

    def watch():
        while os.getppid() == driver:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="tinynet-study-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _child_environment(threads):
    """Set the thread variables for child processes started inside the block."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _LocalPool:
    """Local spawn processes behind the executor interface the runner uses.

    The workers are started here, by the calling thread, and are the
    driver's direct children (spawn, not forkserver), which the parent-death
    signal of ``_die_with_parent`` needs.
    """

    def __init__(self, workers, threads):
        self.slots = workers
        self.threads = threads
        with _child_environment(threads):
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_local_worker,
                                            initargs=(threads, os.getpid()))
            # Start every worker now, while the environment is set.
            list(self.pool.map(_noop, range(workers)))

    def submit(self, fn, config):
        return self.pool.submit(_timed, fn, config, self.threads)

    def as_completed(self, futures):
        return as_completed(futures)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _noop(_):
    return None


class _DaskPool:
    """A Dask distributed cluster behind the same interface."""

    def __init__(self, scheduler, threads):
        try:
            from distributed import Client
        except ImportError as e:
            raise RuntimeError("run_grid: --scheduler needs Dask distributed; "
                               "pip install \"tinynet[cluster]\"") from e
        try:
            self.client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise RuntimeError(f"study: cannot reach the Dask scheduler at {scheduler} within "
                               f"{CONNECT_TIMEOUT} s ({reason})") from None
        self.threads = threads
        self.slots = max(1, sum(self.client.nthreads().values()))

    def submit(self, fn, config):
        # pure=False: a resubmitted config runs again rather than reuse a cached future.
        return self.client.submit(_timed, fn, config, self.threads, pure=False,
                                  key=f"run-{config_key(config)}")

    def as_completed(self, futures):
        from distributed import as_completed as dask_as_completed
        return dask_as_completed(futures)

    def close(self):
        self.client.close()


def _status(slots, unfinished):
    """The bar's postfix: runs in progress and runs still waiting (done is the bar's count)."""
    running = min(slots, unfinished)
    return f"running {running}, left {unfinished - running}"


def run_grid(fn, configs, out_dir, workers=1, scheduler=None, numba_threads=1, progress=True,
             desc="runs"):
    """Run ``fn`` on every config that has no valid stored result; return all records.

    Parameters
    ----------
    fn : callable
        ``fn(config) -> dict``, importable by name (a module-level function),
        since it runs in other processes.
    configs : list of dict
        The grid; JSON-serializable, and no two alike.
    out_dir : str or path
        Directory of the result files (created if needed).
    workers : int
        Local worker processes, when no ``scheduler`` is given.
    scheduler : str, optional
        A Dask scheduler address, "tcp://HOST:PORT"; the runs go there.
    numba_threads : int
        numba and BLAS threads per worker.
    progress : bool
        Show the progress bar on stderr (never under $CI or when stderr is
        not a terminal).
    desc : str
        The bar's label.

    Returns
    -------
    list of dict
        The records ({"key", "config", "result", "seconds"}) in the order of ``configs``.
    """
    configs = list(configs)
    keys = [config_key(c) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("run_grid: configs must be distinct; two have the same key")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_grid: workers must be a positive int, got {workers!r}")
    os.makedirs(out_dir, exist_ok=True)
    for c in configs:
        remove_stale_temps(result_path(out_dir, c))
    records = {k: load_result(out_dir, c) for k, c in zip(keys, configs)}
    todo = [c for k, c in zip(keys, configs) if records[k] is None]
    if todo:
        pool = _DaskPool(scheduler, numba_threads) if scheduler else _LocalPool(
            min(workers, len(todo)), numba_threads)
        bar = progress_bar(len(configs), desc, enabled=progress, initial=len(configs) - len(todo),
                           unit="run", smoothing=0.0)
        try:
            futures = {pool.submit(fn, c): c for c in todo}
            left = len(todo)
            bar.set_postfix_str(_status(pool.slots, left))
            for future in pool.as_completed(list(futures)):
                config = futures[future]
                result, seconds = future.result()
                record = {"key": config_key(config), "config": config, "result": result,
                          "seconds": seconds}
                text = json.dumps(record, sort_keys=True, allow_nan=True)
                atomic_write(result_path(out_dir, config), lambda f: f.write(text.encode()))
                records[record["key"]] = record
                left -= 1
                bar.update(1)
                bar.set_postfix_str(_status(pool.slots, left))
        finally:
            bar.close()
            pool.close()
    return [records[k] for k in keys]
