"""Thread interplay of Numba parallel kernels and BLAS GEMMs on this machine.

A training step alternates Numba ``prange`` kernels (norms, activations,
im2col) with BLAS GEMMs (``numpy.matmul``, OpenBLAS bundled with numpy). Both
keep a thread pool, and an idle pool may keep spinning on the cores the other
one needs. This benchmark measures that effect.

Workload, per step:

    kernel:  y = max(x + b[c], 0),  s[n, c] = sum_hw y     x: (64, 32, 28, 28) float32
    GEMM:    Y = A @ B                                      A: (64*196, 288), B: (288, 64) float32

It times the launch of a tiny parallel kernel (16 iterations, back to back:
the fixed cost of waking the pool), the kernel alone, the GEMM alone and the
two interleaved (kernel, GEMM, kernel, GEMM, ...). Each child takes the median over several
timed blocks. The configurations run round-robin for several rounds and the
table shows the best round for each number: load from other processes only
adds time, and round-robin spreads it over all configurations alike. The
last column, interleaved / (kernel + GEMM), is 1.0 when the two pools do not
get in each other's way and 2.0 when interleaving doubles the time.

Configurations cross the Numba threading layer (workqueue, omp, tbb when
libtbb.so.12 loads, found as ``tinynet.threads.preload_tbb`` finds it), ``OMP_WAIT_POLICY`` (unset or PASSIVE) and
``OPENBLAS_NUM_THREADS`` (2 or 1). Each one runs in a fresh subprocess,
because the threading layer and these variables are fixed when the pools
start. The child does not import tinynet, so tinynet's own threading default
does not leak into the measurement.

Run:

    python -m kernels.system.threads            # the full table (a few minutes)
    python -m kernels.system.threads --rounds 1 --repeats 3 --steps 5   # quick look

The cpu/wall column is the process CPU time over wall time while interleaved:
about 2 means both cores were busy (working or spinning), about 1 means one.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

__all__ = ["main"]

SHAPE = (64, 32, 28, 28)
GEMM_M, GEMM_K, GEMM_N = 64 * 196, 288, 64
IDLE_S = 0.2  # pause before a measured block, so pools that still spin go idle


def _child(steps, repeats):
    """Time launch, kernel alone, GEMM alone and both interleaved; print one JSON line."""
    if os.environ.get("NUMBA_THREADING_LAYER") == "tbb":
        from tinynet.threads import preload_tbb
        preload_tbb()  # a pip-installed libtbb is not on the loader's path in a venv
    import numba
    import numpy as np

    @numba.njit(parallel=True, fastmath={"reassoc", "contract"})
    def bias_relu_sum(x, b, y, s):
        # Parallel over the N*C slabs: iteration i writes only y[n, c] and s[n, c].
        N, C, H, W = x.shape
        for i in numba.prange(N * C):
            n = i // C
            c = i % C
            acc = 0.0
            for h in range(H):
                for w in range(W):
                    v = x[n, c, h, w] + b[c]
                    if v < np.float32(0.0):
                        v = np.float32(0.0)
                    y[n, c, h, w] = v
                    acc += v
            s[n, c] = acc

    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    b = rng.standard_normal(SHAPE[1], dtype=np.float32)
    y = np.empty_like(x)
    s = np.empty(SHAPE[:2], dtype=np.float64)
    A = rng.standard_normal((GEMM_M, GEMM_K), dtype=np.float32)
    B = rng.standard_normal((GEMM_K, GEMM_N), dtype=np.float32)
    Y = np.empty((GEMM_M, GEMM_N), dtype=np.float32)

    @numba.njit(parallel=True)
    def tiny(out):
        # Parallel over 16 elements: iteration i writes only out[i].
        for i in numba.prange(out.shape[0]):
            out[i] = i

    z = np.empty(16)

    def kernel():
        bias_relu_sum(x, b, y, s)

    def launch():
        tiny(z)

    def gemm():
        np.matmul(A, B, out=Y)

    def both():
        kernel()
        gemm()

    # Warm up: compile, start both pools.
    for _ in range(3):
        both()
        launch()

    def block(step, steps=steps):
        time.sleep(IDLE_S)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - wall0
        return wall / steps, (time.process_time() - cpu0) / wall

    times = {"launch": [], "kernel": [], "gemm": [], "both": [], "both_cpu": []}
    for _ in range(repeats):
        times["launch"].append(block(launch, steps=100)[0])
        times["kernel"].append(block(kernel)[0])
        times["gemm"].append(block(gemm)[0])
        step_time, cpu = block(both)
        times["both"].append(step_time)
        times["both_cpu"].append(cpu)
    result = {k: statistics.median(v) for k, v in times.items()}
    result["layer"] = numba.threading_layer()
    print(json.dumps(result))


def _tbb_loadable():
    """True when numba's tbb layer can find libtbb.so.12 (on the loader's path or in this environment)."""
    import ctypes
    from tinynet.threads import preload_tbb
    try:
        ctypes.CDLL("libtbb.so.12")
        return True
    except OSError:
        return preload_tbb() is not None


def _configs():
    """(layer, OMP_WAIT_POLICY or None, OPENBLAS_NUM_THREADS) to measure."""
    layers = ["workqueue", "omp"]
    if _tbb_loadable():
        layers.append("tbb")
    return [(layer, policy, blas)
            for layer in layers
            for policy in (None, "PASSIVE")
            for blas in (2, 1)]


def _run_config(layer, policy, blas, steps, repeats):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT")}
    env["NUMBA_THREADING_LAYER"] = layer
    env["OPENBLAS_NUM_THREADS"] = str(blas)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-m", "kernels.system.threads", "--child",
           "--steps", str(steps), "--repeats", str(repeats)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per child; median kept")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin passes; best kept")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.steps, args.repeats)
        return

    configs = _configs()
    runs = {config: [] for config in configs}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for config in configs:
            runs[config].append(_run_config(*config, args.steps, args.repeats))
    load_after = os.getloadavg()[0]

    print(f"cpus: {os.cpu_count()}  kernel {SHAPE} float32, "
          f"GEMM ({GEMM_M}, {GEMM_K}) x ({GEMM_K}, {GEMM_N}) float32")
    print(f"best of {args.rounds} rounds of the median of {args.repeats} blocks "
          f"x {args.steps} steps; load average {load_before:.2f} before, {load_after:.2f} after")
    header = (f"{'layer':<10} {'OMP_WAIT_POLICY':<16} {'BLAS thr':>8} {'launch us':>10} "
              f"{'kernel ms':>10} {'GEMM ms':>8} {'interleaved ms':>15} {'ratio':>6} {'cpu/wall':>9}")
    print(header)
    print("-" * len(header))
    for (layer, policy, blas), results in runs.items():
        name = f"{layer:<10} {policy or 'unset':<16} {blas:>8}"
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            print(f"{name}  failed:\n{failed[0]}")
            continue
        ran = {r["layer"] for r in results}
        if ran != {layer}:
            name += f" (ran {', '.join(sorted(ran))})"
        r = {key: min(run[key] for run in results) for key in ("launch", "kernel", "gemm", "both")}
        r["both_cpu"] = min(results, key=lambda run: run["both"])["both_cpu"]
        ratio = r["both"] / (r["kernel"] + r["gemm"])
        print(f"{name} {r['launch'] * 1e6:>10.1f} {r['kernel'] * 1e3:>10.2f} "
              f"{r['gemm'] * 1e3:>8.2f} {r['both'] * 1e3:>15.2f} {ratio:>6.2f} {r['both_cpu']:>9.2f}")


if __name__ == "__main__":
    main()
