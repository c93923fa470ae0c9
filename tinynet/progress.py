"""The progress bar of long work (training epochs, study grids), one policy for all.

A tqdm bar on stderr, off when the caller asks and when $CI is set. In a
terminal it is on when stderr is a terminal (tqdm's ``disable=None``), so logs
and pipes stay free of bar redraws. In Jupyter (an IPython kernel, whose
stderr is never a terminal) it is on, drawn as a widget by ``tqdm.notebook``
when ipywidgets is installed (``pip install "tinynet[notebook]"``) and as
text otherwise.
"""
import os
import sys

from tqdm.std import tqdm as text_tqdm

__all__ = ["progress_bar", "in_jupyter"]


def in_jupyter():
    """True inside a Jupyter kernel (IPython's ZMQ shell: Jupyter, nbclient, VS Code)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _bar_class(jupyter):
    """tqdm.notebook's widget bar in Jupyter with ipywidgets, else the text bar."""
    if jupyter:
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook needs it to draw)
            from tqdm.notebook import tqdm as widget_tqdm
            return widget_tqdm
        except ImportError:
            pass
    return text_tqdm


def progress_bar(total, desc, enabled=True, **options):
    """A tqdm bar over ``total`` items on stderr; ``options`` go to tqdm (unit, ...)."""
    jupyter = in_jupyter()
    if not enabled or os.environ.get("CI"):
        disable = True
    else:
        disable = False if jupyter else None
    options.setdefault("leave", False)
    options.setdefault("dynamic_ncols", True)
    return _bar_class(jupyter)(total=total, desc=desc, file=sys.stderr, disable=disable,
                               **options)
