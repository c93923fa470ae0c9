"""The eight experiments of the normalization study, and how one is run.

Each experiment module defines

    NAME, CLAIM        its CLI name and the claim it tests
    grid(quick)        the list of run configs (``quick``: the CI-sized grid)
    run(config)        one run, a pure function of its config -> JSON dict
    summarize(records) every number the figure shows, as a JSON dict
    figure(summary)    the matplotlib Figure; diverged runs (a NaN or inf
                       training loss) are red x's (plotting.DIVERGED)
    plot(summary, path)  the figure as a PNG

``run_experiment`` runs the grid through ``tinynet.study.runner.run_grid``
(results under OUT/NAME/runs/, or OUT/NAME-quick/runs/ for the quick grid),
then writes NAME.json (the summary, with the wall time) and NAME.png beside
that runs/ directory, each atomically.
"""
import json
import os
import time

from ...serialization import atomic_write
from .. import runner
from . import (lr, ics, smoothness, batch_size, batch_size_resnet, bn_inference, regularization,
               weightnorm)

__all__ = ["EXPERIMENTS", "run_experiment"]

EXPERIMENTS = {m.NAME: m for m in (lr, ics, smoothness, batch_size, batch_size_resnet,
                                   bn_inference, regularization, weightnorm)}


def run_experiment(name, out_dir, quick=False, workers=1, scheduler=None, progress=True):
    """Run experiment ``name`` and write its JSON and PNG; returns (summary, png path).

    Parameters
    ----------
    name : str
        A key of EXPERIMENTS.
    out_dir : str or path
        The study's output directory; this experiment writes under OUT/NAME/.
    quick : bool
        The small grid (minutes for all eight).
    workers : int
        Local worker processes (ignored with ``scheduler``).
    scheduler : str, optional
        A Dask scheduler address.
    progress : bool
        Show the progress bar.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"study: unknown experiment {name!r}; choose one of "
                         f"{sorted(EXPERIMENTS)} or 'all'")
    exp = EXPERIMENTS[name]
    base = os.path.join(os.fspath(out_dir), name + ("-quick" if quick else ""))
    t0 = time.perf_counter()
    records = runner.run_grid(exp.run, exp.grid(quick), os.path.join(base, "runs"),
                              workers=workers, scheduler=scheduler, progress=progress, desc=name)
    summary = exp.summarize(records)
    summary.update(experiment=name, claim=exp.CLAIM, quick=bool(quick), runs=len(records),
                   wall_seconds=time.perf_counter() - t0,
                   run_seconds=sum(r["seconds"] for r in records))
    png = os.path.join(base, name + ".png")
    exp.plot(summary, png)
    text = json.dumps(summary, indent=1, sort_keys=True)
    atomic_write(os.path.join(base, name + ".json"), lambda f: f.write(text.encode()))
    return summary, png
