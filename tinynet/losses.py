"""Losses: softmax cross-entropy and mean squared error, mean reduction as torch.

Usage: ``loss = f.forward(pred, target)`` (or ``f(pred, target)``) returns a
Python float (on a device backend a 0-d device array, read with ``float``)
and caches what the backward needs; ``dpred = f.backward()`` returns
dL/dpred, already divided by the batch (or element) count, on the device of
pred.

SoftmaxCrossEntropy, for logits x (N, K), integer labels t (N,) and label
smoothing eps (torch.nn.CrossEntropyLoss(label_smoothing=eps)):

    log p_nk = x_nk - log(sum_j exp(x_nj))        (computed as log-sum-exp)
    q_nk     = (1 - eps) * [k == t_n] + eps / K
    loss     = -(1 / N) * sum_n sum_k q_nk * log p_nk
    dx_nk    = (p_nk - q_nk) / N

Fusing the softmax into the loss gives the simple gradient p - q and avoids
log(0) (https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html).

MSELoss, for pred and target of the same shape with M elements in all
(torch.nn.MSELoss()):

    loss  = (1 / M) * sum_i (pred_i - target_i)^2
    dpred = 2 * (pred - target) / M

``accuracy(logits, labels)`` is the fraction of rows whose argmax is the label;
``count_correct`` is their number, left on the device.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .backends import check_device, device_of, get_backend
from .parameter import Array

__all__ = ["SoftmaxCrossEntropy", "MSELoss", "accuracy", "count_correct"]


class Loss(Protocol):
    """What ``fit`` and ``evaluate`` call on a loss: SoftmaxCrossEntropy, MSELoss
    or a class of your own with these two methods."""

    def forward(self, pred: Array, target: Any, /) -> float | Array: ...

    def backward(self) -> Array: ...


def _check_float_array(name: str, arg: str, value: Array, what: str, backend: Any) -> None:
    """Raise unless ``value`` is a float array on the backend's device; ``what`` is its shape."""
    if not (isinstance(value, np.ndarray) or device_of(value) != "cpu"):
        raise TypeError(f"{name}: {arg} must be an array of shape {what}, "
                        f"got {type(value).__name__}")
    check_device(name, arg, value, backend)
    if value.dtype.kind != "f":
        raise TypeError(f"{name}: {arg} must be float32 or float64, got {value.dtype}")


def _check_logits_labels(name: str, logits: Array, labels: Array,
                         backend: Any) -> Array:
    """Check (N, K) float logits and (N,) integer labels; return labels as int64.

    Host labels may be any array-like; on a device backend they must be device
    arrays (``tn.to_device(y)``).
    """
    _check_float_array(name, "logits", logits, "(N, K)", backend)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{name}: logits must have shape (N, K) with N, K >= 1, "
                         f"got {logits.shape}")
    if backend.DEVICE == "cpu":
        labels = np.asarray(labels)
    check_device(name, "labels", labels, backend)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: labels must be integer class indices, got {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{name}: labels must have shape (N,) = ({logits.shape[0]},) "
                         f"to match logits {logits.shape}, got {labels.shape}")
    return labels if labels.dtype == np.int64 else labels.astype(np.int64)


def _value(loss: Any, backend: Any) -> Any:
    """The loss as a Python float on a host backend; a 0-d device array on a device one."""
    return float(loss) if backend.DEVICE == "cpu" else loss


