"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineWarmup, OneCycleLR).

An optimizer holds a list of ``tn.Parameter``. ``step()`` updates every
parameter's ``data`` in place from its ``grad``, through the backend's
``sgd_step`` / ``adam_step``; ``zero_grad()`` clears the grads. The update
rules are torch.optim's (SGD with dampening = 0; Adam, Kingma and Ba,
https://arxiv.org/abs/1412.6980; AdamW, Loshchilov and Hutter,
https://arxiv.org/abs/1711.05101), so a run carries over step for step; the
equations are stated once, in the ops' contract, ``tinynet/ops/optim/__init__.py``.
The step t = 1, 2, ... of Adam's bias corrections is ``step_count`` after the
step.

Schedules set ``optimizer.lr`` from a base lr (the optimizer's lr when the
schedule is made) and the number n of ``schedule.step()`` calls so far:

StepLR (as torch.optim.lr_scheduler.StepLR)
    lr(n) = base_lr * gamma ** floor(n / step_size)

CosineWarmup (W = warmup_steps, T = total_steps; cosine from SGDR, Loshchilov
and Hutter, https://arxiv.org/abs/1608.03983, without restarts)
    lr(n) = base_lr * (n + 1) / W                                  for n < W
    lr(n) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (n - W) / (T - W))) / 2
                                                                   for W <= n <= T
    lr(n) = min_lr                                                 for n > T

OneCycleLR (as torch.optim.lr_scheduler.OneCycleLR with cycle_momentum=False;
Smith and Topin, https://arxiv.org/abs/1708.07120; T = total_steps,
lr0 = max_lr / div_factor, lr_min = lr0 / final_div_factor, e1 = pct_start * T - 1,
e2 = T - 1, and anneal(a, b, t) = b + (a - b) * (1 + cos(pi t)) / 2, or
a + (b - a) * t for anneal_strategy="linear"):
    lr(n) = anneal(lr0, max_lr, n / e1)                            for n <= e1
    lr(n) = anneal(max_lr, lr_min, (n - e1) / (e2 - e1))           for e1 < n <= T
    a step past T raises ValueError

State dicts are flat: str -> np.ndarray (0-d arrays for scalars), so they go
into an .npz and come back with ``np.load(..., allow_pickle=False)``.
Per-parameter state is keyed by the parameter's position: "0.momentum_buffer",
"0.exp_avg", "0.exp_avg_sq"; "step" counts the optimizer's steps and "lr" is
the current learning rate.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .backends import array_module_of, check_device, get_backend, move, to_host
from .parameter import Array, Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineWarmup", "OneCycleLR"]


