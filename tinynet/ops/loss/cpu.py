"""Fused softmax + cross-entropy loss, mean over the batch (Numba kernels).

The ops, their equations and their argument checks are those of
tinynet/ops/loss/__init__.py: log p = log softmax(x) per row, the smoothed
target q = (1 - eps) * onehot(t) + eps / K, loss = -(1 / N) sum q * log p and
dx = (p - q) / N.

One pass per row computes m_n, the log-sum-exp and the row's loss in float64
(exp without libm, the activations' ``_exp``) and writes p_n; the rows run in
parallel (promoted from kernels/elementwise.py softmax-xent variant 2). This
is torch.nn.CrossEntropyLoss with reduction='mean' and label_smoothing=eps
(https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html).

A label outside [0, K) raises ValueError instead of reading out of bounds.
"""
import math

import numpy as np
from numba import prange

from .. import loss
from ..contract import implements
from ..activation.cpu import _exp
from ...backends.cpu_jit import njit_kernel

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
            e = _exp(z)
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


def _raise_bad_label(op, labels, bad, k):
    raise ValueError(f"{op}: label {labels[bad]} at index {bad} is out of range [0, {k})")


@implements(loss.softmax_xent_forward)
def softmax_xent_forward(logits, labels, label_smoothing):
    """A label outside [0, K) raises ValueError instead of reading out of bounds."""
    logits = np.ascontiguousarray(logits)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    eps = float(label_smoothing)
    probs = np.empty_like(logits)
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    loss, bad = _softmax_xent_forward(logits, labels, eps, probs, row_loss)
    if bad >= 0:
        _raise_bad_label("softmax_xent_forward", labels, bad, logits.shape[1])
    return float(loss), probs


@implements(loss.softmax_xent_backward)
def softmax_xent_backward(probs, labels, label_smoothing):
    """A label outside [0, K) raises ValueError instead of reading out of bounds."""
    probs = np.ascontiguousarray(probs)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    eps = float(label_smoothing)
    dlogits = np.empty_like(probs)
    bad = _softmax_xent_backward(probs, labels, eps, dlogits)
    if bad >= 0:
        _raise_bad_label("softmax_xent_backward", labels, bad, probs.shape[1])
    return dlogits
