"""Sequential: a chain of layers, with PyTorch-compatible state_dicts.

forward:  y = f_K(... f_2(f_1(x)))
backward: dx = J_1^T (... J_K^T dy), each layer's backward in reverse order.

``state_dict()`` uses torch's keys ("0.weight", "1.running_mean", ...), so
the state of a torch ``nn.Sequential`` with the same layers loads here, and
the reverse works too. ``save`` / ``load`` pick the file format by the
extension: ``.safetensors`` (which ``safetensors.torch.load_file`` opens) or
``.npz``. Both are written atomically and read without unpickling, so loading
a file never runs code from it (tinynet/serialization.py); ``save`` stores the
architecture too (``get_config``), so ``tinynet.load_model`` rebuilds it.
"""
import numpy as np

from .backends import move
from .layers.base import Layer, layer_from_config, layer_to_config
from .layers.container import Container
from .state import check_and_load


class Sequential(Container):
    """A chain of layers: ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10))``.

    A Container (tinynet/layers/container.py) whose children are the layers,
    keys "0", "1", ...; only the first layer sees x, so only it follows
    ``requires_input_grad``.

    Parameters
    ----------
    *layers : Layer
        The layers, applied in order.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: argument {i} must be a tinynet layer, "
                                f"got {type(layer).__name__}")
        self.layers = list(layers)

    def get_config(self):
        """``{"layers": [layer_to_config(layer), ...]}``."""
        return {"layers": [layer_to_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        return cls(*[layer_from_config(c) for c in config.get("layers", [])])

    def children(self):
        """The layers as ``(key, layer)``, keys "0", "1", ... as in torch."""
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    @property
    def requires_input_grad(self):
        return self.layers[0].requires_input_grad if self.layers else True

    @requires_input_grad.setter
    def requires_input_grad(self, value):
        if getattr(self, "layers", None):
            self.layers[0].requires_input_grad = bool(value)

    def forward(self, x):
        """Apply every layer in order. x: the first layer's input shape."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        """Backpropagate ``dy`` (the output's shape) through every layer.

        Returns dx with the input's shape, or None when the first layer's
        ``requires_input_grad`` is False.
        """
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
            if dy is None:
                break
        return dy

    def state_dict(self, prefix=""):
        """Dict of torch-style keys ("0.weight", "1.running_mean") to numpy copies,
        wherever the model lives."""
        sd = {}
        for i, layer in enumerate(self.layers):
            sd.update(layer.state_dict(f"{prefix}{i}."))
        return sd

    def load_state_dict(self, state, prefix="", strict=True):
        """Load a state_dict (numpy arrays or torch tensors) after checking it.

        Raises KeyError for the first missing or (with ``strict``) unexpected
        key and ValueError for the first key with a wrong shape; nothing is
        changed then.
        """
        check_and_load([(self, prefix)], state, strict)

    def summary(self, input_shape=None, dtype=np.float32, file=None):
        """Print and return a table of layers, output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple, optional
            The shape of one batch, e.g. (1, 1, 28, 28). With it, a forward pass
            on zeros in eval mode gives each layer's output shape.
        """
        shapes = [None] * len(self.layers)
        if input_shape is not None:
            modes = [layer.training for layer in self.layers]
            self.eval()
            x = move(np.zeros(input_shape, dtype=self.dtype or dtype), self.device or "cpu")
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                layer._cache = None
                shapes[i] = x.shape
            for layer, mode in zip(self.layers, modes):
                layer.train(mode)
        rows = [("#", "layer", "output shape", "params")]
        total = 0
        for i, layer in enumerate(self.layers):
            n = sum(p.size for p in layer.parameters())
            total += n
            rows.append((str(i), repr(layer), "?" if shapes[i] is None else str(shapes[i]), f"{n:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = ["  ".join(r[c].ljust(widths[c]) if c < 3 else r[c].rjust(widths[c])
                           for c in range(4)) for r in rows]
        rule = "-" * len(lines[0])
        text = "\n".join([lines[0], rule] + lines[1:] + [rule, f"total parameters: {total:,}"])
        print(text, file=file)
        return text

    def extra_repr(self):
        return ", ".join(repr(layer) for layer in self.layers)
