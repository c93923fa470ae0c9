"""Normalization layers: BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

The four normalize every set of values of x by its own mean and variance,
then scale by gamma (``weight``) and shift by beta (``bias``); they differ
only in the set: BatchNorm normalizes each channel over (N, H, W),
LayerNorm each sample over its last dims, InstanceNorm each (sample,
channel) over (H, W), and GroupNorm each (sample, group of C/G channels)
over (C/G, H, W). The forward and backward equations and the papers are in
the op family's contract, tinynet/ops/norm/__init__.py.

Each layer reshapes its input to an (N, C, L) view, picks the layout
(``groups``, ``per_channel``) and calls the backend's ops:
``norm_forward_train`` (the input's statistics and y in one call) in every
forward except BatchNorm's in eval mode, which calls ``norm_forward`` with
the running statistics; then ``norm_backward``.
"""
from __future__ import annotations

import math
import numbers
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from .. import init
from ..parameter import Array, Parameter
from .base import Layer

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "recompute_batchnorm_stats"]


def _check_positive_int(layer: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_eps(layer: str, eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number, got {eps!r}")
    return float(eps)


class _Norm(Layer):
    """The shared forward/backward of the four normalizations.

    A subclass defines ``_view(x) -> (x (N, C, L), groups)`` and sets
    ``per_channel``; BatchNorm also overrides ``_running_stats`` and
    ``_record_batch_stats``.
    """

    param_names = ("weight", "bias")
    per_channel = False
    eps: float
    weight: Parameter | None
    bias: Parameter | None

    def _view(self, x: Array) -> tuple[Array, int]:
        """(x as an (N, C, L) view, groups), after checking x (subclasses)."""
        raise NotImplementedError

    def _affine_params(self, shape: tuple[int, ...], affine: bool = True,
                       bias: bool = True) -> None:
        """Create weight (gamma, ones) and bias (beta, zeros) of ``shape``, or None."""
        self.weight = Parameter(init.ones(shape), "weight") if affine else None
        self.bias = Parameter(init.zeros(shape), "bias") if affine and bias else None

    def _gamma_beta(self) -> tuple[Array | None, Array | None]:
        """gamma and beta flattened to (C,); None for the ones the layer does not have."""
        gamma = None if self.weight is None else self.weight.data.reshape(-1)
        beta = None if self.bias is None else self.bias.data.reshape(-1)
        return gamma, beta

    def _running_stats(self) -> tuple[Array, Array] | None:
        """(mean, rstd) to normalize with instead of the input's own statistics, or None."""
        return None

    def _record_batch_stats(self, x: Array, mean: Array, var: Array) -> None:
        """Called with the statistics of the (N, C, L) view after each forward that used them."""

    def _check_channels(self, x: Array, expected: int, what: str) -> None:
        if x.shape[1] != expected:
            raise ValueError(f"{self.name}: input must have shape {what} with C={expected}, "
                             f"got shape {x.shape}")

    def forward(self, x: Array) -> Array:
        xv, groups = self._view(x)
        gamma, beta = self._gamma_beta()
        running = self._running_stats()
        if running is None:
            # The input's own statistics, computed with y in one op.
            y, mean, var, rstd = self.ops.norm_forward_train(xv, gamma, beta, groups,
                                                             self.per_channel, self.eps)
            self._record_batch_stats(xv, mean, var)
        else:
            # Constant statistics (BatchNorm in eval mode).
            mean, rstd = running
            y = self.ops.norm_forward(xv, mean, rstd, gamma, beta, groups, self.per_channel)
        self._cache = (x.shape, xv, mean, rstd, groups, running is not None)
        return y.reshape(x.shape)

    def backward(self, dy: Array) -> Array | None:
        x_shape = self._cache[0] if self._cache is not None else ()
        dy = self._check_dy(dy, x_shape)
        _, xv, mean, rstd, groups, fixed_stats = self._cache
        gamma, _ = self._gamma_beta()
        dx, dgamma, dbeta = self.ops.norm_backward(xv, dy.reshape(xv.shape), mean, rstd, gamma,
                                                   groups, self.per_channel, fixed_stats,
                                                   need_dx=self.requires_input_grad)
        if self.weight is not None:
            self.weight.grad += dgamma.reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += dbeta.reshape(self.bias.shape)
        if not self.requires_input_grad:
            return None
        return dx.reshape(x_shape)


def _check_momentum(layer: str, momentum: float | None) -> float | None:
    """``momentum`` as a float in [0, 1], or None (torch's cumulative average)."""
    if momentum is None:
        return None
    if (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
            or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"{layer}: momentum must be a number in [0, 1] or None, "
                         f"got {momentum!r}")
    return float(momentum)


class _RunningStats:
    """The running-statistics buffers shared by BatchNorm and InstanceNorm."""

    num_features: int
    track_running_stats: bool
    # Arrays with track_running_stats ("tracking"), None without.
    running_mean: Array | None
    running_var: Array | None
    num_batches_tracked: NDArray[np.int64] | None

    def _init_running(self, track_running_stats: bool) -> None:
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            self.running_mean = init.zeros((self.num_features,))
            self.running_var = init.ones((self.num_features,))
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _blend(self, factor: float, mean: Array, var_unbiased: Array) -> None:
        """running = (1 - factor) * running + factor * batch, in place."""
        assert self.running_mean is not None and self.running_var is not None  # tracking
        self.running_mean[...] = (1.0 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1.0 - factor) * self.running_var + factor * var_unbiased


class BatchNorm(_RunningStats, _Norm):
    """Batch normalization over (N,) or (N, H, W) for each channel, as torch BatchNorm1d/2d.

    Training normalizes each channel by the batch mean and BIASED batch
    variance of its N*H*W values (the contract's per-channel sets,
    ``tinynet/ops/norm/__init__.py``); then

        running_mean = (1 - momentum) * running_mean + momentum * mean_B
        running_var  = (1 - momentum) * running_var  + momentum * var_B * n / (n - 1)

    (the UNBIASED variance, n = N*H*W values per channel) and
    num_batches_tracked += 1. With ``momentum=None`` the running statistics
    are the cumulative average of all batches, momentum = 1 /
    num_batches_tracked. Eval: the running statistics replace the batch ones,
    so the output of one sample does not depend on the others; with
    ``track_running_stats=False`` there are none, and eval normalizes with
    the batch statistics as training does.

    Input (N, C) or (N, C, H, W); output the same shape.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float
        Added to the variance inside the square root.
    momentum : float or None
        Weight of the new batch in the running statistics, in [0, 1]; None
        for the cumulative moving average.
    affine : bool
        Learn gamma and beta (default True); False leaves both None.
    track_running_stats : bool
        Keep running statistics (default True). False: no buffers (none in
        the state_dict either, as torch) and batch statistics in eval too.

    Attributes
    ----------
    weight, bias : Parameter or None
        gamma (ones) and beta (zeros), shape (C,).
    running_mean, running_var : np.ndarray or None
        (C,), zeros and ones at creation, the parameters' dtype.
    num_batches_tracked : np.ndarray or None
        0-d int64, the number of training batches seen.
    """

    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    per_channel = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = _check_positive_int(self.name, "num_features", num_features)
        self.eps = _check_eps(self.name, eps)
        self.momentum = _check_momentum(self.name, momentum)
        self.affine = bool(affine)
        self._affine_params((self.num_features,), self.affine)
        self._init_running(track_running_stats)

    def _view(self, x: Array) -> tuple[Array, int]:
        what = "(N, C) or (N, C, H, W)"
        x = self._check_input(x, (2, 4), what)
        self._check_channels(x, self.num_features, what)
        N, C = x.shape[:2]
        xv = x.reshape(N, C, math.prod(x.shape[2:]))  # explicit: -1 fails when N == 0
        if self.training and N * xv.shape[2] < 2:
            raise ValueError(f"{self.name}: expected more than 1 value per channel when "
                             f"training, got input of {N} x {xv.shape[2]} values "
                             f"per channel")
        return xv, 1

    def _running_stats(self) -> tuple[Array, Array] | None:
        if self.training or not self.track_running_stats:
            return None
        assert self.running_mean is not None and self.running_var is not None  # tracking
        # Eval: the running statistics are constants.
        xp = self.ops.array_module()
        mean = self.running_mean.astype(np.float64)
        rstd = 1.0 / xp.sqrt(self.running_var.astype(np.float64) + self.eps)
        return mean, rstd

    def _record_batch_stats(self, x: Array, mean: Array, var: Array) -> None:
        if not (self.training and self.track_running_stats):
            return
        assert self.num_batches_tracked is not None  # tracking
        n = x.shape[0] * x.shape[2]
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self._blend(m, mean, var * (n / (n - 1)))

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        return s


class LayerNorm(_Norm):
    """Layer normalization over the last dims of each sample, as torch.nn.LayerNorm.

    Each sample is one set, normalized by the mean and biased variance over
    its trailing ``normalized_shape`` dims (the contract's sets with one group
    on an (N', M, 1) view, ``tinynet/ops/norm/__init__.py``), with an elementwise
    weight and bias of that shape. Same in train and eval.

    Input (*, *normalized_shape); output the same shape.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing dims to normalize over, e.g. ``C`` for (N, C) or
        ``(C, H, W)`` for (N, C, H, W).
    eps : float
        Added to the variance inside the square root.
    elementwise_affine : bool
        Learn the weight and bias (default True); False leaves both None.
    bias : bool
        With ``elementwise_affine``, learn the bias too (default True);
        False keeps the weight only, as torch's ``bias=False``.

    Attributes
    ----------
    weight, bias : Parameter or None
        gamma (ones) and beta (zeros), shape ``normalized_shape``.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        normalized_shape = tuple(normalized_shape)
        if not normalized_shape:
            raise ValueError(f"{self.name}: normalized_shape must not be empty")
        for d in normalized_shape:
            _check_positive_int(self.name, "every dim of normalized_shape", d)
        self.normalized_shape = tuple(int(d) for d in normalized_shape)
        self.eps = _check_eps(self.name, eps)
        self.elementwise_affine = bool(elementwise_affine)
        self._affine_params(self.normalized_shape, self.elementwise_affine, bool(bias))

    def _view(self, x: Array) -> tuple[Array, int]:
        k = len(self.normalized_shape)
        what = "(*, " + ", ".join(str(d) for d in self.normalized_shape) + ")"
        x = self._check_input(x, range(k, 33), what)
        if x.shape[x.ndim - k:] != self.normalized_shape:
            raise ValueError(f"{self.name}: input must have shape {what} "
                             f"(normalized_shape={self.normalized_shape}), got shape {x.shape}")
        M = math.prod(self.normalized_shape)
        # Every sample is one set: the (N', M, 1) view with one group.
        return x.reshape(-1, M, 1), 1

    def extra_repr(self) -> str:
        s = f"{self.normalized_shape}, eps={self.eps}"
        if not self.elementwise_affine:
            s += ", elementwise_affine=False"
        elif self.bias is None:
            s += ", bias=False"
        return s


class InstanceNorm(_RunningStats, _Norm):
    """Instance normalization over (H, W) for each sample and channel,
    as torch InstanceNorm2d(affine=True).

    Each (n, c) plane is one set, normalized by its mean and biased variance
    (the contract's sets with one group per channel,
    ``tinynet/ops/norm/__init__.py``). Without running statistics (the default)
    it is the same in train and eval. With ``track_running_stats=True``, as
    torch, each training forward also updates

        running_mean = (1 - momentum) * running_mean + momentum * mean_n(mean_nc)
        running_var  = (1 - momentum) * running_var  + momentum * mean_n(var_nc * L / (L - 1))

    (L = H*W; the unbiased variance of each plane, averaged over the batch)
    and eval normalizes every plane with the running statistics of its
    channel. As torch, ``momentum=None`` then means no update at all, and
    num_batches_tracked stays 0.

    Input (N, C, H, W) with H*W > 1; output the same shape.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float
        Added to the variance inside the square root.
    affine : bool
        Learn a per-channel weight and bias; False leaves both None.
    track_running_stats : bool
        Keep running statistics and use them in eval (default False).
    momentum : float or None
        Weight of the new batch in the running statistics, in [0, 1].

    Attributes
    ----------
    weight, bias : Parameter or None
        gamma (ones) and beta (zeros), shape (C,).
    running_mean, running_var, num_batches_tracked : np.ndarray or None
        As BatchNorm's, with ``track_running_stats=True``; else None.
    """

    buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                 track_running_stats: bool = False, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features = _check_positive_int(self.name, "num_features", num_features)
        self.eps = _check_eps(self.name, eps)
        self.affine = bool(affine)
        self.momentum = _check_momentum(self.name, momentum)
        self._affine_params((self.num_features,), self.affine)
        self._init_running(track_running_stats)

    def _view(self, x: Array) -> tuple[Array, int]:
        what = "(N, C, H, W)"
        x = self._check_input(x, (4,), what)
        self._check_channels(x, self.num_features, what)
        N, C, H, W = x.shape
        if H * W < 2:
            raise ValueError(f"{self.name}: expected more than 1 spatial element, "
                             f"got input shape {x.shape}")
        # One group per channel: every (n, c) plane is a set.
        self._batch = N
        return x.reshape(N, C, H * W), C

    def _running_stats(self) -> tuple[Array, Array] | None:
        if self.training or not self.track_running_stats:
            return None
        assert self.running_mean is not None and self.running_var is not None  # tracking
        # Eval: every (n, c) plane uses channel c's running statistics.
        mean = np.tile(self.running_mean.astype(np.float64), self._batch)
        rstd = np.tile(1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps), self._batch)
        return mean, rstd

    def _record_batch_stats(self, x: Array, mean: Array, var: Array) -> None:
        if not (self.training and self.track_running_stats) or self.momentum is None:
            return
        N, C, L = x.shape
        self._blend(self.momentum, mean.reshape(N, C).mean(axis=0),
                    (var * (L / (L - 1))).reshape(N, C).mean(axis=0))

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, affine={self.affine}"
        if self.track_running_stats:
            s += f", track_running_stats=True, momentum={self.momentum}"
        return s


class GroupNorm(_Norm):
    """Group normalization over (C/G, *spatial) for each sample and group,
    as torch.nn.GroupNorm.

    The C channels are split into ``num_groups`` groups of consecutive
    channels; each (n, group) is one set, normalized by its mean and biased
    variance (the contract's grouped sets, ``tinynet/ops/norm/__init__.py``),
    with a per-channel weight and bias. Same in train and eval.

    Input (N, C, *spatial), e.g. (N, C, H, W); output the same shape.

    Parameters
    ----------
    num_groups : int
        G; it must divide ``num_channels``.
    num_channels : int
        C, the number of channels.
    eps : float
        Added to the variance inside the square root.
    affine : bool
        Learn a per-channel weight and bias (default True); False leaves both None.

    Attributes
    ----------
    weight, bias : Parameter or None
        gamma (ones) and beta (zeros), shape (C,).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True) -> None:
        super().__init__()
        self.num_groups = _check_positive_int(self.name, "num_groups", num_groups)
        self.num_channels = _check_positive_int(self.name, "num_channels", num_channels)
        if self.num_channels % self.num_groups != 0:
            raise ValueError(f"{self.name}: num_groups={self.num_groups} must divide "
                             f"num_channels={self.num_channels}")
        self.eps = _check_eps(self.name, eps)
        self.affine = bool(affine)
        self._affine_params((self.num_channels,), self.affine)

    def _view(self, x: Array) -> tuple[Array, int]:
        what = "(N, C, *spatial)"
        x = self._check_input(x, range(2, 33), what)
        self._check_channels(x, self.num_channels, what)
        N, C = x.shape[:2]
        return x.reshape(N, C, math.prod(x.shape[2:])), self.num_groups

    def extra_repr(self) -> str:
        s = f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
        return s if self.affine else s + ", affine=False"


_L = TypeVar("_L", bound=Layer)


def _leaves(layer: Layer) -> list[Layer]:
    """The non-container layers of ``layer``, in forward order."""
    subs = getattr(layer, "layers", None)
    if subs is None:
        return [layer]
    return [leaf for sub in subs for leaf in _leaves(sub)]


def recompute_batchnorm_stats(model: _L, x: Array, batch_size: int = 256) -> _L:
    """Set every BatchNorm's running statistics to the exact ones over a data set.

    The textbook inference network (Ioffe and Szegedy 2015, Algorithm 2,
    https://arxiv.org/abs/1502.03167): each BatchNorm's running_mean and
    running_var become the mean and the UNBIASED variance of its input over
    all of ``x`` (all N*H*W values per channel), computed with the layers
    before it in eval mode and the BatchNorms before it already set. The
    BatchNorms are done in forward order, one pass over ``x`` each; the
    statistics of the batches are merged with Chan's formula in float64.

    Each batch of ``x`` goes to the active backend's device (``asarray``:
    a copy to the GPU for a model on the cuda backend), and the statistics
    are computed and merged there; the running statistics stay where the
    model keeps them.

    Parameters
    ----------
    model : Sequential
        A chain of layers (nested Sequentials are followed) on the active
        backend's device. BatchNorms without running statistics are skipped.
    x : array
        The data set, (N, ...) with the model's input shape: a host array
        (sliced into batches of ``batch_size`` samples, each uploaded) or an
        array on the model's device.
    batch_size : int
        Samples per forward pass. The result does not depend on it, unless
        a layer before a BatchNorm uses batch statistics in eval mode (a
        BatchNorm with ``track_running_stats=False``).

    Returns
    -------
    model
        The model, in eval mode, with the new statistics. num_batches_tracked
        is left as it was.
    """
    from ..backends import check_device
    batch_size = _check_positive_int("recompute_batchnorm_stats", "batch_size", batch_size)
    if len(x) < 2:
        raise ValueError(f"recompute_batchnorm_stats: x must hold at least 2 samples, "
                         f"got shape {np.shape(x)}")
    model.eval()
    leaves = _leaves(model)
    for k, bn in enumerate(leaves):
        if not isinstance(bn, BatchNorm) or not bn.track_running_stats:
            continue
        assert bn.running_mean is not None and bn.running_var is not None  # tracking
        ops = bn.ops
        check_device("recompute_batchnorm_stats", "a BatchNorm's running statistics",
                     bn.running_mean, ops, parameter=True)
        count, mean, m2 = 0, 0.0, 0.0
        for start in range(0, len(x), batch_size):
            # One batch, C-contiguous on the backend's device (uploaded from the host).
            h = ops.asarray(x[start:start + batch_size])
            for layer in leaves[:k]:
                h = layer.forward(h)
                layer._cache = None
            # (N, C, L): the BatchNorm's sets are the channels.
            hv = ops.asarray(h).reshape(h.shape[0], h.shape[1], -1)
            n_b = hv.shape[0] * hv.shape[2]
            mean_b, var_b, _ = ops.norm_stats(hv, 1, True, bn.eps)
            # Chan's merge of (count, mean, M2) with the batch's, float64 (C,) on the device.
            delta = mean_b - mean
            total = count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + var_b * n_b + delta * delta * (count * n_b / total)
            count = total
        bn.running_mean[...] = mean
        bn.running_var[...] = m2 / (count - 1)
    return model
