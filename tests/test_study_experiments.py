"""The experiments: the CLI entry (add_parser / main), every --quick study, as
CI runs them, on the real MNIST and Fashion-MNIST, and the figures' marks of
diverged runs, on made-up results."""
import argparse
import json
import os

import pytest

import tinynet as tn
from tinynet.study import cli
from tinynet.study.experiments import EXPERIMENTS, plotting, run_experiment
from tinynet.study.experiments.plotting import DIVERGED


def have_data():
    try:
        tn.data.load_mnist("test", download=False)
        tn.data.load_fashion_mnist("test", download=False)
    except Exception as e:  # noqa: BLE001 - any reason the data is missing
        return str(e)
    return None


MISSING = have_data()
needs_data = pytest.mark.skipif(MISSING is not None,
                                reason=f"the quick studies need MNIST and Fashion-MNIST: {MISSING}")


def parse(argv):
    parser = argparse.ArgumentParser(prog="tinynet")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser_knows_every_experiment_and_all():
    args = parse(["study", "all", "--quick", "--workers", "2", "--out", "x",
                  "--scheduler", "tcp://127.0.0.1:8786"])
    assert args.name == "all" and args.quick and args.workers == 2 and args.out == "x"
    assert args.scheduler == "tcp://127.0.0.1:8786" and args.func is cli.main
    assert set(EXPERIMENTS) == {"lr", "ics", "smoothness", "batch-size", "batch-size-resnet", "bn-inference",
                                "regularization", "weightnorm"}
    with pytest.raises(SystemExit):
        parse(["study", "nope"])


def test_unknown_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        run_experiment("nope", tmp_path)


def test_grids_are_distinct_runs():
    for name, exp in EXPERIMENTS.items():
        for quick in (True, False):
            configs = exp.grid(quick)
            assert len({json.dumps(c, sort_keys=True) for c in configs}) == len(configs), name


@needs_data
def test_all_quick_studies_write_figure_and_numbers(tmp_path):
    args = parse(["study", "all", "--quick", "--workers", "2", "--out", str(tmp_path),
                  "--no-progress"])
    assert cli.main(args) == 0
    for name in EXPERIMENTS:
        base = tmp_path / f"{name}-quick"
        png = base / f"{name}.png"
        assert png.stat().st_size > 10000, name
        with open(base / f"{name}.json") as f:
            summary = json.load(f)
        assert summary["experiment"] == name and summary["quick"] is True
        assert summary["runs"] == len(EXPERIMENTS[name].grid(True))
        assert len(os.listdir(base / "runs")) == summary["runs"]
    # Test-time augmentation changes only the evaluation: its model is the
    # unregularized one, whose single-view accuracy it also records.
    reg = json.load(open(tmp_path / "regularization-quick" / "regularization.json"))
    for data, table in reg["data"].items():
        assert table["TTA (eval only)"]["test_acc_one_view"] == table["none"]["test_acc"], data
        assert table["TTA (eval only)"]["train_acc"] == table["none"]["train_acc"], data
    lr = json.load(open(tmp_path / "lr-quick" / "lr.json"))
    assert all(0 <= r["test_acc"] <= 1 for r in lr["rows"])


def fake_result(config, diverged):
    """A run's result with every key an experiment's summary reads.

    A diverged run stops early: its loss is finite up to step 10 (40.0) and
    NaN at step 20, the step it is stopped at, and its accuracy is chance.
    """
    steps = [0, 10, 20] if diverged else [0, 10, 20, 30]
    loss = [2.3, 40.0, float("nan")] if diverged else [2.3, 1.0, 0.6, 0.4]
    measure = steps[:-1] if diverged else steps
    acc = 0.1 if diverged else 0.9
    batches = [2, 8, 32]
    pct = {f"{k:g}": k / 10 for k in EXPERIMENTS["ics"].PERCENTILES}
    return {"steps": steps, "loss": loss, "wall": [0.01 * (s + 1) for s in steps],
            "diverged": diverged, "train_acc": acc, "test_acc": acc, "test_loss": 1.0,
            "threads": {"numba": 1, "blas": 1}, "test_acc_train_mode": acc,
            "measure_steps": measure, "ics_l2": [[0.5, 0.2] for _ in measure],
            "ics_cos": [[0.9, 0.8] for _ in measure], "early": [pct for _ in measure],
            "late": [pct for _ in measure], "loss_range": [1.0 for _ in measure],
            "grad_pred": [0.5 for _ in measure], "beta": [2.0 for _ in measure],
            "loss_min": [0.5 for _ in measure], "loss_max": [1.5 for _ in measure],
            "test_batches": batches, "running": [acc] * 3, "population": [acc] * 3,
            "batch_stats": [acc] * 3,
            "mean_rel_err": [float("nan")] * 2 if diverged else [0.01, 0.02],
            "var_rel_err": [float("nan")] * 2 if diverged else [0.03, 0.04]}


