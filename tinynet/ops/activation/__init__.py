"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh, GELU and Softmax (the contract).

Each forward maps x to y elementwise (Softmax along one axis); each backward
maps the upstream gradient dy = dL/dy to dx = dL/dx.

- ReLU:       y = max(x, 0)                   dx = dy * [x > 0]
- LeakyReLU:  y = x if x > 0 else slope * x   dx = dy if x > 0 else slope * dy
- Sigmoid:    y = 1 / (1 + exp(-x))           dx = dy * y * (1 - y)
- Tanh:       y = tanh(x)                     dx = dy * (1 - y^2)
- GELU:       y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
              dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
  (the exact form, torch's default GELU; https://arxiv.org/abs/1606.08415)
- Softmax:    y_k = exp(x_k - m) / sum_j exp(x_j - m),  m = max_j x_j
              dx = y * (dy - sum_k(dy_k * y_k))   (sums along the softmax axis)

Sigmoid, Tanh and Softmax backward read the output y, which is what the layer
caches; ReLU, LeakyReLU and GELU backward read the input x. Every op returns
arrays of its input's dtype and propagates NaN (relu(NaN) is NaN, as in torch).
"""
from ..contract import check_float, check_same_shape, op

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "gelu_forward", "gelu_backward", "softmax_forward", "softmax_backward"]


def _check_x(name, x, slope=None):
    check_float(name, "x", x)


def _check_cached(name, arg, a, dy):
    """dy and the cached tensor ``a`` (x or y): float arrays of one shape."""
    check_float(name, "dy", dy)
    check_float(name, arg, a)
    check_same_shape(name, "dy", dy, a)


def _check_x_dy(name, x, dy, slope=None):
    _check_cached(name, "x", x, dy)


def _check_y_dy(name, y, dy):
    _check_cached(name, "y", y, dy)


def _check_axis(name, a, axis):
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for shape {a.shape}")


def _check_softmax_forward(name, x, axis):
    _check_x(name, x)
    _check_axis(name, x, axis)


def _check_softmax_backward(name, y, dy, axis):
    _check_y_dy(name, y, dy)
    _check_axis(name, y, axis)


@op(check=_check_x)
def relu_forward(x):
    """ReLU: y = max(x, 0).

    Parameters
    ----------
    x : np.ndarray
        Input, any shape, float32 or float64.

    Returns
    -------
    np.ndarray
        y, same shape and dtype as x. NaN stays NaN.
    """


@op(check=_check_x_dy)
def relu_backward(x, dy):
    """ReLU backward: dx = dy where x > 0, else 0 (as torch, NaN x passes dy).

    Parameters
    ----------
    x : np.ndarray
        The forward input, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as x.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """


@op(check=_check_x)
def leaky_relu_forward(x, slope):
    """LeakyReLU: y = x if x > 0 else slope * x.

    Parameters
    ----------
    x : np.ndarray
        Input, any shape.
    slope : float
        The negative slope.

    Returns
    -------
    np.ndarray
        y, same shape and dtype as x.
    """


@op(check=_check_x_dy)
def leaky_relu_backward(x, dy, slope):
    """LeakyReLU backward: dx = dy if x > 0 else slope * dy.

    Parameters
    ----------
    x : np.ndarray
        The forward input, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as x.
    slope : float
        The negative slope.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """


@op(check=_check_x)
def sigmoid_forward(x):
    """Sigmoid: y = 1 / (1 + exp(-x)), computed without overflow.

    With z = exp(-|x|) in (0, 1], y = 1 / (1 + z) for x >= 0 and
    y = z / (1 + z) for x < 0, so exp never sees a large positive argument.

    Parameters
    ----------
    x : np.ndarray
        Input, any shape.

    Returns
    -------
    np.ndarray
        y in [0, 1], same shape and dtype as x.
    """


@op(check=_check_y_dy)
def sigmoid_backward(y, dy):
    """Sigmoid backward from the output: dx = dy * y * (1 - y).

    Parameters
    ----------
    y : np.ndarray
        The forward output, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as y.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """


@op(check=_check_x)
def tanh_forward(x):
    """Tanh: y = tanh(x).

    Parameters
    ----------
    x : np.ndarray
        Input, any shape.

    Returns
    -------
    np.ndarray
        y in [-1, 1], same shape and dtype as x.
    """


@op(check=_check_y_dy)
def tanh_backward(y, dy):
    """Tanh backward from the output: dx = dy * (1 - y^2).

    Parameters
    ----------
    y : np.ndarray
        The forward output, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as y.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """


@op(check=_check_x)
def gelu_forward(x):
    """GELU, exact erf form: y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))).

    Computed in float64 and cast back to x's dtype.

    Parameters
    ----------
    x : np.ndarray
        Input, any shape.

    Returns
    -------
    np.ndarray
        y, same shape and dtype as x.
    """


@op(check=_check_x_dy)
def gelu_backward(x, dy):
    """GELU backward: dx = dy * (Phi(x) + x * phi(x)), phi the standard normal pdf.

    Parameters
    ----------
    x : np.ndarray
        The forward input, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as x.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """


@op(check=_check_softmax_forward)
def softmax_forward(x, axis):
    """Softmax along ``axis``: y = exp(x - max) / sum(exp(x - max)).

    Subtracting the maximum along the axis keeps exp from overflowing.

    Parameters
    ----------
    x : np.ndarray
        Input, any shape, e.g. (N, K) or (N, C, H, W).
    axis : int
        The axis the probabilities sum to 1 along (negative counts from the end).

    Returns
    -------
    np.ndarray
        y, same shape and dtype as x.
    """


@op(check=_check_softmax_backward)
def softmax_backward(y, dy, axis):
    """Softmax backward from the output: dx = y * (dy - sum(dy * y, axis)).

    Parameters
    ----------
    y : np.ndarray
        The forward output, any shape.
    dy : np.ndarray
        Upstream gradient, same shape as y.
    axis : int
        The softmax axis used in the forward pass.

    Returns
    -------
    np.ndarray
        dx, same shape and dtype as dy.
    """