def _real(owner: str, arg: str, value: object) -> float:
    """``value`` as a float; TypeError when it is not a real number."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {arg} must be a real number, got {type(value).__name__}")
    return float(value)


def _nonnegative(owner: str, arg: str, value: object) -> float:
    """``value`` as a float, checked to be >= 0 (NaN fails)."""
    value = _real(owner, arg, value)
    if not value >= 0:
        raise ValueError(f"{owner}: {arg} must be >= 0, got {value}")
    return value


def _check_state(owner: str, expected: Mapping[str, NDArray[Any]],
                 state: Mapping[str, Any]) -> None:
    """Check ``state`` against the dict ``expected`` (same keys, same shapes).

    Raises KeyError for the first missing key, ValueError for the first key
    with a wrong shape, then KeyError for the first unexpected key.
    """
    for key, current in expected.items():
        if key not in state:
            raise KeyError(f"{owner}.load_state_dict: missing key {key!r}")
        value = np.asarray(state[key])
        if value.shape != current.shape:
            raise ValueError(f"{owner}.load_state_dict: key {key!r} has shape "
                             f"{value.shape}, expected {current.shape}")
    for key in state:
        if key not in expected:
            raise KeyError(f"{owner}.load_state_dict: unexpected key {key!r}")


def _count(owner: str, key: str, value: object) -> int:
    """A 0-d integer array holding a count >= 0, as an int."""
    value = np.asarray(value)
    if value.dtype.kind not in "iu" or value < 0:
        raise ValueError(f"{owner}.load_state_dict: key {key!r} must be an integer "
                         f">= 0, got {value!r}")
    return int(value)


class Optimizer:
    """Base class: the parameters, the learning rate, the step count and the
    per-parameter state arrays.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update, e.g. ``model.parameters()``.
    lr : float
        Learning rate, >= 0. Schedules change the ``lr`` attribute.
    state_names : tuple of str
        Names of the per-parameter state arrays, each created as zeros with
        the parameter's shape and dtype.

    Attributes
    ----------
    params : list of Parameter
    lr : float
    step_count : int
        Number of ``step()`` calls so far (Adam's t after the step).
    state : list of dict
        ``state[i][name]`` is parameter i's state array ``name``.
    """

    def __init__(self, params: Iterable[Parameter], lr: float,
                 state_names: tuple[str, ...] = ()) -> None:
        name = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{name}: params must be an iterable of tinynet.Parameter, "
                            f"got a single Parameter; pass [param]")
        params = list(params)
        if not params:
            raise ValueError(f"{name}: params is empty")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: params[{i}] must be a tinynet.Parameter, "
                                f"got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: params lists a parameter more than once")
        self.params = params
        self.lr = _nonnegative(name, "lr", lr)
        self.step_count = 0
        self.state: list[dict[str, Array]] = [
            {s: array_module_of(p.data).zeros_like(p.data) for s in state_names} for p in params]

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to zeros, in place."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its ``grad``."""
        name = type(self).__name__
        backend = get_backend()
        for i, p in enumerate(self.params):
            if p.grad.shape != p.data.shape:
                raise ValueError(f"{name}.step: params[{i}] has grad of shape "
                                 f"{p.grad.shape}, expected {p.data.shape}")
            check_device(f"{name}.step", f"params[{i}]", p.data, backend, parameter=True)
            # A model cast with .to(dtype) or moved with .to(device) after the
            # optimizer was made: the state follows the parameter.
            for s, array in self.state[i].items():
                if array.dtype != p.data.dtype:
                    array = array.astype(p.data.dtype)
                self.state[i][s] = move(array, p.device)
        self.step_count += 1
        for p, state in zip(self.params, self.state):
            self._update(backend, p, state)

    def _update(self, backend: Any, p: Parameter, state: dict[str, Array]) -> None:
        """Apply this optimizer's rule to one parameter (subclasses)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """The optimizer's state as a flat dict of str -> np.ndarray (host copies).

        Keys: "step" (int64, 0-d), "lr" (float64, 0-d) and "<i>.<name>" for
        each state array of parameter i, e.g. "0.exp_avg". The other
        hyperparameters are the constructor's and are not saved.
        """
        sd = {"step": np.array(self.step_count, dtype=np.int64),
              "lr": np.array(self.lr, dtype=np.float64)}
        for i, state in enumerate(self.state):
            for s, array in state.items():
                sd[f"{i}.{s}"] = np.array(to_host(array))
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a dict made by ``state_dict()`` (e.g. read back from an .npz).

        Every key and shape is checked first; the error names the first wrong
        key (KeyError for a missing or unexpected key, ValueError for a wrong
        shape or value), and nothing is changed then.
        """
        name = type(self).__name__
        _check_state(name, self.state_dict(), state)
        step_count = _count(name, "step", state["step"])
        lr = _nonnegative(f"{name}.load_state_dict", "lr", float(np.asarray(state["lr"])))
        for i, (p, arrays) in enumerate(zip(self.params, self.state)):
            for s in arrays:
                arrays[s] = move(np.array(state[f"{i}.{s}"], dtype=p.data.dtype, order="C"),
                                 p.device)
        self.step_count = step_count
        self.lr = lr

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return f"lr={self.lr}"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum
    and L2 weight decay, as torch.optim.SGD (dampening = 0).

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update.
    lr : float
        Learning rate, >= 0.
    momentum : float, default 0.0
        Momentum factor, >= 0. With momentum > 0 each parameter has a
        "momentum_buffer" of its shape.
    weight_decay : float, default 0.0
        L2 penalty, >= 0: g = grad + weight_decay * param.
    nesterov : bool, default False
        Nesterov momentum; needs momentum > 0.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        momentum = _nonnegative("SGD", "momentum", momentum)
        weight_decay = _nonnegative("SGD", "weight_decay", weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True requires momentum > 0, got momentum=0.0")
        super().__init__(params, lr, ("momentum_buffer",) if momentum > 0 else ())
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = bool(nesterov)

    def _update(self, backend: Any, p: Parameter, state: dict[str, Array]) -> None:
        backend.sgd_step(p.data, p.grad, state.get("momentum_buffer"), self.lr,
                         self.momentum, self.weight_decay, self.nesterov)

    def extra_repr(self) -> str:
        return (f"lr={self.lr}, momentum={self.momentum}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov}")


class Adam(Optimizer):
    """Adam with L2 weight decay, as torch.optim.Adam (amsgrad off).

    Each parameter has an "exp_avg" (m) and an "exp_avg_sq" (v) of its shape.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to update.
    lr : float, default 1e-3
        Learning rate, >= 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of m and v, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, >= 0.
    weight_decay : float, default 0.0
        L2 penalty, >= 0: g = grad + weight_decay * param.
    """

    decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for k, beta in enumerate(betas):
            beta = _real(name, f"betas[{k}]", beta)
            if not 0 <= beta < 1:
                raise ValueError(f"{name}: betas[{k}] must be in [0, 1), got {beta}")
        eps = _nonnegative(name, "eps", eps)
        weight_decay = _nonnegative(name, "weight_decay", weight_decay)
        super().__init__(params, lr, ("exp_avg", "exp_avg_sq"))
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = eps
        self.weight_decay = weight_decay

    def _update(self, backend: Any, p: Parameter, state: dict[str, Array]) -> None:
        beta1, beta2 = self.betas
        backend.adam_step(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"],
                          self.step_count, self.lr, beta1, beta2, self.eps,
                          self.weight_decay, self.decoupled)

    def extra_repr(self) -> str:
        return (f"lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay}")


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW (amsgrad off).

    Before the Adam update, param = param * (1 - lr * weight_decay); the
    gradient itself carries no penalty. Parameters as ``Adam``, except that
    weight_decay defaults to 1e-2.
    """

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class _Schedule:
    """Base of the learning-rate schedules.

    The schedule remembers the optimizer's lr at creation as ``base_lr`` and
    counts its ``step()`` calls in ``last_step``; after creation and after
    every step it sets ``optimizer.lr = last_lr = get_lr()``.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a tinynet "
                            f"Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_step = 0
        self._apply()

    def get_lr(self) -> float:
        """The learning rate after ``last_step`` steps (subclasses)."""
        raise NotImplementedError

    def _apply(self) -> None:
        self.last_lr = self.get_lr()
        self.optimizer.lr = self.last_lr

    def step(self) -> None:
        """Advance one step and set the optimizer's lr. Call it after
        ``optimizer.step()``, as in torch."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Flat dict: "last_step" (int64, 0-d) and "base_lr" (float64, 0-d)."""
        return {"last_step": np.array(self.last_step, dtype=np.int64),
                "base_lr": np.array(self.base_lr, dtype=np.float64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` and set the optimizer's lr to match.

        The error names the first missing, unexpected or mis-shaped key.
        """
        name = type(self).__name__
        _check_state(name, self.state_dict(), state)
        last_step = _count(name, "last_step", state["last_step"])
        base_lr = _nonnegative(f"{name}.load_state_dict", "base_lr",
                               float(np.asarray(state["base_lr"])))
        self.last_step = last_step
        self.base_lr = base_lr
        self._apply()


class StepLR(_Schedule):
    """Multiply the lr by ``gamma`` every ``step_size`` steps, as
    torch.optim.lr_scheduler.StepLR.

        lr(n) = base_lr * gamma ** floor(n / step_size)

    after n calls of ``step()``. (torch multiplies the current lr by gamma;
    the closed form here agrees to rounding and resumes from ``last_step``
    alone.)

    Parameters
    ----------
    optimizer : Optimizer
        Its lr at creation is base_lr.
    step_size : int
        Period of the decay, >= 1.
    gamma : float, default 0.1
        Decay factor, >= 0.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Integral):
            raise TypeError(f"StepLR: step_size must be an int, got {type(step_size).__name__}")
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size: int = int(step_size)
        self.gamma: float = _nonnegative("StepLR", "gamma", gamma)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_step // self.step_size)


class CosineWarmup(_Schedule):
    """Linear warm-up, then cosine decay to ``min_lr``.

    With W = warmup_steps, T = total_steps and n calls of ``step()`` so far:

        lr(n) = base_lr * (n + 1) / W                             n < W
        lr(n) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (n - W) / (T - W))) / 2
                                                                  W <= n <= T
        lr(n) = min_lr                                            n > T

    The warm-up starts at base_lr / W (the first update already moves) and
    reaches base_lr at n = W - 1; the cosine starts at base_lr at n = W and
    reaches min_lr at n = T. W = 0 means no warm-up. The cosine is SGDR's
    (https://arxiv.org/abs/1608.03983) without restarts.

    Parameters
    ----------
    optimizer : Optimizer
        Its lr at creation is base_lr.
    warmup_steps : int
        W, >= 0.
    total_steps : int
        T, > W.
    min_lr : float, default 0.0
        Final lr, 0 <= min_lr <= base_lr.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0) -> None:
        for arg, value in (("warmup_steps", warmup_steps), ("total_steps", total_steps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"CosineWarmup: {arg} must be an int, got {type(value).__name__}")
        if warmup_steps < 0:
            raise ValueError(f"CosineWarmup: warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps <= warmup_steps:
            raise ValueError(f"CosineWarmup: total_steps must be > warmup_steps "
                             f"({warmup_steps}), got {total_steps}")
        min_lr = _nonnegative("CosineWarmup", "min_lr", min_lr)
        if isinstance(optimizer, Optimizer) and min_lr > optimizer.lr:
            raise ValueError(f"CosineWarmup: min_lr must be <= the optimizer's lr "
                             f"({optimizer.lr}), got {min_lr}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = min_lr
        super().__init__(optimizer)

    def get_lr(self) -> float:
        n, W, T = self.last_step, self.warmup_steps, self.total_steps
        if n < W:
            return self.base_lr * (n + 1) / W
        if n > T:
            return self.min_lr
        progress = (n - W) / (T - W)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class OneCycleLR(_Schedule):
    """The one-cycle policy, as torch.optim.lr_scheduler.OneCycleLR with
    ``cycle_momentum=False`` and two phases (Smith and Topin,
    https://arxiv.org/abs/1708.07120).

    The lr rises from lr0 = max_lr / div_factor to max_lr over the first
    ``pct_start`` of ``total_steps``, then anneals to lr0 / final_div_factor at
    step ``total_steps - 1``. With e1 = pct_start * total_steps - 1 and
    e2 = total_steps - 1, after n calls of ``step()``:

        lr(n) = anneal(lr0, max_lr, n / e1)                     n <= e1
        lr(n) = anneal(max_lr, lr_min, (n - e1) / (e2 - e1))    e1 < n <= total_steps

    anneal(a, b, t) = b + (a - b) * (1 + cos(pi * t)) / 2 ("cos") or
    a + (b - a) * t ("linear"). The optimizer's own lr is replaced by lr0 at
    creation, as torch does. Call ``step()`` once per optimizer step, after it;
    stepping past ``total_steps`` raises ValueError, as in torch.

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float
        The peak lr, > 0.
    total_steps : int
        Steps in the cycle, >= 2, with both phases at least one step long.
    pct_start : float, default 0.3
        The share of the cycle spent rising, in (0, 1).
    anneal_strategy : {"cos", "linear"}, default "cos"
    div_factor : float, default 25.0
        lr0 = max_lr / div_factor, > 0.
    final_div_factor : float, default 1e4
        The last lr is lr0 / final_div_factor, > 0.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int,
                 pct_start: float = 0.3, anneal_strategy: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> None:
        name = "OneCycleLR"
        if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral):
            raise TypeError(f"{name}: total_steps must be an int, got {type(total_steps).__name__}")
        max_lr = _real(name, "max_lr", max_lr)
        pct_start = _real(name, "pct_start", pct_start)
        div_factor = _real(name, "div_factor", div_factor)
        final_div_factor = _real(name, "final_div_factor", final_div_factor)
        for arg, value in (("max_lr", max_lr), ("div_factor", div_factor),
                           ("final_div_factor", final_div_factor)):
            if not value > 0:
                raise ValueError(f"{name}: {arg} must be > 0, got {value}")
        if not 0 < pct_start < 1:
            raise ValueError(f"{name}: pct_start must be in (0, 1), got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        rise_end = float(pct_start * total_steps) - 1
        if not 0 < rise_end < total_steps - 1:
            raise ValueError(f"{name}: pct_start * total_steps - 1 = {rise_end} must lie in "
                             f"(0, total_steps - 1 = {total_steps - 1}): both phases need "
                             f"a step; raise total_steps or change pct_start")
        self.max_lr: float = max_lr
        self.total_steps: int = int(total_steps)
        self.pct_start: float = pct_start
        self.anneal_strategy: str = anneal_strategy
        self.initial_lr: float = max_lr / div_factor
        self.min_lr: float = self.initial_lr / final_div_factor
        self._rise_end: float = rise_end
        super().__init__(optimizer)

    def _anneal(self, start: float, end: float, t: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * t) + 1)
        return (end - start) * t + start

    def get_lr(self) -> float:
        n, e1, e2 = self.last_step, self._rise_end, self.total_steps - 1
        if n <= e1:
            return self._anneal(self.initial_lr, self.max_lr, n / e1)
        return self._anneal(self.max_lr, self.min_lr, (n - e1) / (e2 - e1))

    def step(self) -> None:
        """Advance one step; ValueError once the cycle's ``total_steps`` are used up."""
        if self.last_step + 1 > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {self.last_step + 1} times; the "
                             f"cycle has total_steps={self.total_steps}")
        super().step()
