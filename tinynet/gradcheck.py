"""Numerical gradient check for any layer or Sequential.

For a layer f and a random upstream gradient dy, the scalar

    L(x, params) = sum(f(x) * dy)

has dL/dx = backward(dy) and dL/dp = p.grad. gradcheck compares these
analytic gradients with central differences

    dL/dz[i] ~ (L(z[i] + h) - L(z[i] - h)) / (2h)

for every element z[i] of x and of every parameter, in float64. A random dy
(not all ones) matters: for a normalization, sum(f(x)) does not depend on x,
so an all-ones dy would pass a dx that is identically zero.

An element passes when |a - b| <= tol * max(1, |a|, |b|).

``LAYER_CASES`` holds one tiny case for every public layer class, and
``check_layers`` (``tinynet gradcheck``) runs gradcheck over them.
"""
from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeAlias, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import init, layers
from .layers.base import Layer
from .layers.container import Concat, Residual
from .model import Sequential
from .parameter import Array, Parameter

__all__ = ["gradcheck", "GradcheckResult", "GradcheckRow", "LAYER_CASES", "check_layers"]


class GradcheckRow(TypedDict):
    """One checked tensor of a ``GradcheckResult`` (the keys of ``rows``)."""

    name: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    passed: bool


class GradcheckResult:
    """The outcome of ``gradcheck``: one row per checked tensor.

    Attributes
    ----------
    rows : list of GradcheckRow
        Dicts with keys ``name``, ``shape``, ``max_abs_err``, ``max_rel_err``
        and ``passed``.
    passed : bool
        True when every tensor passed.
    """

    def __init__(self, layer_name: str, rows: list[GradcheckRow], tol: float) -> None:
        self.layer_name = layer_name
        self.rows = rows
        self.tol = tol

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)

    @property
    def max_rel_err(self) -> float:
        return max((r["max_rel_err"] for r in self.rows), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"gradcheck {self.layer_name} (tol {self.tol:.0e}):",
                 f"  {'tensor':<16}{'shape':<18}{'max abs err':>13}{'max rel err':>13}  result"]
        for r in self.rows:
            lines.append(f"  {r['name']:<16}{str(r['shape']):<18}{r['max_abs_err']:>13.2e}"
                         f"{r['max_rel_err']:>13.2e}  {'ok' if r['passed'] else 'FAIL'}")
        return "\n".join(lines)

    __repr__ = __str__


def _sublayers(layer: Layer) -> list[Layer]:
    """The layer and, for containers, every layer inside it."""
    out = [layer]
    for _, sub in layer.children():
        out.extend(_sublayers(sub))
    return out


# Each sub-layer and a copy of its plain attributes.
_Snapshot: TypeAlias = list[tuple[Layer, dict[str, Any]]]


def _snapshot(layer: Layer) -> _Snapshot:
    """Copy every attribute that is not a parameter or a sub-layer (buffers, dropout
    step, ...); the sub-layers are snapshot themselves."""
    return [(l, {k: copy.deepcopy(v) for k, v in vars(l).items()
                 if k != "_cache" and not isinstance(v, (Parameter, list, Layer))})
            for l in _sublayers(layer)]


def _restore(snapshot: _Snapshot) -> None:
    for l, state in snapshot:
        for k, v in state.items():
            setattr(l, k, copy.deepcopy(v))


def _compare(name: str, analytic: ArrayLike, numeric: ArrayLike, tol: float) -> GradcheckRow:
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    err = np.abs(a - b)
    rel = err / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return {"name": name, "shape": a.shape,
            "max_abs_err": float(err.max(initial=0.0)),
            "max_rel_err": float(rel.max(initial=0.0)),
            "passed": bool(np.all(rel <= tol))}


