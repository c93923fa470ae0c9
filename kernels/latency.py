"""Cold and warm first-step latency: how long until the first training step
of the reference CNN is done, in a new process.

- cold: an empty Numba cache (a fresh NUMBA_CACHE_DIR), so every kernel the
  step uses is compiled;
- warm: the same command again, now loading the compiled kernels from that cache.

Each run is a new ``python`` process that imports tinynet, builds the CNN of
``tinynet train`` (tinynet.cli.build_cnn, batch norm by default) and runs one
forward, backward and Adam step on a batch of 64; the time is the process's
wall time from start to the end of that step.

    python -m kernels.latency [--norm batch]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import time, numpy as np
t0 = time.perf_counter()
import tinynet as tn
from tinynet.cli import build_cnn
t1 = time.perf_counter()
model = build_cnn({norm!r})
loss_fn = tn.SoftmaxCrossEntropy()
opt = tn.optim.Adam(model.parameters())
x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
y = np.arange(64) % 10
loss_fn.forward(model.forward(x), y)
model.zero_grad()
model.backward(loss_fn.backward())
opt.step()
t2 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{t2 - t1:.3f}}")
"""


def run(norm, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(norm=norm)], env=env,
                         capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    import_s, step_s = map(float, out.split())
    return wall, import_s, step_s


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.latency")
    parser.add_argument("--norm", default="batch", choices=("batch", "layer", "instance", "group"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache_dir:
        print(f"first-step latency, reference CNN, norm={args.norm}, batch 64")
        print(f"{'run':<6}{'process wall s':>16}{'import s':>10}{'first step s':>14}")
        for name in ("cold", "warm"):
            wall, import_s, step_s = run(args.norm, cache_dir)
            print(f"{name:<6}{wall:16.2f}{import_s:10.2f}{step_s:14.2f}")


if __name__ == "__main__":
    main()
