"""The progress bar of long work (training epochs, study grids), one policy for all.

A tqdm bar on stderr, off when the caller asks, when $CI is set, and when
stderr is not a terminal (tqdm's ``disable=None``), so logs and pipes stay
free of bar redraws. In Jupyter ``tqdm.auto`` draws it as a widget.
"""
import os
import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total, desc, enabled=True, **options):
    """A tqdm bar over ``total`` items on stderr; ``options`` go to tqdm (unit, ...)."""
    disable = None if enabled and not os.environ.get("CI") else True
    options.setdefault("leave", False)
    options.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=disable, **options)
