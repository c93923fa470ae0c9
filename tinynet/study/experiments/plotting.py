"""The figure helpers shared by the experiments: figures off pyplot, diverged runs
marked, PNGs written atomically.

A run diverged when its training loss became NaN or inf (train_run stops it
there). Its points are drawn as red "x" markers labelled DIVERGED in the
legend: on a curve, at its last finite value; where it has none, at the top
of the axis.
"""
import io

import numpy as np

from ...plots import subplots
from ...serialization import atomic_write

__all__ = ["subplots", "titled", "save", "DIVERGED", "mark_diverged", "mark_end"]

DIVERGED = "x = diverged (NaN/inf loss)"


def titled(fig, title):
    """Give ``fig`` its title and lay it out; returns ``fig``."""
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig, path):
    """Write ``fig`` to ``path`` as PNG, atomically (rendered in memory first)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def mark_diverged(ax, x, y=None):
    """Draw the points of diverged runs on ``ax`` as red "x" markers.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    x : sequence of float, length K
        The points' x coordinates (data).
    y : sequence of float, length K, optional
        Their y coordinates (data); None puts them at the top of the axis.

    The first markers on ``ax`` carry the legend label DIVERGED.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    if not len(x):
        return
    top = y is None
    y = np.ones(len(x)) if top else np.atleast_1d(np.asarray(y, dtype=float))
    label = "_nolegend_" if DIVERGED in ax.get_legend_handles_labels()[1] else DIVERGED
    ax.plot(x, y, linestyle="none", marker="x", color="red", markersize=9, markeredgewidth=2,
            label=label, zorder=5, clip_on=not top,
            **({"transform": ax.get_xaxis_transform()} if top else {}))


def mark_end(ax, x, y):
    """Mark a diverged run's curve ``y(x)`` (both length T) where it ends.

    At its last finite value, or at the top of the axis above its first x
    when no value is finite.
    """
    y = np.asarray(y, dtype=float)
    finite = np.flatnonzero(np.isfinite(y))
    if len(finite):
        mark_diverged(ax, [x[finite[-1]]], [y[finite[-1]]])
    elif len(y):
        mark_diverged(ax, [x[0]])