def gradcheck(layer: Layer, x: ArrayLike, dy: ArrayLike | None = None, h: float = 1e-5,
              tol: float = 1e-6, seed: int = 0, check_input: bool = True) -> GradcheckResult:
    """Compare a layer's analytic gradients with central differences.

    The layer (or Sequential) is cast to float64 in place. Its state that a
    forward pass changes (BatchNorm running statistics, the Dropout step) is
    restored before every evaluation, so each one sees the same function.

    Parameters
    ----------
    layer : Layer or Sequential
        The layer to check, in the mode (train or eval) to check it in.
    x : np.ndarray
        Input, any shape the layer takes; it is cast to float64.
    dy : np.ndarray, optional
        Upstream gradient with the output's shape. Default: standard normal
        drawn with ``seed``.
    h : float
        Step of the central difference.
    tol : float
        An element passes when |a - b| <= tol * max(1, |a|, |b|).
    seed : int
        Seed of the random ``dy``.
    check_input : bool
        Also check dx (skip it for a layer whose input needs no gradient).

    Returns
    -------
    GradcheckResult
        ``result.passed`` and a readable table with ``print(result)``.
    """
    layer.to(np.float64)
    x = np.array(x, dtype=np.float64)
    state = _snapshot(layer)

    y = layer.forward(x)
    if dy is None:
        dy = np.random.default_rng(seed).standard_normal(y.shape)
    dy = np.asarray(dy, dtype=np.float64)
    if dy.shape != y.shape:
        raise ValueError(f"gradcheck: dy must have the output's shape {y.shape}, got {dy.shape}")
    layer.zero_grad()
    dx = layer.backward(dy)
    named = layer.named_parameters()
    analytic = [g for g in ([("x", dx)] if check_input else [])]
    analytic += [(name, p.grad.copy()) for name, p in named]

    def loss() -> float:
        _restore(state)
        return float(np.sum(layer.forward(x) * dy))

    def numeric_grad(z: Array) -> Array:
        g = np.zeros_like(z)
        flat, gflat = z.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            plus = loss()
            flat[i] = old - h
            minus = loss()
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * h)
        return g

    rows = []
    for name, a in analytic:
        if a is None:  # only dx can be None: a parameter's grad is an array
            raise RuntimeError(f"gradcheck: {type(layer).__name__}.backward returned no dx")
        if name == "x":
            rows.append(_compare("x", a, numeric_grad(x), tol))
        else:
            p = dict(named)[name]
            rows.append(_compare(name, a, numeric_grad(p.data), tol))
    _restore(state)
    return GradcheckResult(type(layer).__name__, rows, tol)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Distinct values 0.1 apart, shuffled: each max-pool window has a single max."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Standard normal values pushed 0.1 away from 0, the kink of ReLU and LeakyReLU."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * 0.1


# name -> (layer factory, input shape, input maker(rng, shape) or None for
# standard normal). Shapes are tiny and odd. Layers with randomness get a fixed
# seed: gradcheck restores their step before every evaluation, so each
# evaluation sees the same mask (Dropout, DropConnect) or the same draws
# (RandomAffineNoise). The containers hold small blocks with smooth activations,
# so that no hidden value sits on a kink.
LayerCase: TypeAlias = tuple[
    Callable[[], Layer], tuple[int, ...],
    Callable[[np.random.Generator, tuple[int, ...]], NDArray[np.float64]] | None]
