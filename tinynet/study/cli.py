"""``tinynet study NAME``: run one experiment of the normalization study, or all.

    tinynet study lr [--quick] [--workers N] [--scheduler tcp://HOST:PORT] [--out DIR]
    tinynet study all --quick

Each experiment writes OUT/NAME[-quick]/NAME.png and NAME.json (every number
the figure shows), and keeps one JSON file per run under runs/, so a rerun
resumes. ``add_parser`` registers the subcommand on an argparse
subparsers object; ``main(args)`` runs it.
"""
import argparse
import os
import sys

from .experiments import EXPERIMENTS, run_experiment

__all__ = ["add_parser", "main"]


def add_parser(subparsers):
    """Add the ``study`` subcommand to ``subparsers``; returns its parser."""
    p = subparsers.add_parser("study", help="run the normalization study's experiments",
                              description=__doc__.split("\n")[0])
    p.add_argument("name", choices=sorted(EXPERIMENTS) + ["all"], help="the experiment, or all")
    p.add_argument("--quick", action="store_true", help="the small grids (CI size)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="local worker processes (default: one per CPU)")
    p.add_argument("--scheduler", default=None,
                   help="a Dask scheduler address, tcp://HOST:PORT (pip install 'tinynet[cluster]')")
    p.add_argument("--out", default="study", help="output directory (default: ./study)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def main(args):
    """Run the experiment(s) named by ``args``; print where the figures went. Returns 0."""
    if args.workers < 1:
        raise SystemExit(f"tinynet study: --workers must be >= 1, got {args.workers}")
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        summary, png = run_experiment(name, args.out, quick=args.quick, workers=args.workers,
                                      scheduler=args.scheduler, progress=not args.no_progress)
        print(f"{name}: {summary['runs']} runs, {summary['wall_seconds']:.1f}s wall, "
              f"figure {png}", file=sys.stderr)
    return 0


def _standalone(argv=None):
    """Run as ``python -m tinynet.study.cli NAME ...`` without the main CLI."""
    parser = argparse.ArgumentParser(prog="tinynet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["study"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(_standalone())