def lr_diverges(c):
    """The lr run that diverges: drawn in an accuracy panel and in a loss-curve panel."""
    return (c["act"], c["norm"], c["init_scale"], c["lr"]) == ("relu", "none", 1.0, 1.0)


def fake_records(exp, diverges):
    """Records of ``exp``'s full grid (two seeds where it has them), diverged where
    ``diverges(config)``."""
    return [{"key": "k", "config": c, "result": fake_result(c, diverges(c)), "seconds": 1.0}
            for c in exp.grid(False)]


def diverged_marks(fig):
    """The red-x lines labelled DIVERGED on ``fig``'s axes, and the legends naming it."""
    marks = [h for ax in fig.axes for h, label in zip(*ax.get_legend_handles_labels())
             if label == DIVERGED]
    legends = [ax for ax in fig.axes if ax.get_legend() is not None
               and DIVERGED in [t.get_text() for t in ax.get_legend().get_texts()]]
    return marks, legends


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_figures_mark_diverged_runs(name, tmp_path):
    exp = EXPERIMENTS[name]
    last = exp.grid(False)[-1]
    diverges = lr_diverges if name == "lr" else (lambda c: c == last)
    summary = exp.summarize(fake_records(exp, diverges))
    marks, legends = diverged_marks(exp.figure(summary))
    assert marks, f"{name}: no diverged marker"
    assert all(m.get_marker() == "x" and m.get_color() == "red" for m in marks), name
    assert len(legends) == len(marks), f"{name}: a legend lacks {DIVERGED!r}"
    exp.plot(summary, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 10000
    clean = exp.summarize(fake_records(exp, lambda c: False))
    assert diverged_marks(exp.figure(clean)) == ([], []), f"{name}: marks without divergence"


def test_lr_figure_marks_where_the_diverged_run_ends():
    exp = EXPERIMENTS["lr"]
    fig = exp.figure(exp.summarize(fake_records(exp, lr_diverges)))
    points = {ax.get_title(): [tuple(xy) for h, label in zip(*ax.get_legend_handles_labels())
                               if label == DIVERGED for xy in h.get_xydata()]
              for ax in fig.axes}
    # Its accuracy (chance, 10%) at lr 1, and its loss curve's last finite value.
    assert points["relu, init x1"] == [(1.0, 10.0)]
    assert points["loss curves, relu, init x1"] == [(10.0, 40.0)]
    assert sum(len(p) for p in points.values()) == 2


def test_seed_means_end_where_a_diverged_seed_stopped():
    for name in ("ics", "weightnorm"):
        exp = EXPERIMENTS[name]
        summary = exp.summarize(fake_records(exp, lambda c: c["norm"] == "bn" and c["seed"] == 1))
        curves = summary["variants" if name == "ics" else "norms"]
        assert curves["bn"]["steps"] == [0, 10, 20] and len(curves["bn"]["loss"]) == 3, name
        assert curves["bn"]["diverged"] == [False, True], name
        assert curves["none"]["steps"] == [0, 10, 20, 30], name


def test_a_curve_without_a_finite_value_is_marked_at_the_top_of_the_axis():
    _, ax = plotting.subplots()
    ax.plot([0, 1], [1.0, 2.0])
    plotting.mark_end(ax, [0, 10], [float("nan"), float("inf")])
    (mark,), labels = ax.get_legend_handles_labels()
    assert labels == [DIVERGED] and tuple(mark.get_xydata()[0]) == (0.0, 1.0)
    assert mark.get_transform() == ax.get_xaxis_transform()  # y in axes units: the top
    plotting.mark_end(ax, [0, 10], [1.0, 3.0])
    assert ax.get_legend_handles_labels()[1] == [DIVERGED], "one legend entry per axis"
    assert len(ax.lines) == 3
