"""Each layer of the reference CNN (or another zoo model) timed inside the
training step and alone, without torch and with torch imported first.

A layer can run slower inside a step than in a loop of its own: the step's
other layers evict its data from the caches, fresh outputs pay page faults,
and a thread pool that another library keeps spinning takes cores from it.
This lab shows where. For one normalization it runs, in a new process per
setting:

- in step: 20 training steps (forward, loss, backward, Adam) of
  tinynet.zoo.build_cnn (``--model``: any zoo model, e.g. ``speedrun``; at
  ``--batch`` samples, 64 by default), with each layer's forward and backward wrapped by a
  timer; the median over the steps of forward + backward per layer, and of
  the whole step;
- alone: each layer's forward + backward on the input and upstream gradient
  it saw in the last step, called back to back, median of 20.

Settings: ``no torch`` (tinynet's defaults); ``no torch, glibc malloc
defaults`` (without tinynet's mallopt setting, tinynet/alloc.py);
``no torch, spin 20k`` / ``300k`` (the omp layer, whose idle threads spin
that many rounds before they sleep, OMP_WAIT_POLICY=ACTIVE with
GOMP_SPINCOUNT, instead of sleeping at once, PASSIVE); ``no torch, tbb`` and ``no torch, omp passive``
(each layer forced, whatever tinynet's default);
``torch first`` (``import
torch`` before tinynet, tinynet's defaults); and the same with the threading
layer forced to ``workqueue``, to ``tbb`` (when the ``tbb`` package is
installed) and to ``omp`` (which then runs on torch's own libgomp, with the
wait policy torch's import left it). Columns: ms in step, ms alone,
in-step / alone, and for each torch-first setting its in-step time over the
no-torch in-step time.

    python -m kernels.system.instep [--norm batch] [--rounds 3] [--steps 20]
    python -m kernels.system.instep --model speedrun --norm none --batch 256 --settings "no torch"

Each setting runs ``--rounds`` times round-robin and the table shows the
median over rounds.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

# The default batch, kernels.step's BATCH; not imported from there, since that
# module loads numba, and a torch-first child must import torch before numba.
BATCH = 64

SETTINGS = {
    "no torch": ({}, False),
    "no torch, glibc malloc defaults": ({"TINYNET_MALLOPT": "0"}, False),
    "no torch, spin 20k": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "ACTIVE",
                            "GOMP_SPINCOUNT": "20000"}, False),
    "no torch, spin 300k": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "ACTIVE",
                             "GOMP_SPINCOUNT": "300000"}, False),
    "no torch, tbb": ({"NUMBA_THREADING_LAYER": "tbb"}, False),
    "no torch, omp passive": ({"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "PASSIVE"}, False),
    "torch first": ({}, True),
    "torch first, workqueue": ({"NUMBA_THREADING_LAYER": "workqueue"}, True),
    "torch first, tbb": ({"NUMBA_THREADING_LAYER": "tbb"}, True),
    "torch first, omp": ({"NUMBA_THREADING_LAYER": "omp"}, True),
}


def _wrap(layer, times):
    """Replace layer.forward / layer.backward (on the instance) by timed calls."""
    forward, backward = layer.forward, layer.backward
    seen = {}

    def timed_forward(x):
        t0 = time.perf_counter()
        y = forward(x)
        times["fwd"].append(time.perf_counter() - t0)
        seen["x"] = x
        return y

    def timed_backward(dy):
        t0 = time.perf_counter()
        dx = backward(dy)
        times["bwd"].append(time.perf_counter() - t0)
        seen["dy"] = dy
        return dx
    layer.forward, layer.backward = timed_forward, timed_backward
    return forward, backward, seen


def child(norm, steps, torch_first, model_name="cnn", batch=BATCH):
    """In a new process: print one JSON object {layer: [in_step_s, alone_s], "step": s}."""
    if torch_first:
        import torch  # noqa: F401
    from kernels.common import median_time
    from kernels.step import inputs
    import tinynet as tn
    from tinynet.zoo import build
    x, y = inputs(batch, model_name=model_name)
    tn.init.seed(0)
    model = build(model_name, norm)
    loss_fn = tn.SoftmaxCrossEntropy()
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)
    names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(model.layers)]
    times = {name: {"fwd": [], "bwd": []} for name in names}
    wrapped = [_wrap(layer, times[name]) for layer, name in zip(model.layers, names)]
    step_times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        loss_fn.forward(model.forward(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        if i >= 3:
            step_times.append(time.perf_counter() - t0)
    out = {"step": statistics.median(step_times)}
    import numba
    out["layer"] = numba.threading_layer()
    for layer, name, (forward, backward, seen) in zip(model.layers, names, wrapped):
        fb = [f + b for f, b in zip(times[name]["fwd"][3:], times[name]["bwd"][3:])]
        if not fb:
            continue
        layer.forward, layer.backward = forward, backward
        lx, ldy = seen["x"], seen["dy"]

        def alone():
            layer.forward(lx)
            layer.backward(ldy)
        out[name] = [statistics.median(fb), median_time(alone, warmup=3, repeat=20)]
    print(json.dumps(out))


def run_child(norm, steps, setting, model_name="cnn", batch=BATCH):
    from kernels.common import child_env
    env_extra, torch_first = SETTINGS[setting]
    cmd = [sys.executable, "-m", "kernels.system.instep", "--child", "--norm", norm,
           "--steps", str(steps), "--model", model_name, "--batch", str(batch)] + (
               ["--torch-first"] if torch_first else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=child_env(**env_extra)).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench(norm="batch", rounds=3, steps=20, settings=None, model_name="cnn", batch=BATCH):
    """{setting: {key: median over rounds}}; keys as in ``child``."""
    settings = list(settings or SETTINGS)
    runs = {s: [] for s in settings}
    for _ in range(rounds):
        for s in settings:
            runs[s].append(run_child(norm, steps, s, model_name, batch))
    result = {}
    for s, rs in runs.items():
        merged = {"layer": rs[0]["layer"], "step": statistics.median(r["step"] for r in rs)}
        for key in rs[0]:
            if key not in ("layer", "step"):
                merged[key] = [statistics.median(r[key][i] for r in rs) for i in (0, 1)]
        result[s] = merged
    return result


def print_table(result, norm, file=None, model_name="cnn", batch=BATCH):
    base = result["no torch"]
    others = [s for s in result if s != "no torch"]
    what = "reference CNN" if model_name == "cnn" else f"zoo model {model_name}"
    print(f"{what}, norm={norm}, batch {batch}, float32: layer forward + backward, "
          f"ms in the step / alone; torch-first columns: in-step ms and its ratio to "
          f"no torch's in-step ms", file=file)
    head = f"{'layer':<18}{'in step':>9}{'alone':>8}{'ratio':>7}"
    for s in others:
        head += f"  {s + ' (' + result[s]['layer'] + ')':>34}{'vs':>6}"
    print(head, file=file)
    keys = [k for k in base if k not in ("layer", "step")] + ["step"]
    for k in keys:
        if k == "step":
            line = f"{'whole step':<18}{1e3 * base['step']:9.2f}{'':>8}{'':>7}"
            for s in others:
                line += f"  {1e3 * result[s]['step']:34.2f}{result[s]['step'] / base['step']:6.2f}"
        else:
            ins, alone = base[k]
            line = f"{k:<18}{1e3 * ins:9.3f}{1e3 * alone:8.3f}{ins / alone:7.2f}"
            for s in others:
                line += f"  {1e3 * result[s][k][0]:34.3f}{result[s][k][0] / ins:6.2f}"
        print(line, file=file)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.system.instep")
    parser.add_argument("--norm", default="batch",
                        choices=("batch", "layer", "instance", "group", "none"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="cnn", help="the zoo model (tinynet models lists them)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--settings", default=None,
                        help="semicolon-separated subset of: " + "; ".join(SETTINGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.norm, args.steps, args.torch_first, args.model, args.batch)
    settings = args.settings.split(";") if args.settings else None
    if settings and "no torch" not in settings:
        settings = ["no torch"] + settings
    print_table(bench(args.norm, args.rounds, args.steps, settings, args.model, args.batch),
                args.norm, model_name=args.model, batch=args.batch)


if __name__ == "__main__":
    main()