LAYER_CASES: dict[str, LayerCase] = {
    "Dense": (lambda: layers.Dense(7, 5), (3, 7), None),
    "Conv2D": (lambda: layers.Conv2D(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7), None),
    "MaxPool2D": (lambda: layers.MaxPool2D(2), (2, 3, 6, 6), _distinct),
    "AvgPool2D": (lambda: layers.AvgPool2D(3, stride=2), (2, 3, 7, 7), None),
    "GlobalAvgPool2D": (layers.GlobalAvgPool2D, (2, 3, 5, 5), None),
    "Flatten": (layers.Flatten, (2, 3, 4), None),
    "ReLU": (layers.ReLU, (3, 7), _away_from_zero),
    "LeakyReLU": (lambda: layers.LeakyReLU(0.1), (3, 7), _away_from_zero),
    "Sigmoid": (layers.Sigmoid, (3, 7), None),
    "Tanh": (layers.Tanh, (3, 7), None),
    "GELU": (layers.GELU, (3, 7), None),
    "Softmax": (layers.Softmax, (3, 7), None),
    "Dropout": (lambda: layers.Dropout(0.3, seed=1), (3, 7), None),
    "DropConnect": (lambda: layers.DropConnect(layers.Dense(5, 4), 0.3, seed=2), (3, 5), None),
    "RandomAffineNoise": (lambda: layers.RandomAffineNoise(4, seed=3), (3, 4, 3, 3), None),
    "BatchNorm": (lambda: layers.BatchNorm(6), (3, 6, 5, 5), None),
    "LayerNorm": (lambda: layers.LayerNorm((6, 5, 5)), (3, 6, 5, 5), None),
    "InstanceNorm": (lambda: layers.InstanceNorm(6), (3, 6, 5, 5), None),
    "GroupNorm": (lambda: layers.GroupNorm(3, 6), (3, 6, 5, 5), None),
    "MeanOnlyBatchNorm": (lambda: layers.MeanOnlyBatchNorm(6), (3, 6, 5, 5), None),
    "WeightNorm": (lambda: layers.WeightNorm(layers.Conv2D(3, 4, 3, padding=1)), (2, 3, 5, 5),
                   None),
    "Sequential": (lambda: Sequential(layers.Dense(5, 4), layers.Tanh(), layers.Dense(4, 3)),
                   (3, 5), None),
    "Residual": (lambda: Residual(
        Sequential(layers.Conv2D(3, 4, 3, stride=2, padding=1), layers.BatchNorm(4),
                   layers.Tanh()),
        Sequential(layers.Conv2D(3, 4, 1, stride=2))), (2, 3, 5, 5), None),
    "Concat": (lambda: Concat(Sequential(layers.Conv2D(3, 2, 1), layers.Tanh()),
                              layers.Conv2D(3, 3, 3, padding=1)), (2, 3, 5, 5), None),
}


@contextlib.contextmanager
def _init_seed(seed: int) -> Iterator[None]:
    """Inside, tinynet.init draws from ``seed``; after it, it continues where it was."""
    bits = init.get_rng().bit_generator
    saved = bits.state
    bits.state = np.random.default_rng(seed).bit_generator.state
    try:
        yield
    finally:
        bits.state = saved


def check_layers(layer: str | None = None, tol: float = 1e-6, out: TextIO | None = None) -> bool:
    """Run gradcheck on the case of every layer in ``LAYER_CASES`` (or of one).

    Each case is built and fed from seed 0 (its weights through tinynet.init,
    whose generator is restored afterwards), so one layer checked alone prints
    the rows it has in the full table. The check runs on the active backend,
    in float64.

    Parameters
    ----------
    layer : str, optional
        Check only this layer; its class name in any case ("batchnorm").
    tol : float
        An element passes when |a - b| <= tol * max(1, |a|, |b|).
    out : file, optional
        Where the table goes; default sys.stdout.

    Returns
    -------
    bool
        True when every checked tensor of every layer passed.

    Raises
    ------
    ValueError
        ``layer`` names no case.
    """
    from .backends import backend_name
    out = sys.stdout if out is None else out
    names = list(LAYER_CASES)
    if layer is not None:
        by_lower = {name.lower(): name for name in names}
        if layer.lower() not in by_lower:
            raise ValueError(f"gradcheck: unknown layer {layer!r}; choose one of: "
                             f"{', '.join(names)}")
        names = [by_lower[layer.lower()]]
    results = []
    for name in names:
        factory, shape, make_input = LAYER_CASES[name]
        rng = np.random.default_rng(0)
        with _init_seed(0):
            case = factory()
        x = (make_input or (lambda rng, shape: rng.standard_normal(shape)))(rng, shape)
        results.append((name, gradcheck(case, x, tol=tol)))
    rows = [(name, row) for name, result in results for row in result.rows]
    w_layer = max(len("layer"), *(len(name) for name, _ in rows)) + 2
    w_tensor = max(len("tensor"), *(len(row["name"]) for _, row in rows)) + 2
    header = f"{'layer':<{w_layer}}{'tensor':<{w_tensor}}{'shape':<16}{'max rel err':>12}  result"
    print(header, file=out)
    print("-" * len(header), file=out)
    for name, row in rows:
        print(f"{name:<{w_layer}}{row['name']:<{w_tensor}}{row['shape']!s:<16}"
              f"{row['max_rel_err']:>12.2e}  {'ok' if row['passed'] else 'FAIL'}", file=out)
    failed = sum(not result.passed for _, result in results)
    print(f"{len(names) - failed}/{len(names)} layers passed (tol {tol:g}, float64, "
          f"backend {backend_name()})", file=out)
    return failed == 0
