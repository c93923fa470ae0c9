"""The loss ops on the cpu backend: Numba kernels.

The ops and their math: the contract, tinynet/ops/loss/__init__.py.

The forward makes one pass per row under prange: the row maximum, the
log-sum-exp and the row's loss in float64 (exp from
``tinynet.backends.cpu_jit.vector_exp``, which vectorizes), and the row of
probabilities; each row writes only its own probabilities and loss, and the
row losses are then summed in a fixed order, so the loss does not depend on
the thread count. The backward runs one prange task per row of dlogits.
Promoted from the lab (kernels/elementwise.py).

A label outside [0, K) raises ValueError instead of reading out of bounds.
"""
import math

import numpy as np
from numba import prange

from .. import loss
from ..contract import implements
from ...backends.cpu_jit import njit_kernel, vector_exp

__all__ = ["softmax_xent_forward", "softmax_xent_backward"]


@njit_kernel(parallel=True)
def _softmax_xent_forward(logits, labels, label_smoothing, probs, row_loss):
    n, k = logits.shape
    # Parallel axis: the rows r; row r writes only probs[r] and row_loss[r].
    for r in prange(n):
        t = labels[r]
        if t < 0 or t >= k:
            # A label outside [0, K): skip the row, the caller raises.
            row_loss[r] = np.inf
            continue
        # The maximum skips NaN; a NaN logit then makes exp, the sum and the
        # row's loss NaN.
        m = np.float64(logits[r, 0])
        for c in range(1, k):
            v = np.float64(logits[r, c])
            if v > m:
                m = v
        s = 0.0
        sum_z = 0.0
        for c in range(k):
            z = np.float64(logits[r, c]) - m
            e = vector_exp(z)
            s += e
            sum_z += z
            probs[r, c] = e
        lse = math.log(s)
        nll = lse - (np.float64(logits[r, t]) - m)
        smooth = lse - sum_z / k
        row_loss[r] = (1.0 - label_smoothing) * nll + label_smoothing * smooth
        inv_s = 1.0 / s
        for c in range(k):
            probs[r, c] = probs[r, c] * inv_s
    # First bad label, or -1; the sum runs in a fixed order.
    bad = -1
    total = 0.0
    for r in range(n):
        if bad < 0 and (labels[r] < 0 or labels[r] >= k):
            bad = r
        total += row_loss[r]
    return total / n, bad


@njit_kernel(parallel=True)
def _softmax_xent_backward(probs, labels, label_smoothing, dlogits):
    n, k = probs.shape
    inv_n = 1.0 / n
    off = label_smoothing / k
    hit = 1.0 - label_smoothing
    # Parallel axis: the rows r; row r writes only dlogits[r].
    for r in prange(n):
        t = labels[r]
        for c in range(k):
            q = off + hit if c == t else off
            dlogits[r, c] = (np.float64(probs[r, c]) - q) * inv_n
    bad = -1
    for r in range(n):
        if labels[r] < 0 or labels[r] >= k:
            bad = r
            break
    return bad


def _check_labels(opname, labels, bad, k):
    """ValueError naming the label at index ``bad``, the first outside [0, k) (-1: none)."""
    if bad >= 0:
        raise ValueError(f"{opname}: label {labels[bad]} at index {bad} is out of range [0, {k})")


@implements(loss.softmax_xent_forward)
def softmax_xent_forward(logits, labels, label_smoothing):
    """A label outside [0, K) raises ValueError instead of reading out of bounds."""
    logits = np.ascontiguousarray(logits)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    probs = np.empty_like(logits)
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    mean, bad = _softmax_xent_forward(logits, labels, float(label_smoothing), probs, row_loss)
    _check_labels("softmax_xent_forward", labels, bad, logits.shape[1])
    return float(mean), probs


@implements(loss.softmax_xent_backward)
def softmax_xent_backward(probs, labels, label_smoothing):
    """A label outside [0, K) raises ValueError instead of reading out of bounds."""
    probs = np.ascontiguousarray(probs)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    dlogits = np.empty_like(probs)
    bad = _softmax_xent_backward(probs, labels, float(label_smoothing), dlogits)
    _check_labels("softmax_xent_backward", labels, bad, probs.shape[1])
    return dlogits
