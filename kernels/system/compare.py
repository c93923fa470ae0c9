"""Two checkouts of tinynet side by side: the same public-API ops timed in each.

A change that moves code around should not move its speed. This times a few
ops through tinynet's public API (an optimizer step on 2^20 float32
parameters, ReLU and LeakyReLU forward + backward on (64, 32, 28, 28), the
speedrun recipe's Conv2D(24, 32, 3) on 12x12 at batch 256 and the reference
CNN's Conv2D(32, 64, 3, padding=1) on 14x14 at batch 64, Dense (3136, 128)
forward + backward at batch 64) in a new process per checkout,
alternating the checkouts for ``--rounds`` rounds so that load from other
processes falls on both alike, and prints the median of each with the ratio
B / A (above 1: B is slower).

    python -m kernels.system.compare PATH_A PATH_B [--rounds 5]

Each PATH is the root of a checkout (it holds tinynet/); each child runs
there, so it imports that checkout's tinynet, and selects the cpu backend
before its first kernel.
"""
import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import json, statistics, time
import numpy as np
import tinynet as tn

tn.set_backend("cpu")
rng = np.random.default_rng(0)


def median(fn, repeat=30, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


out = {}
p = tn.Parameter(rng.standard_normal(1 << 20).astype(np.float32))
p.grad[...] = 1e-3
for name, opt in (("SGD 2^20", tn.optim.SGD([p], lr=0.01)),
                  ("SGD momentum nesterov wd 2^20",
                   tn.optim.SGD([p], lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
                  ("Adam 2^20", tn.optim.Adam([p], lr=0.01))):
    out[name] = median(opt.step)
x = rng.standard_normal((64, 32, 28, 28)).astype(np.float32)
dy = np.ones_like(x)


def forward_backward(layer, x, dy):
    def step():
        layer.forward(x)
        layer.backward(dy)
    return step


for name, layer in (("ReLU (64, 32, 28, 28)", tn.ReLU()),
                    ("LeakyReLU (64, 32, 28, 28)", tn.LeakyReLU())):
    out[name] = median(forward_backward(layer, x, dy))
for name, layer, shape in (
        ("Conv2D(24, 32, 3) 12x12 batch 256", tn.Conv2D(24, 32, 3), (256, 24, 12, 12)),
        ("Conv2D(32, 64, 3, p1) 14x14 b64", tn.Conv2D(32, 64, 3, padding=1), (64, 32, 14, 14))):
    xc = rng.standard_normal(shape).astype(np.float32)
    dyc = np.ones_like(layer.forward(xc))
    out[name] = median(forward_backward(layer, xc, dyc))
xd = rng.standard_normal((64, 3136)).astype(np.float32)
dyd = np.ones((64, 128), np.float32)
out["Dense(3136, 128) batch 64"] = median(forward_backward(tn.Dense(3136, 128), xd, dyd),
                                          repeat=50)
print(json.dumps(out))
'''


def run(path):
    """The ops' seconds in a new process at checkout ``path``."""
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=path, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(path_a, path_b, rounds=5):
    """op -> (median seconds at A, median seconds at B), the checkouts alternating."""
    runs = {path_a: [], path_b: []}
    for _ in range(rounds):
        for path in (path_a, path_b):
            runs[path].append(run(path))
    return {op: tuple(statistics.median(r[op] for r in runs[path]) for path in (path_a, path_b))
            for op in runs[path_a][0]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.system.compare")
    parser.add_argument("path_a")
    parser.add_argument("path_b")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    table = compare(args.path_a, args.path_b, args.rounds)
    print(f"median of {args.rounds} alternating rounds; A = {args.path_a}, B = {args.path_b}")
    print(f"{'op':<36}{'A ms':>10}{'B ms':>10}{'B / A':>8}")
    for op, (a, b) in table.items():
        print(f"{op:<36}{1e3 * a:10.3f}{1e3 * b:10.3f}{b / a:8.2f}")
    return table


if __name__ == "__main__":
    main()
