"""Dense (fully connected) layer, the NumPy reference.

x is (N, I), W is (O, I) and b is (O,), as torch.nn.Linear stores them.

forward:   y[n, o] = sum_i x[n, i] * W[o, i] + b[o]       i.e. y = x W^T + b
backward:  dx = dy W                                       (N, I)
           dW = dy^T x                                     (O, I)
           db[o] = sum_n dy[n, o]                          (O,)

Each product is one BLAS matrix multiply (NumPy's ``@``). Every array keeps
the input dtype (float32 or float64).
"""
from ..contract import op

__all__ = ["dense_forward", "dense_backward"]


@op()
def dense_forward(x, W, b):
    """y = x W^T + b.

    Parameters
    ----------
    x : np.ndarray
        Input, shape (N, I).
    W : np.ndarray
        Weight, shape (O, I).
    b : np.ndarray or None
        Bias, shape (O,), or None for no bias.

    Returns
    -------
    y : np.ndarray
        Output, shape (N, O), dtype of x.
    """
    y = x @ W.T
    if b is not None:
        y += b
    return y


@op()
def dense_backward(x, W, dy, has_bias, need_dx):
    """Gradients of y = x W^T + b with respect to x, W and b.

    Parameters
    ----------
    x : np.ndarray
        The forward input, shape (N, I).
    W : np.ndarray
        Weight, shape (O, I).
    dy : np.ndarray
        Upstream gradient dL/dy, shape (N, O).
    has_bias : bool
        Compute db.
    need_dx : bool
        Compute dx (the first layer of a network needs none).

    Returns
    -------
    dx : np.ndarray or None
        dL/dx = dy W, shape (N, I); None unless ``need_dx``.
    dW : np.ndarray
        dL/dW = dy^T x, shape (O, I).
    db : np.ndarray or None
        dL/db = sum of dy over the batch, shape (O,); None unless ``has_bias``.
    """
    dW = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    dx = dy @ W if need_dx else None
    return dx, dW, db
