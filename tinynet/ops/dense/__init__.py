"""Dense (fully connected) layer (as torch.nn.Linear): the contract.

Every output is a weighted sum of all the inputs plus a bias, and the
backward pass follows from the chain rule (Rumelhart, Hinton and Williams,
1986, https://doi.org/10.1038/323533a0).

x is (N, I), W is (O, I) and b is (O,), as torch.nn.Linear stores them.

forward:   y[n, o] = sum_i x[n, i] * W[o, i] + b[o]       i.e. y = x W^T + b
backward:  dx = dy W                                       (N, I)
           dW = dy^T x                                     (O, I)
           db[o] = sum_n dy[n, o]                          (O,)

Every array keeps the input dtype (float32 or float64).
"""
from ..contract import check_float, check_ndim, check_shape, op

__all__ = ["dense_forward", "dense_backward"]


def _check_dense(name, x, W):
    """x (N, I) and W (O, I) of one float dtype."""
    check_float(name, "x", x)
    check_ndim(name, "x", x, 2, "(N, I)")
    check_float(name, "W", W)
    check_ndim(name, "W", W, 2, "(O, I)")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"{name}: x must have shape (N, {W.shape[1]}) for W {W.shape}, "
                         f"got {x.shape}")
    if x.dtype != W.dtype:
        raise TypeError(f"{name}: x ({x.dtype}) and W ({W.dtype}) must have one dtype")


def _check_dense_forward(name, x, W, b):
    _check_dense(name, x, W)
    check_shape(name, "b", b, (W.shape[0],))


def _check_dense_backward(name, x, W, dy, has_bias, need_dx):
    _check_dense(name, x, W)
    check_float(name, "dy", dy)
    check_shape(name, "dy", dy, (x.shape[0], W.shape[0]))


@op(check=_check_dense_forward)
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


@op(check=_check_dense_backward)
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
