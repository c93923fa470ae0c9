"""Layer: the base class of every tinynet layer, and the layer contract.

The contract (docs/architecture.md):

- ``y = layer.forward(x)`` (or ``layer(x)``) computes the output and caches
  what the backward pass needs.
- ``dx = layer.backward(dy)`` returns a fresh ``dx`` and ADDS the parameter
  gradients into each ``Parameter.grad``. Calling it before a forward raises.
- Learnable tensors are ``Parameter`` attributes named in ``param_names``;
  buffers (running statistics) are plain arrays named in ``buffer_names``.
- ``train()`` / ``eval()`` set ``training``; training is the default.
- ``requires_input_grad = False`` lets a layer skip computing ``dx`` (the
  first layer of a network needs none); its backward then returns None.
- ``to("cuda")`` / ``to("cpu")`` moves parameters, grads and buffers to a
  device; ``to(dtype)`` casts them. Inputs must live on the active backend's
  device, and so must the parameters: a mismatch raises DeviceMismatchError
  naming the layer and both devices.
"""
import numpy as np

from ..backends import check_device, device_of, get_backend, move, to_host
from ..state import check_and_load

DEVICES = ("cpu", "cuda")


class Layer:
    """Base class: parameters, buffers, train/eval, state_dict and checks.

    Subclasses set ``param_names`` and ``buffer_names`` (attribute names, in
    state_dict order) and implement ``forward`` and ``backward``.
    """

    param_names = ()
    buffer_names = ()

    def __init__(self):
        self.training = True
        self.requires_input_grad = True
        self._cache = None
        self._dtype = None

    # -- calling --------------------------------------------------------
    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    @property
    def ops(self):
        """The active backend's op namespace (see ``tinynet.backends``)."""
        return get_backend()

    # -- parameters and buffers -------------------------------------------
    def children(self):
        """List of ``(key, layer)`` of the layers this one holds (containers); [] here."""
        return []

    def named_parameters(self, prefix=""):
        """List of ``(name, Parameter)`` in state_dict order (weight before bias)."""
        out = []
        for name in self.param_names:
            p = getattr(self, name)
            if p is not None:
                out.append((prefix + name, p))
        return out

    def parameters(self):
        """List of the layer's Parameters, weight before bias."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        out = []
        for name in self.buffer_names:
            b = getattr(self, name)
            if b is not None:
                out.append((prefix + name, b))
        return out

    def zero_grad(self):
        """Clear the gradient of every parameter."""
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        """Set training mode (``mode=True``) or eval mode. Returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode. Returns self."""
        return self.train(False)

    def to(self, target):
        """Move the layer to a device, or cast it to a dtype, in place. Returns self.

        Parameters
        ----------
        target : str or dtype
            "cuda" or "cpu": parameters, grads and floating buffers move to that device
            (RuntimeError with the reason when "cuda" cannot run here). float32 or
            float64: parameters and floating buffers are cast to it, on the
            device where they are.
        """
        if isinstance(target, str) and target in DEVICES:
            for p in self.parameters():
                p.to_(target)
            # Floating buffers (running statistics) move; integer counters
            # (num_batches_tracked) are bookkeeping and stay on the host.
            for name, b in self.named_buffers():
                if b.dtype.kind == "f":
                    setattr(self, name, move(b, target))
            return self
        try:
            dtype = np.dtype(target)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.name}.to: dtype must be float32 or float64, or a device "
                            f"{DEVICES}, got {target!r}")
        for p in self.parameters():
            p.astype_(dtype)
        for name, b in self.named_buffers():
            if b.dtype.kind == "f":
                setattr(self, name, b.astype(dtype, order="C"))
        return self

    @property
    def dtype(self):
        """The dtype of the layer's parameters, or None for a layer without any."""
        ps = self.parameters()
        return ps[0].data.dtype if ps else None

    @property
    def device(self):
        """Where the layer's parameters live ("cpu" or "cuda"), or None without any."""
        ps = self.parameters()
        return ps[0].device if ps else None

    # -- state_dict ---------------------------------------------------------
    def state_dict(self, prefix=""):
        """Dict of name -> numpy copy, wherever the layer lives: parameters, then
        buffers (PyTorch's keys)."""
        sd = {}
        for name, p in self.named_parameters(prefix):
            sd[name] = np.array(to_host(p.data))
        for name, b in self.named_buffers(prefix):
            sd[name] = np.array(to_host(b))
        return sd

    def load_state_dict(self, state, prefix="", strict=True):
        """Copy arrays from ``state`` into parameters and buffers.

        Every expected key must be present with the right shape; with
        ``strict`` no other key under ``prefix`` may be present. The error
        names the first key that is wrong.
        """
        check_and_load([(self, prefix)], state, strict)

    # -- checks ---------------------------------------------------------------
    @property
    def name(self):
        return type(self).__name__

    def _check_devices(self, what, a):
        """Raise DeviceMismatchError unless the parameters and ``a`` are on the backend's device.

        Returns the backend."""
        backend = self.ops
        for p in self.parameters()[:1]:
            check_device(self.name, "the parameters", p.data, backend, parameter=True)
        check_device(self.name, what, a, backend)
        return backend

    def _check_input(self, x, ndims, what):
        """Raise a clear error unless ``x`` is a float array of rank in ``ndims``.

        ``what`` describes the expected shape, e.g. "(N, C, H, W)". ``x`` and
        the parameters must live on the active backend's device. The old
        backward cache is dropped first, so a failed forward cannot leave a
        stale one behind, and the input dtype is kept for ``_check_dy``.
        """
        self._cache = None
        if not (isinstance(x, np.ndarray) or device_of(x) != "cpu"):
            raise TypeError(f"{self.name}: input must be an array of shape {what}, "
                            f"got {type(x).__name__}")
        backend = self._check_devices("input", x)
        if x.ndim not in ndims:
            raise ValueError(f"{self.name}: input must have shape {what}, got shape {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.name}: input must be float32 or float64, got {x.dtype}")
        dtype = self.dtype
        if dtype is not None and x.dtype != dtype:
            raise TypeError(f"{self.name}: input dtype {x.dtype} does not match the layer's "
                            f"parameters ({dtype}); cast x or call layer.to({x.dtype.name})")
        self._dtype = x.dtype
        return backend.asarray(x)

    def _check_dy(self, dy, shape):
        """Raise unless forward ran and ``dy`` has the output's ``shape``, on the device."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}.backward called before forward")
        if getattr(dy, "shape", None) != tuple(shape):
            got = getattr(dy, "shape", type(dy).__name__)
            raise ValueError(f"{self.name}.backward: dy must have the output's shape "
                             f"{tuple(shape)}, got {got}")
        backend = self._check_devices("dy", dy)
        if dy.dtype != self._dtype:
            raise TypeError(f"{self.name}.backward: dy must have the forward input's dtype "
                            f"{self._dtype}, got {dy.dtype}")
        return backend.asarray(dy)

    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{self.name}({self.extra_repr()})"
