"""Dense, the NumPy reference: the ops of the contract (tinynet/ops/dense/__init__.py).

Each product is one NumPy ``@`` (a BLAS GEMM) and db is ``dy.sum(axis=0)``,
all in the input dtype (the tests call it in float64).
"""
from ..contract import implements
from .. import dense

__all__ = ["dense_forward", "dense_backward"]


@implements(dense.dense_forward)
def dense_forward(x, W, b):
    y = x @ W.T
    if b is not None:
        y += b
    return y


@implements(dense.dense_backward)
def dense_backward(x, W, dy, has_bias, need_dx):
    dW = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    dx = dy @ W if need_dx else None
    return dx, dW, db
