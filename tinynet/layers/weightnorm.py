"""WeightNorm: a Dense or Conv2D layer whose weight is g * v / ||v|| per output unit.

Salimans and Kingma 2016, https://arxiv.org/abs/1602.07868, as
torch.nn.utils.parametrizations.weight_norm(layer, dim=0). The forward pass
computes w from g and v (the backend's weightnorm_forward), then the wrapped
layer's output with w; the backward pass takes the wrapped layer's weight
gradient dw back to dg and dv (weightnorm_backward). The equations, with
v_o the row of input weights of output unit o, are in the ops' contract,
tinynet/ops/weightnorm/__init__.py. The state_dict keys are torch's: "bias",
"parametrizations.weight.original0" (g) and "parametrizations.weight.original1"
(v), so a torch module with a weight-norm parametrization loads into tinynet
and back.

Data-dependent initialization (the paper's section 3): ``init_from_data(x)``
sets g and b so that every output unit has mean 0 and standard deviation 1 on
the batch x.

MeanOnlyBatchNorm is the paper's companion (section 2.2): it subtracts each
channel's batch mean and adds a bias, without dividing by the std,

    forward:   y = x - mean_B + beta            (eval: x - running_mean + beta)
    backward:  dx = dy - mean_B(dy),  dbeta = sum dy   (eval: dx = dy)

with the means over (N, H, W) per channel; running_mean follows BatchNorm's
momentum rule. It runs on the backend's norm_stats and norm_forward with
rstd = 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import init
from ..parameter import Array, Parameter
from .base import Layer, layer_to_config
from .conv import Conv2D
from .dense import Dense

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["WeightNorm", "MeanOnlyBatchNorm"]

_G_KEY = "parametrizations.weight.original0"
_V_KEY = "parametrizations.weight.original1"


class _Wrapped:
    """The arithmetic of a wrapped Dense or Conv2D, with the weight passed in.

    It keeps the wrapped layer's configuration (never the layer itself, so
    that copies of the wrapper share no state with the layer it was built
    from) and checks inputs as that layer does.
    """

    def __init__(self, wrapper: str, layer: Layer) -> None:
        if isinstance(layer, Dense):
            self.kind = "dense"
            self.in_dim, self.out_dim = layer.in_features, layer.out_features
        elif isinstance(layer, Conv2D):
            self.kind = "conv"
            self.in_dim, self.out_dim = layer.in_channels, layer.out_channels
            self.kernel_size, self.stride, self.padding = (layer.kernel_size, layer.stride,
                                                           layer.padding)
            self.groups = layer.groups
        else:
            raise TypeError(f"{wrapper}: layer must be a tn.Dense or tn.Conv2D, "
                            f"got {type(layer).__name__}")
        self.wrapper = wrapper
        self.layer_repr = repr(layer)
        self.layer_config = layer_to_config(layer)  # rebuilds a layer of the same shape

    def check(self, layer: Layer, x: Array) -> Array:
        if self.kind == "dense":
            what = f"(N, in_features) = (N, {self.in_dim})"
            x = layer._check_input(x, (2,), what)
        else:
            what = f"(N, in_channels, H, W) = (N, {self.in_dim}, H, W)"
            x = layer._check_input(x, (4,), what)
            (kh, kw), (ph, pw) = self.kernel_size, self.padding
            if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
                raise ValueError(f"{self.wrapper}: input of spatial size {x.shape[2:]} padded "
                                 f"by {self.padding} is smaller than the kernel {self.kernel_size}")
        if x.shape[1] != self.in_dim:
            raise ValueError(f"{self.wrapper}: input must have shape {what}, got shape {x.shape}")
        return x

    def forward(self, ops: Any, x: Array, W: Array, b: Array | None) -> tuple[Array, Any]:
        """(y, cache) of the wrapped layer with weight W and bias b (or None)."""
        if self.kind == "dense":
            return ops.dense_forward(x, W, b), None
        return ops.conv2d_forward(x, W, b, self.stride, self.padding, self.groups)

    def backward(self, ops: Any, dy: Array, x: Array, W: Array, cache: Any, has_bias: bool,
                 need_dx: bool) -> tuple[Array | None, Array, Array | None]:
        """(dx | None, dW, db | None) of the wrapped layer."""
        if self.kind == "dense":
            return ops.dense_backward(x, W, dy, has_bias, need_dx)
        return ops.conv2d_backward(dy, x, W, cache, self.stride, self.padding, has_bias, need_dx,
                                    self.groups)


class WeightNorm(Layer):
    """Weight normalization of a Dense or Conv2D: w = g * v / ||v|| per output unit.

    Parameters
    ----------
    layer : Dense or Conv2D
        The layer to reparametrize. v starts as a copy of its weight and g as
        the norm of each output unit's row, so the wrapper computes the same
        function as ``layer`` at creation. Its bias Parameter is shared.

    Attributes
    ----------
    weight_g : Parameter
        g, shape (O, 1) for Dense, (O, 1, 1, 1) for Conv2D. state_dict key
        "parametrizations.weight.original0".
    weight_v : Parameter
        v, the wrapped weight's shape, (O, I) or (O, C, KH, KW). state_dict key
        "parametrizations.weight.original1".
    bias : Parameter or None
        The wrapped layer's bias, (O,).

    Shapes
    ------
    As the wrapped layer: (N, I) -> (N, O) or (N, C, H, W) -> (N, O, OH, OW).
    """

    # state_dict order as torch's: the module's own bias, then the parametrization.
    param_names = ("bias", _G_KEY, _V_KEY)
    _aliases = {_G_KEY: "weight_g", _V_KEY: "weight_v"}

    def __init__(self, layer: Dense | Conv2D) -> None:
        super().__init__()
        self._op = _Wrapped("WeightNorm", layer)
        v = layer.weight.data
        norm = np.sqrt(np.sum(v.astype(np.float64).reshape(v.shape[0], -1) ** 2, axis=1))
        self.weight_v = Parameter(v.copy(), name="weight_v")
        self.weight_g = Parameter(norm.reshape((v.shape[0],) + (1,) * (v.ndim - 1)).astype(v.dtype),
                                  name="weight_g")
        self.bias = layer.bias

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: torch's state_dict names of g and v.
        aliases = type(self)._aliases
        if name in aliases:
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def compute_weight(self) -> Array:
        """The effective weight w = g * v / ||v||, the wrapped weight's shape."""
        return self.ops.weightnorm_forward(self.weight_v.data, self.weight_g.data)[0]

    def forward(self, x: Array) -> Array:
        """The wrapped layer's forward with w = g * v / ||v||."""
        x = self._op.check(self, x)
        w, vnorm = self.ops.weightnorm_forward(self.weight_v.data, self.weight_g.data)
        b = None if self.bias is None else self.bias.data
        y, cache = self._op.forward(self.ops, x, w, b)
        self._cache = (x, w, vnorm, cache, y.shape)
        return y

    def backward(self, dy: Array) -> Array | None:
        """Add dg, dv (and db) into the gradients; return dx, or None.

        dx is None when ``requires_input_grad`` is False.
        """
        dy = self._check_dy(dy, self._cache[4] if self._cache else None)
        x, w, vnorm, cache, _ = self._cache
        dx, dw, db = self._op.backward(self.ops, dy, x, w, cache, self.bias is not None,
                                       self.requires_input_grad)
        dv, dg = self.ops.weightnorm_backward(self.weight_v.data, self.weight_g.data, vnorm, dw)
        self.weight_v.grad += dv
        self.weight_g.grad += dg
        if db is not None and self.bias is not None:
            self.bias.grad += db
        return dx

    def init_from_data(self, x: Array, init_scale: float = 1.0) -> Self:
        """Data-dependent initialization (Salimans and Kingma 2016, section 3).

        With t = v . x / ||v|| the pre-activation of each output unit before
        g and b, and mu[t], sigma[t] its mean and (biased) standard deviation
        over the batch (and the spatial positions of a Conv2D), set

            g = init_scale / sigma[t],   b = -mu[t] * init_scale / sigma[t]

        so that y = g t + b has mean 0 and standard deviation ``init_scale``
        per unit on x. The layer must have a bias.

        Parameters
        ----------
        x : np.ndarray
            A batch of inputs, (N, I) or (N, C, H, W).
        init_scale : float
            The standard deviation of every output unit after the init.

        Returns
        -------
        WeightNorm
            self.
        """
        if self.bias is None:
            raise ValueError("WeightNorm.init_from_data: the wrapped layer needs a bias")
        x = self._op.check(self, x)
        v = self.weight_v.data
        ones = np.ones_like(self.weight_g.data)
        w, _ = self.ops.weightnorm_forward(v, ones)
        t, _ = self._op.forward(self.ops, x, w, None)
        axes = (0,) if t.ndim == 2 else (0, 2, 3)
        t64 = t.astype(np.float64)
        mu, sigma = t64.mean(axis=axes), t64.std(axis=axes)
        scale = init_scale / np.maximum(sigma, 1e-12)
        self.weight_g.data[...] = scale.reshape(self.weight_g.shape)
        self.bias.data[...] = -mu * scale
        self._cache = None
        return self

    def get_config(self) -> dict[str, Any]:
        """``{"layer": the config of the Dense or Conv2D it wraps}`` (a layer of that shape)."""
        return {"layer": self._op.layer_config}

    def extra_repr(self) -> str:
        return self._op.layer_repr


