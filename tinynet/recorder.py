"""Recorder: per-layer activation and gradient statistics every k training steps.

For the distribution plots of the normalization study (the "histogram strips"
of Ioffe and Szegedy 2015, Figure 1, https://arxiv.org/abs/1502.03167). The
recorder hooks a model from outside: it replaces the ``forward`` and
``backward`` of the model and of each watched layer with instance
attributes that call the original and summarize the arrays that pass, and
``detach()`` removes them. No layer class changes, and the values a layer
returns are the ones it computed.

For each watched layer and each recorded step it summarizes some of

    "x"   the layer's input            "y"   its output
    "dy"  the gradient at its output   "dx"  the gradient at its input

as a record: mean, std, min, max, the requested percentiles and a histogram
(counts over ``bins`` equal bins of ``hist_range``, or of [min, max]).
A step is one training forward of the model (eval passes are not counted);
steps 0, k, 2k, ... are recorded.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from .layers.base import Layer
from .parameter import Array

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Recorder"]

_KINDS = ("x", "y", "dy", "dx")

# A layer's forward (x -> y) or backward (dy -> dx, None when it skips dx).
_Pass: TypeAlias = Callable[[Array], Array | None]


def _named_leaves(layer: Layer, prefix: str = "") -> list[tuple[str, Layer]]:
    subs = getattr(layer, "layers", None)
    if subs is None:
        return [(prefix.rstrip(".") or type(layer).__name__, layer)]
    out = []
    for i, sub in enumerate(subs):
        out.extend(_named_leaves(sub, f"{prefix}{i}."))
    return out


class Recorder:
    """Record statistics of the arrays that flow through a model's layers.

    Use as a context manager, or call ``attach()`` and ``detach()``.

    Parameters
    ----------
    model : Sequential or Layer
        The model; its training forwards count the steps.
    every : int
        Record steps 0, every, 2*every, ...
    layers : list of str, optional
        Names of the layers to watch (their Sequential index paths, e.g.
        "2" or "1.0"). Default: every layer.
    kinds : tuple of str
        Which arrays to summarize, from "x", "y", "dy", "dx".
    percentiles : tuple of float
        Percentiles (0 to 100) of each array to keep.
    bins : int
        Number of histogram bins.
    hist_range : (float, float), optional
        Fixed histogram range, so that histograms of different steps share
        their bins; default: each array's own [min, max].

    Attributes
    ----------
    records : list of dict
        One per (step, layer, kind): "step", "layer", "type", "kind", "mean",
        "std", "min", "max", "percentiles" (a dict), "hist" and "edges".
    step : int
        Training forwards seen so far.
    """

    def __init__(self, model: Layer, every: int = 1, layers: Collection[str] | None = None,
                 kinds: Sequence[str] = ("y", "dy"),
                 percentiles: Sequence[float] = (1, 5, 25, 50, 75, 95, 99), bins: int = 50,
                 hist_range: tuple[float, float] | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Recorder: every must be a positive int, got {every!r}")
        bad = [k for k in kinds if k not in _KINDS]
        if bad:
            raise ValueError(f"Recorder: kinds must be among {_KINDS}, got {bad}")
        if any(not 0 <= q <= 100 for q in percentiles):
            raise ValueError(f"Recorder: percentiles must be in [0, 100], got {percentiles}")
        if getattr(model, "layers", None) is None:
            raise TypeError(f"Recorder: model must be a Sequential, got {type(model).__name__}")
        leaves = _named_leaves(model)
        names = [n for n, _ in leaves]
        if layers is not None:
            unknown = [n for n in layers if n not in names]
            if unknown:
                raise ValueError(f"Recorder: no layer named {unknown[0]!r}; the layers are {names}")
            leaves = [(n, l) for n, l in leaves if n in layers]
        self.model = model
        self.every = int(every)
        self.watched = leaves
        self.kinds = tuple(kinds)
        self.percentiles = tuple(float(q) for q in percentiles)
        self.bins = int(bins)
        self.hist_range = hist_range
        self.records: list[dict[str, Any]] = []
        self.step = 0
        self._recording = False
        self._step_recorded: int  # set by the model's training forward, read by _keep
        # (owner, attribute, the owner's own value before attach or None)
        self._attached: list[tuple[Layer, str, Any]] = []

    def summarize(self, a: ArrayLike) -> dict[str, Any]:
        """The statistics of one array, as a record without step and layer."""
        a64 = np.asarray(a, dtype=np.float64).ravel()
        lo, hi = (float(a64.min()), float(a64.max())) if self.hist_range is None \
            else self.hist_range
        if hi <= lo:
            hi = lo + 1.0
        hist, edges = np.histogram(np.clip(a64, lo, hi), bins=self.bins, range=(lo, hi))
        return {"mean": float(a64.mean()), "std": float(a64.std()),
                "min": float(a64.min()), "max": float(a64.max()),
                "percentiles": dict(zip((f"{q:g}" for q in self.percentiles),
                                        np.percentile(a64, self.percentiles).tolist())),
                "hist": hist.tolist(), "edges": edges.tolist()}

    def _keep(self, name: str, layer: Layer, kind: str, a: Array | None) -> None:
        if self._recording and kind in self.kinds and a is not None:
            rec = {"step": self._step_recorded, "layer": name, "type": type(layer).__name__,
                   "kind": kind}
            rec.update(self.summarize(a))
            self.records.append(rec)

    def _hook(self, owner: Layer, attr: str, wrapper: Callable[[_Pass], _Pass]) -> None:
        original = owner.__dict__.get(attr)
        bound = getattr(owner, attr)
        setattr(owner, attr, wrapper(bound))
        self._attached.append((owner, attr, original))

    def attach(self) -> Self:
        """Install the hooks. Returns self."""
        if self._attached:
            raise RuntimeError("Recorder.attach: already attached")

        def model_forward(fwd: _Pass) -> _Pass:
            def forward(x: Array) -> Array | None:
                training = getattr(self.model, "training", True)
                self._recording = training and self.step % self.every == 0
                if training:
                    self._step_recorded = self.step
                    self.step += 1
                return fwd(x)
            return forward

        def model_backward(bwd: _Pass) -> _Pass:
            def backward(dy: Array) -> Array | None:
                try:
                    return bwd(dy)
                finally:
                    self._recording = False
            return backward

        self._hook(self.model, "forward", model_forward)
        self._hook(self.model, "backward", model_backward)
        for name, layer in self.watched:
            def layer_forward(fwd: _Pass, name: str = name, layer: Layer = layer) -> _Pass:
                def forward(x: Array) -> Array | None:
                    self._keep(name, layer, "x", x)
                    y = fwd(x)
                    self._keep(name, layer, "y", y)
                    return y
                return forward

            def layer_backward(bwd: _Pass, name: str = name, layer: Layer = layer) -> _Pass:
                def backward(dy: Array) -> Array | None:
                    self._keep(name, layer, "dy", dy)
                    dx = bwd(dy)
                    self._keep(name, layer, "dx", dx)
                    return dx
                return backward
            self._hook(layer, "forward", layer_forward)
            self._hook(layer, "backward", layer_backward)
        return self

    def detach(self) -> None:
        """Remove the hooks; the layers are as before ``attach``."""
        for owner, attr, original in reversed(self._attached):
            if original is None:
                del owner.__dict__[attr]
            else:
                setattr(owner, attr, original)
        self._attached = []
        self._recording = False

    def __enter__(self) -> Self:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def select(self, layer: str | None = None,
               kind: str | None = None) -> list[dict[str, Any]]:
        """The records of one layer and/or kind, in step order."""
        return [r for r in self.records
                if (layer is None or r["layer"] == layer) and (kind is None or r["kind"] == kind)]

    def to_json(self) -> str:
        """The records as a JSON string."""
        return json.dumps({"every": self.every, "records": self.records})
