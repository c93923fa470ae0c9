"""The loss ops on the cuda backend: numba.cuda kernels and their launchers.

The ops and their math: the contract, tinynet/ops/loss/__init__.py.

The forward is one thread per row (log-sum-exp, the row's loss and p_n, in
float64; each thread writes only its own row), then one block that sums the
row losses (a block reduction). The loss stays on the device: it is returned
as a 0-d float64 device array, so a training step never waits for it;
``float(loss)`` copies it to the host when it is wanted. A label outside
[0, K) makes its row's loss, and so the loss, NaN (checking it on the host
would cost a round trip per step). The backward is one thread per element of
dx.
"""
import math

import numpy as np
from numba import cuda, float64

from ..contract import implements
from .. import loss
from ...backends import cuda_device as dev
from ...backends.cuda_device import REDUCE_SHARED
from ...backends.cuda_reduce import block_sum

__all__ = ["softmax_xent_forward", "softmax_xent_backward"]


@dev.kernel("void({f}[:, ::1], int64[::1], float64, {f}[:, ::1], float64[::1])")
def _xent_rows(logits, labels, eps, probs, row_loss):
    n, k = logits.shape
    # Parallel axis: the rows; each thread writes only its own probs[r] and row_loss[r].
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = float64(logits[r, 0])
        for c in range(1, k):
            v = float64(logits[r, c])
            if v > m or v != v:
                m = v
        s = float64(0.0)
        sum_z = float64(0.0)
        for c in range(k):
            z = float64(logits[r, c]) - m
            s += math.exp(z)
            sum_z += z
        lse = math.log(s)
        for c in range(k):
            probs[r, c] = math.exp(float64(logits[r, c]) - m - lse)
        t = labels[r]
        if t < 0 or t >= k:
            row_loss[r] = math.nan
        else:
            nll = lse - (float64(logits[r, t]) - m)
            smooth = lse - sum_z / k
            row_loss[r] = (1.0 - eps) * nll + eps * smooth


@dev.kernel("void(float64[::1], float64[::1])")
def _mean(v, out):
    sh = cuda.shared.array(REDUCE_SHARED, float64)
    # One block: the threads split the entries and thread 0 writes the mean.
    acc = float64(0.0)
    for i in range(cuda.threadIdx.x, v.size, cuda.blockDim.x):
        acc += v[i]
    acc = block_sum(acc, sh)
    if cuda.threadIdx.x == 0:
        out[0] = acc / v.size


@dev.kernel("void({f}[:, ::1], int64[::1], float64, {f}[:, ::1])")
def _xent_backward(probs, labels, eps, dlogits):
    n, k = probs.shape
    off = eps / k
    hit = 1.0 - eps
    # Parallel axis: the flat index of dlogits; each thread writes only its own element.
    for e in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        r = e // k
        c = e - r * k
        q = off + hit if labels[r] == c else off
        dlogits[r, c] = (float64(probs[r, c]) - q) / n


def _require(opname, arg, a, labels):
    """``a`` (named ``arg``) and ``labels`` on the device, labels int64 of shape (N,)."""
    dev.require_device(opname, **{arg: a, "labels": labels})
    n = a.shape[0]
    if labels.shape != (n,) or labels.dtype != np.int64:
        raise ValueError(f"{opname}: labels must be int64 of shape ({n},), got "
                         f"{labels.dtype} {labels.shape}")


@implements(loss.softmax_xent_forward)
def softmax_xent_forward(logits, labels, label_smoothing):
    _require("softmax_xent_forward", "logits", logits, labels)
    n = logits.shape[0]
    probs = dev.empty_like(logits)
    row_loss = dev.empty((n,), np.float64)
    _xent_rows[dev.grid_1d(n)](logits, labels, float(label_smoothing), probs, row_loss)
    mean = dev.empty((1,), np.float64)
    _mean[1, dev.grid_sets(1)[1]](row_loss, mean)
    return mean.reshape(()), probs


@implements(loss.softmax_xent_backward)
def softmax_xent_backward(probs, labels, label_smoothing):
    _require("softmax_xent_backward", "probs", probs, labels)
    dlogits = dev.empty_like(probs)
    _xent_backward[dev.grid_1d(probs.size)](probs, labels, float(label_smoothing), dlogits)
    return dlogits