class MeanOnlyBatchNorm(Layer):
    """Mean-only batch normalization (Salimans and Kingma 2016, section 2.2).

    Input (N, C) or (N, C, H, W); output the same shape.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    momentum : float
        Weight of the new batch in ``running_mean``, in [0, 1].

    Attributes
    ----------
    bias : Parameter
        beta, (C,), zeros.
    running_mean : np.ndarray
        (C,), zeros at creation.
    num_batches_tracked : np.ndarray
        0-d int64.
    """

    param_names = ("bias",)
    buffer_names = ("running_mean", "num_batches_tracked")

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"MeanOnlyBatchNorm: num_features must be a positive int, "
                             f"got {num_features!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"MeanOnlyBatchNorm: momentum must be in [0, 1], got {momentum!r}")
        self.num_features = num_features
        self.momentum = float(momentum)
        self.bias = Parameter(init.zeros((num_features,)), "bias")
        self.running_mean = init.zeros((num_features,))
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    def forward(self, x: Array) -> Array:
        """y = x - mean + beta, the batch mean in training, the running mean in eval."""
        x = self._check_input(x, (2, 4), "(N, C) or (N, C, H, W)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"MeanOnlyBatchNorm: input must have C={self.num_features} "
                             f"channels, got shape {x.shape}")
        xv = x.reshape(x.shape[0], x.shape[1], -1)
        ones = self.ops.asarray(np.ones(self.num_features))
        if self.training:
            mean = self.ops.norm_stats(xv, 1, True, 1.0)[0]
            m = self.momentum
            self.running_mean[...] = (1.0 - m) * self.running_mean + m * mean
            self.num_batches_tracked += 1
        else:
            mean = self.running_mean.astype(np.float64)
        y = self.ops.norm_forward(xv, mean, ones, None, self.bias.data, 1, True)
        self._cache = (x.shape, self.training)
        return y.reshape(x.shape)

    def backward(self, dy: Array) -> Array | None:
        """dx = dy - mean(dy) per channel in training (dy in eval); dbeta = sum dy."""
        dy = self._check_dy(dy, self._cache[0] if self._cache else None)
        shape, training = self._cache
        dyv = dy.reshape(shape[0], shape[1], -1)
        mean_dy = self.ops.norm_stats(dyv, 1, True, 1.0)[0]
        self.bias.grad += (mean_dy * (dyv.shape[0] * dyv.shape[2])).astype(dy.dtype)
        if not self.requires_input_grad:
            return None
        if not training:
            return dy.copy()
        ones = self.ops.asarray(np.ones(self.num_features))
        return self.ops.norm_forward(dyv, mean_dy, ones, None, None, 1, True).reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"
