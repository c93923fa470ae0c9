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
"""
import copy

import numpy as np

from .layers.base import Layer
from .parameter import Parameter


class GradcheckResult:
    """The outcome of ``gradcheck``: one row per checked tensor.

    Attributes
    ----------
    rows : list of dict
        Keys: ``name``, ``shape``, ``max_abs_err``, ``max_rel_err`` and ``passed``.
    passed : bool
        True when every tensor passed.
    """

    def __init__(self, layer_name, rows, tol):
        self.layer_name = layer_name
        self.rows = rows
        self.tol = tol

    @property
    def passed(self):
        return all(r["passed"] for r in self.rows)

    @property
    def max_rel_err(self):
        return max((r["max_rel_err"] for r in self.rows), default=0.0)

    def __bool__(self):
        return self.passed

    def __str__(self):
        lines = [f"gradcheck {self.layer_name} (tol {self.tol:.0e}):",
                 f"  {'tensor':<16}{'shape':<18}{'max abs err':>13}{'max rel err':>13}  result"]
        for r in self.rows:
            lines.append(f"  {r['name']:<16}{str(r['shape']):<18}{r['max_abs_err']:>13.2e}"
                         f"{r['max_rel_err']:>13.2e}  {'ok' if r['passed'] else 'FAIL'}")
        return "\n".join(lines)

    __repr__ = __str__


def _sublayers(layer):
    """The layer and, for containers, every layer inside it."""
    out = [layer]
    for _, sub in layer.children():
        out.extend(_sublayers(sub))
    return out


def _snapshot(layer):
    """Copy every attribute that is not a parameter or a sub-layer (buffers, dropout
    step, ...); the sub-layers are snapshot themselves."""
    return [(l, {k: copy.deepcopy(v) for k, v in vars(l).items()
                 if k != "_cache" and not isinstance(v, (Parameter, list, Layer))})
            for l in _sublayers(layer)]


def _restore(snapshot):
    for l, state in snapshot:
        for k, v in state.items():
            setattr(l, k, copy.deepcopy(v))


def _compare(name, analytic, numeric, tol):
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    err = np.abs(a - b)
    rel = err / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return {"name": name, "shape": a.shape,
            "max_abs_err": float(err.max(initial=0.0)),
            "max_rel_err": float(rel.max(initial=0.0)),
            "passed": bool(np.all(rel <= tol))}


def gradcheck(layer, x, dy=None, h=1e-5, tol=1e-6, seed=0, check_input=True):
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

    def loss():
        _restore(state)
        return float(np.sum(layer.forward(x) * dy))

    def numeric_grad(z):
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
        if name == "x":
            if a is None:
                raise RuntimeError(f"gradcheck: {type(layer).__name__}.backward returned no dx")
            rows.append(_compare("x", a, numeric_grad(x), tol))
        else:
            p = dict(named)[name]
            rows.append(_compare(name, a, numeric_grad(p.data), tol))
    _restore(state)
    return GradcheckResult(type(layer).__name__, rows, tol)
