"""Cold and warm first-step latency: how long until the first training step
of the reference CNN is done, in a new process.

- cold: an empty Numba cache (a fresh NUMBA_CACHE_DIR), so every kernel the
  step uses is compiled;
- warm: the same command again, now loading the compiled kernels from that cache;
- cold, tinynet.warmup first: a fresh empty cache, and the child calls
  ``tinynet.warmup.warmup(model, x, loss_fn, Adam)`` (the kernels compiled
  in parallel processes, one per CPU) before its first step; "first step s"
  includes the warmup.

The cold run also lists the kernels by compile time (numba's compile events,
self time: a helper's compile is not counted again in its caller's).

Each run is a new ``python`` process that imports tinynet, builds the CNN of
``tinynet train`` (tinynet.zoo.build_cnn, batch norm by default) and runs one
forward, backward and Adam step on a batch of 64; the time is the process's
wall time from start to the end of that step.

    python -m kernels.system.latency [--norm batch]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, time, numpy as np
t0 = time.perf_counter()
from kernels.system.latency import CompileTimer
timer = CompileTimer()
import tinynet as tn
from tinynet.zoo import build_cnn
t1 = time.perf_counter()
model = build_cnn({norm!r})
loss_fn = tn.SoftmaxCrossEntropy()
opt = tn.optim.Adam(model.parameters())
x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
y = np.arange(64) % 10
if {parallel}:
    from tinynet.warmup import warmup
    warmup(model, x, loss_fn, tn.optim.Adam)
loss_fn.forward(model.forward(x), y)
model.zero_grad()
model.backward(loss_fn.backward())
opt.step()
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "step_s": t2 - t1, "kernels": timer.per_kernel()}}))
"""


class CompileTimer:
    """Records numba's compile events: the self time of each kernel compile.

    Numba fires a "numba:compile" event around each compile that misses the
    cache; a kernel's compile includes the compiles of the jitted helpers it
    calls, so their time is subtracted from the caller's (self time).
    Registered at construction for the rest of the process.
    """

    def __init__(self):
        from numba.core import event
        self.stack, self.self_s = [], {}
        timer = self

        class Listener(event.Listener):
            def on_start(self, ev):
                timer.stack.append([time.perf_counter(), 0.0])

            def on_end(self, ev):
                start, children = timer.stack.pop()
                total = time.perf_counter() - start
                if timer.stack:
                    timer.stack[-1][1] += total
                func = ev.data["dispatcher"].py_func
                name = f"{func.__module__}.{func.__qualname__}"
                count, seconds = timer.self_s.get(name, (0, 0.0))
                timer.self_s[name] = (count + 1, seconds + total - children)
        event.register("numba:compile", Listener())

    def per_kernel(self):
        """{kernel name: [signatures compiled, self seconds]}."""
        return {k: list(v) for k, v in self.self_s.items()}


def run(norm, cache_dir, parallel=False):
    from kernels.common import child_env
    env = child_env(NUMBA_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(norm=norm, parallel=parallel)],
                         env=env,
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    result = json.loads(out.strip().splitlines()[-1])
    return wall, result["import_s"], result["step_s"], result["kernels"]


def print_compile_times(kernels, top):
    """The ``top`` kernels of a cold run by compile self time, and the total."""
    total = sum(s for _, s in kernels.values())
    print(f"\ncold run: {len(kernels)} kernels compiled, {total:.2f} s of compile self time; "
          f"the {min(top, len(kernels))} slowest:")
    print(f"{'kernel':<58}{'signatures':>11}{'compile s':>11}")
    for name, (count, seconds) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"{name.removeprefix('tinynet.backends.'):<58}{count:11d}{seconds:11.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.system.latency")
    parser.add_argument("--norm", default="batch", choices=("batch", "layer", "instance", "group"))
    parser.add_argument("--top", type=int, default=15, help="kernels listed by compile time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache_dir:
        print(f"first-step latency, reference CNN, norm={args.norm}, batch 64")
        print(f"{'run':<6}{'process wall s':>16}{'import s':>10}{'first step s':>14}")
        kernels = {}
        for name in ("cold", "warm"):
            wall, import_s, step_s, kernels[name] = run(args.norm, cache_dir)
            print(f"{name:<6}{wall:16.2f}{import_s:10.2f}{step_s:14.2f}")
    with tempfile.TemporaryDirectory() as cache_dir:
        wall, import_s, step_s, _ = run(args.norm, cache_dir, parallel=True)
        print(f"{'cold, tinynet.warmup first':<6}{wall:16.2f}{import_s:10.2f}{step_s:14.2f}")
    print_compile_times(kernels["cold"], args.top)


if __name__ == "__main__":
    main()
