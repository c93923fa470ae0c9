"""matplotlib figures: training curves, and what a trained model gets right and wrong.

- ``plot_history``: per-step training loss (raw, faint, and an exponential
  moving average), per-epoch validation loss and accuracy, and the learning rate.
- ``plot_confusion``: the confusion matrix, C[t, p] = number of test images of
  true class t predicted as p, with each row's recall on the right.
- ``plot_misclassified``: the most confidently wrong test images.
- ``plot_filters``: the first conv layer's kernels.
- ``plot_feature_maps``: one image's activations after each conv layer.
"""
import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .serialization import atomic_write

__all__ = ["plot_history", "smooth", "plot_confusion", "plot_misclassified", "plot_filters",
           "plot_feature_maps"]


def subplots(nrows=1, ncols=1, figsize=None, **options):
    """A new ``matplotlib.figure.Figure`` and its axes, as pyplot's subplots returns them.

    The figure belongs to no pyplot backend: drawing it neither needs nor
    changes matplotlib's backend (a notebook keeps its inline figures), and
    nothing has to close it.
    """
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **options)


def _save(fig, path, **options):
    """Render ``fig`` to PNG in memory, then write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **options)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def smooth(values, alpha=0.05):
    """Exponential moving average with start-up bias correction (as TensorBoard's).

    s_t = (1 - alpha) * s_{t-1} + alpha * v_t,  s_0 = 0;  returned: s_t / (1 - (1 - alpha)^t)

    Parameters
    ----------
    values : sequence of float, length T
    alpha : float in (0, 1]

    Returns
    -------
    numpy.ndarray
        float64 (T,).
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    s = 0.0
    for t in range(len(v)):
        s = (1 - alpha) * s + alpha * v[t]
        out[t] = s / (1 - (1 - alpha) ** (t + 1))
    return out


def _step_axis(history, key):
    """(x in epochs, values) of a per-step list over all epochs; step i of epoch e
    (1-based, of n steps) sits at x = e - 1 + i / n."""
    xs, vs = [], []
    for r in history.records:
        values = r.get(key) or []
        n = len(values)
        xs += [r["epoch"] - 1 + (i + 1) / n for i in range(n)]
        vs += list(values)
    return np.array(xs), np.array(vs, dtype=np.float64)


def plot_history(history, path, title="tinynet training"):
    """Save a three-panel PNG of a training run.

    Left: each step's training loss (faint) and its moving average, with the
    validation loss at the end of each epoch. Middle: train and validation accuracy per
    epoch. Right: the learning rate of every step. The x axes are in epochs,
    with integer ticks.

    Parameters
    ----------
    history : tinynet.train.History
        Records with ``step_loss`` / ``step_lr`` lists; older records without
        them fall back to one point per epoch.
    path : str
        Where to write the PNG.
    """
    epochs = history["epoch"]
    fig, (ax_loss, ax_acc, ax_lr) = subplots(1, 3, figsize=(15, 4.2))
    x, loss = _step_axis(history, "step_loss")
    if len(loss):
        ax_loss.plot(x, loss, color="C0", alpha=0.25, lw=0.8, label="train (each step)")
        # an EMA window of about 1/30 of the run, at least 5 steps
        window = max(5, len(loss) // 30)
        ax_loss.plot(x, smooth(loss, alpha=2 / (window + 1)), color="C0", lw=1.8,
                     label="train (smoothed)")
    else:
        ax_loss.plot(epochs, history["train_loss"], "o-", color="C0", label="train")
    has_val = all(v is not None for v in history["val_loss"])
    if has_val:
        ax_loss.plot(epochs, history["val_loss"], "s-", color="C1", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if len(loss) and loss.min() > 0 and loss.max() / loss.min() > 20:
        ax_loss.set_yscale("log")

    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], "o-", color="C0", label="train")
    if has_val:
        ax_acc.plot(epochs, [100 * a for a in history["val_acc"]], "s-", color="C1",
                    label="validation")
        best = max(history["val_acc"])
        ax_acc.set_title(f"accuracy (best validation {100 * best:.2f}%)")
    else:
        ax_acc.set_title("accuracy")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")

    x_lr, lr = _step_axis(history, "step_lr")
    if len(lr):
        ax_lr.plot(x_lr, lr, color="C2")
    else:
        ax_lr.plot(epochs, history["lr"], "o-", color="C2")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning-rate schedule")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    last = max(epochs) if epochs else 1
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlim((0 if ax is not ax_acc else 1) - 0.05 * last, last * 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    return path


def plot_confusion(confusion, path, class_names=None, title="confusion matrix"):
    """Save the confusion matrix as a PNG.

    Parameters
    ----------
    confusion : numpy.ndarray
        int (K, K): confusion[t, p] counts images of true class t predicted as p.
    path : str
    class_names : sequence of str, optional
        K names; default "0".."K-1".
    """
    c = np.asarray(confusion)
    K = len(c)
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    rows = c.sum(axis=1, keepdims=True)
    rate = c / np.maximum(rows, 1)
    fig, ax = subplots(figsize=(1.0 + 0.62 * K + (1.2 if len(max(names, key=len)) > 2 else 0),
                                    0.9 + 0.55 * K))
    # colour by the row's fraction, on a log-like scale so that rare mistakes show
    shown = np.where(c > 0, np.log10(1 + 1000 * rate), 0.0)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=3)
    for t in range(K):
        for p in range(K):
            if c[t, p]:
                ax.text(p, t, str(int(c[t, p])), ha="center", va="center", fontsize=8,
                        color="white" if shown[t, p] > 1.8 else "black")
    ax.set_xticks(range(K), names, rotation=45 if len(max(names, key=len)) > 2 else 0,
                  ha="right" if len(max(names, key=len)) > 2 else "center")
    ax.set_yticks(range(K), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    recall = np.diag(c) / np.maximum(rows[:, 0], 1)
    for t in range(K):
        ax.text(K - 0.35, t, f"{100 * recall[t]:.1f}%", va="center", fontsize=8)
    ax.text(K - 0.35, -0.85, "recall", fontsize=8)
    ax.set_xlim(-0.5, K - 0.5)
    total = c.sum()
    ax.set_title(f"{title}\n{int(np.trace(c))}/{int(total)} correct "
                 f"({100 * np.trace(c) / max(total, 1):.2f}%)", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=110, bbox_inches="tight")
    return path


def plot_misclassified(images, labels, probs, path, class_names=None, count=24, cols=8,
                       title="most confidently misclassified"):
    """Save a grid of the wrong predictions with the highest predicted probability.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, 1, H, W), any numeric dtype (shown in grey levels).
    labels : numpy.ndarray
        int (N,), the true classes.
    probs : numpy.ndarray
        (N, K) class probabilities (``tn.predict``).
    path : str
    count : int
        At most this many images, most confident first.

    Returns
    -------
    numpy.ndarray
        The indices shown, most confident first.
    """
    images = np.asarray(images).reshape(len(labels), *np.shape(images)[-2:])
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:count]
    K = probs.shape[1]
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    cols = max(1, min(cols, len(order)))
    rows = max(1, math.ceil(len(order) / cols))
    fig, axes = subplots(rows, cols, figsize=(1.45 * cols, 1.75 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"true {names[labels[i]]}\npred {names[pred[i]]} "
                     f"{100 * probs[i, pred[i]]:.0f}%", fontsize=7.5, color="C3")
    if len(order) == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(f"{title} ({len(order)} of {len(wrong)} errors)", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    return order


def _grid(ax_grid, maps, cmap, symmetric):
    """Show each of maps (M, H, W) in one axis; colour scale per map."""
    for ax in ax_grid.flat:
        ax.axis("off")
    for ax, m in zip(ax_grid.flat, maps):
        if symmetric:
            v = np.abs(m).max() or 1.0
            ax.imshow(m, cmap=cmap, vmin=-v, vmax=v)
        else:
            ax.imshow(m, cmap=cmap)


def plot_filters(weight, path, title="first conv layer filters"):
    """Save the kernels of a conv layer: weight (F, C, KH, KW), channel 0 of each.

    Blue is negative, red positive, on a symmetric scale per filter.
    """
    w = np.asarray(weight, dtype=np.float64)[:, 0]
    F = len(w)
    cols = min(8, F)
    rows = math.ceil(F / cols)
    fig, axes = subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.4), squeeze=False)
    _grid(axes, w, "RdBu_r", symmetric=True)
    fig.suptitle(f"{title} ({F} x {w.shape[-2]}x{w.shape[-1]})", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    return path


def plot_feature_maps(image, maps, path, names=None, max_maps=16,
                      title="feature maps of one test image"):
    """Save one row per conv layer: the input image, then up to ``max_maps`` channels.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W), the input.
    maps : list of numpy.ndarray
        One (C_l, H_l, W_l) activation per conv layer.
    names : list of str, optional
        What each block is (e.g. "Conv2D-BatchNorm-ReLU"), named in the title.
    """
    rows = len(maps)
    cols = 1 + max_maps
    fig, axes = subplots(rows, cols, figsize=(0.95 * cols, 1.3 * rows + 0.6), squeeze=False)
    for r, m in enumerate(maps):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].imshow(image, cmap="gray_r")
        axes[r, 0].set_title(f"block {r + 1}\n{m.shape[0]} x {m.shape[1]}x{m.shape[2]}",
                             fontsize=7)
        _grid(axes[r, 1:], m[:max_maps], "viridis", symmetric=False)
    blocks = "; ".join(f"{r + 1}: {name}" for r, name in enumerate(names)) if names else ""
    shown = f", the first {max_maps} channels" if max(len(m) for m in maps) > max_maps else ""
    fig.suptitle(f"{title}{shown}\nblocks {blocks}" if blocks else title + shown, fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    return path
