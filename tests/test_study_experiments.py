"""The experiments: the CLI entry (add_parser / main) and every --quick study,
as CI runs them, on the real MNIST and Fashion-MNIST."""
import argparse
import json
import os

import pytest

import tinynet as tn
from tinynet.study import cli
from tinynet.study.experiments import EXPERIMENTS, run_experiment


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
    assert set(EXPERIMENTS) == {"lr", "ics", "smoothness", "batch-size", "bn-inference",
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
