"""Fused softmax + cross-entropy loss, mean over the batch (Numba kernels).

The same op as tinynet/backends/ref/loss.py. For logits x (N, K), integer
labels t (N,) and label smoothing eps in [0, 1):

    log p_nk = x_nk - m_n - log(sum_j exp(x_nj - m_n)),   m_n = max_j x_nj
    q_nk     = (1 - eps) * [k == t_n] + eps / K           (the smoothed target)
    loss     = -(1 / N) * sum_n sum_k q_nk * log p_nk
    dx_nk    = (p_nk - q_nk) / N

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

from .activation import _exp
from .jit import njit_kernel

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


def _check(op, arr_name, arr, labels, label_smoothing):
    """Validate the arguments; return (arr, labels int64, eps) ready for a kernel."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        raise TypeError(f"{op}: {arr_name} must be float32 or float64, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{op}: {arr_name} must have shape (N, K) with N, K >= 1, "
                         f"got {arr.shape}")
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape != (arr.shape[0],):
        raise ValueError(f"{op}: labels must have shape (N,) = ({arr.shape[0]},), "
                         f"got {labels.shape}")
    return arr, labels, float(label_smoothing)


def _raise_bad_label(op, labels, bad, k):
    raise ValueError(f"{op}: label {labels[bad]} at index {bad} is out of range [0, {k})")


def softmax_xent_forward(logits, labels, label_smoothing):
    """Mean softmax cross-entropy and the softmax probabilities.

    Parameters
    ----------
    logits : np.ndarray
        (N, K) float32 or float64.
    labels : np.ndarray
        (N,) int64, each in [0, K).
    label_smoothing : float
        eps in [0, 1); the target is (1 - eps) * onehot + eps / K.

    Returns
    -------
    loss : float
        The mean over the batch, computed in float64.
    probs : np.ndarray
        (N, K) softmax of the logits, logits' dtype.
    """
    logits, labels, eps = _check("softmax_xent_forward", "logits", logits, labels,
                                 label_smoothing)
    probs = np.empty_like(logits)
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    loss, bad = _softmax_xent_forward(logits, labels, eps, probs, row_loss)
    if bad >= 0:
        _raise_bad_label("softmax_xent_forward", labels, bad, logits.shape[1])
    return float(loss), probs


def softmax_xent_backward(probs, labels, label_smoothing):
    """Gradient of the mean softmax cross-entropy: dlogits = (probs - q) / N.

    Parameters
    ----------
    probs : np.ndarray
        (N, K) softmax probabilities from ``softmax_xent_forward``.
    labels : np.ndarray
        (N,) int64, each in [0, K).
    label_smoothing : float
        eps in [0, 1), as in the forward pass.

    Returns
    -------
    np.ndarray
        dlogits, (N, K), probs' dtype, already divided by N.
    """
    probs, labels, eps = _check("softmax_xent_backward", "probs", probs, labels,
                                label_smoothing)
    dlogits = np.empty_like(probs)
    bad = _softmax_xent_backward(probs, labels, eps, dlogits)
    if bad >= 0:
        _raise_bad_label("softmax_xent_backward", labels, bad, probs.shape[1])
    return dlogits
