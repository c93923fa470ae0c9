"""Fused softmax + cross-entropy loss, mean over the batch (the contract).

For logits x (N, K), integer labels t (N,) and label smoothing eps in [0, 1):

    log p_nk = x_nk - m_n - log(sum_j exp(x_nj - m_n)),   m_n = max_j x_nj
    q_nk     = (1 - eps) * [k == t_n] + eps / K           (the smoothed target)
    loss     = -(1 / N) * sum_n sum_k q_nk * log p_nk
    dx_nk    = (p_nk - q_nk) / N

Subtracting the row maximum (log-sum-exp) keeps exp from overflowing, so
logits of 1e4 give a finite loss. This is torch.nn.CrossEntropyLoss with
reduction='mean' and label_smoothing=eps
(https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html).
"""
from ..contract import check_float, op

__all__ = ["softmax_xent_forward", "softmax_xent_backward"]


def _check_xent(name, arr_name, arr, labels):
    """arr a float (N, K) array with N, K >= 1 and labels integers of shape (N,)."""
    check_float(name, arr_name, arr)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: {arr_name} must have shape (N, K) with N, K >= 1, "
                         f"got {arr.shape}")
    if getattr(labels, "shape", None) != (arr.shape[0],):
        raise ValueError(f"{name}: labels must have shape (N,) = ({arr.shape[0]},), "
                         f"got {getattr(labels, 'shape', type(labels).__name__)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: labels must be integers, got {labels.dtype}")


def _check_forward(name, logits, labels, label_smoothing):
    _check_xent(name, "logits", logits, labels)


def _check_backward(name, probs, labels, label_smoothing):
    _check_xent(name, "probs", probs, labels)


@op(check=_check_forward)
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
    loss : float or 0-d array
        The mean over the batch, computed in float64: a Python float on the
        host backends, a 0-d float64 device array on a device backend (so a
        step does not wait for it; ``float(loss)`` reads it).
    probs : np.ndarray
        (N, K) softmax of the logits, logits' dtype.
    """


@op(check=_check_backward)
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
