"""The loss ops in NumPy: the reference backend and the tests' oracle.

The ops and their math: the contract, tinynet/ops/loss/__init__.py. The
forward works in float64 on whole arrays: log-probabilities from the
max-shifted logits, the loss as their smoothed mean; the probabilities are
cast back to the logits' dtype. The backward works in the probabilities'
dtype.
"""
import numpy as np

from .. import loss
from ..contract import implements

__all__ = ["softmax_xent_forward", "softmax_xent_backward"]


@implements(loss.softmax_xent_forward)
def softmax_xent_forward(logits, labels, label_smoothing):
    n, k = logits.shape
    z = logits.astype(np.float64)
    z = z - np.max(z, axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    nll = -logp[np.arange(n), labels]
    smooth = -np.sum(logp, axis=1) / k
    mean = np.mean((1.0 - label_smoothing) * nll + label_smoothing * smooth)
    return float(mean), np.exp(logp).astype(logits.dtype)


@implements(loss.softmax_xent_backward)
def softmax_xent_backward(probs, labels, label_smoothing):
    n, k = probs.shape
    dlogits = probs - label_smoothing / k
    dlogits[np.arange(n), labels] -= 1.0 - label_smoothing
    return dlogits / n