class _Loss:
    """Shared calling convention: ``f(pred, target)`` is ``f.forward(pred, target)``."""

    def __init__(self) -> None:
        # What backward needs, set by forward (each loss its own tuple); None before.
        self._cache: Any = None

    def __call__(self, pred: Array, target: Any) -> float | Array:
        return self.forward(pred, target)

    def forward(self, pred: Array, target: Any) -> float | Array:
        """The loss of ``pred`` against ``target`` (subclasses)."""
        raise NotImplementedError

    def backward(self) -> Array:
        """dL/dpred, pred's shape (subclasses)."""
        raise NotImplementedError

    def _cached(self) -> Any:
        """The forward cache, or RuntimeError when no forward ran."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class SoftmaxCrossEntropy(_Loss):
    """Softmax followed by cross-entropy, fused and stable; mean over the batch.

    The same as torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    applied to logits.

    Parameters
    ----------
    label_smoothing : float
        eps in [0, 1); the target becomes (1 - eps) * onehot + eps / K.

    Examples
    --------
    >>> f = SoftmaxCrossEntropy()
    >>> loss = f.forward(logits, labels)   # logits (N, K), labels (N,) int
    >>> dlogits = f.backward()             # (N, K), divided by N
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), "
                             f"got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Array, labels: Array) -> float | Array:
        """Mean cross-entropy of ``logits`` (N, K) against integer ``labels`` (N,).

        Parameters
        ----------
        logits : np.ndarray
            (N, K) float32 or float64, unnormalized scores.
        labels : np.ndarray
            (N,) integer class indices in [0, K).

        Returns
        -------
        float or 0-d device array
            The loss: a Python float on a host backend; on a device backend a
            0-d float64 device array, so that a training step does not wait
            for it (``float(loss)`` reads it). A NaN logit makes it NaN, and
            on a device so does a label outside [0, K).
        """
        self._cache = None
        backend = get_backend()
        labels = _check_logits_labels("SoftmaxCrossEntropy", logits, labels, backend)
        k = logits.shape[1]
        if backend.DEVICE == "cpu":
            # On a device this check would cost a round trip per step; there
            # a bad label makes the loss NaN instead.
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"SoftmaxCrossEntropy: label {labels[i]} at index {i} is out "
                                 f"of range [0, {k}) for logits with K = {k} classes")
        logits = backend.asarray(logits)
        loss, probs = backend.softmax_xent_forward(logits, labels, self.label_smoothing)
        self._cache = (probs, labels)
        return _value(loss, backend)

    def backward(self) -> Array:
        """dL/dlogits, (N, K), logits' dtype, already divided by N."""
        probs, labels = self._cached()
        return get_backend().softmax_xent_backward(probs, labels, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}" if self.label_smoothing else ""


class MSELoss(_Loss):
    """Mean squared error over all elements, as torch.nn.MSELoss().

    Examples
    --------
    >>> f = MSELoss()
    >>> loss = f.forward(pred, target)   # same shape, any rank
    >>> dpred = f.backward()             # 2 * (pred - target) / pred.size
    """

    def forward(self, pred: Array, target: Array) -> float | Array:
        """Mean of (pred - target)^2 over every element.

        Parameters
        ----------
        pred : np.ndarray
            (*) float32 or float64.
        target : np.ndarray
            (*) float, exactly pred's shape (no broadcasting); it is cast to
            pred's dtype.

        Returns
        -------
        float or 0-d device array
            The loss, summed in float64; on a device backend a 0-d device
            array, as for SoftmaxCrossEntropy.
        """
        self._cache = None
        backend = get_backend()
        _check_float_array("MSELoss", "pred", pred, "(*)", backend)
        _check_float_array("MSELoss", "target", target, "(*)", backend)
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: target must have pred's shape {pred.shape}, "
                             f"got {target.shape}")
        if pred.size == 0:
            raise ValueError("MSELoss: pred is empty; the mean needs at least one element")
        diff = pred - target.astype(pred.dtype)
        self._cache = diff
        return _value((diff.astype(np.float64) ** 2).mean(), backend)

    def backward(self) -> Array:
        """dL/dpred = 2 * (pred - target) / M, pred's shape and dtype."""
        diff = self._cached()
        return diff * (2.0 / diff.size)


def count_correct(logits: Array, labels: Array) -> Any:
    """Number of rows whose highest logit is at the label, on the logits' device.

    Parameters
    ----------
    logits : array
        (N, K) scores (logits or probabilities).
    labels : array
        (N,) integer class indices.

    Returns
    -------
    0-d integer array
        The count, on the active backend's device (``int()`` reads it).
    """
    labels = _check_logits_labels("accuracy", logits, labels, get_backend())
    return (logits.argmax(axis=1) == labels).sum()


def accuracy(logits: Array, labels: Array) -> float:
    """Fraction of rows whose highest logit is at the label, a float in [0, 1].

    ``count_correct(logits, labels) / N``, read back to the host; the
    arguments are those of ``count_correct``.
    """
    return float(count_correct(logits, labels)) / logits.shape[0]
