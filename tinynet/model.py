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
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .backends import move
from .layers.base import Layer, layer_from_config, layer_to_config
from .layers.container import Container
from .parameter import Array
from .state import check_and_load

if TYPE_CHECKING:
    from typing_extensions import Self


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

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: argument {i} must be a tinynet layer, "
                                f"got {type(layer).__name__}")
        self.layers = list(layers)

    def get_config(self) -> dict[str, Any]:
        """``{"layers": [layer_to_config(layer), ...]}``."""
        return {"layers": [layer_to_config(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        return cls(*[layer_from_config(c) for c in config.get("layers", [])])

    def children(self) -> list[tuple[str, Layer]]:
        """The layers as ``(key, layer)``, keys "0", "1", ... as in torch."""
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @property
    def requires_input_grad(self) -> bool:
        return self.layers[0].requires_input_grad if self.layers else True

    @requires_input_grad.setter
    def requires_input_grad(self, value: bool) -> None:
        if getattr(self, "layers", None):
            self.layers[0].requires_input_grad = bool(value)

    def forward(self, x: Array) -> Array:
        """Apply every layer in order. x: the first layer's input shape."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: Array) -> Array | None:
        """Backpropagate ``dy`` (the output's shape) through every layer.

        Returns dx with the input's shape, or None when the first layer's
        ``requires_input_grad`` is False.
        """
        dx: Array | None = dy
        for layer in reversed(self.layers):
            dx = layer.backward(dx)
            if dx is None:
                break
        return dx

    def state_dict(self, prefix: str = "") -> dict[str, NDArray[Any]]:
        """Dict of torch-style keys ("0.weight", "1.running_mean") to numpy copies,
        wherever the model lives."""
        sd = {}
        for i, layer in enumerate(self.layers):
            sd.update(layer.state_dict(f"{prefix}{i}."))
        return sd

    def load_state_dict(self, state: Mapping[str, Any], prefix: str = "",
                        strict: bool = True) -> None:
        """Load a state_dict (numpy arrays or torch tensors) after checking it.

        Raises KeyError for the first missing or (with ``strict``) unexpected
        key and ValueError for the first key with a wrong shape; nothing is
        changed then.
        """
        check_and_load([(self, prefix)], state, strict)

    def summary(self, input_shape: Sequence[int] | None = None,
                dtype: DTypeLike = np.float32, file: TextIO | None = None) -> None:
        """Print a table of layers, output shapes and parameter counts.

        It returns None, so a notebook cell ending in ``model.summary()``
        shows the table once (the printed text), not again as the cell's
        value. ``summary_text()`` returns the same table as a str, and
        ``file=`` sends it elsewhere (``tinynet train`` writes it to stderr).

        Parameters
        ----------
        input_shape : tuple of int, optional
            The shape of one batch, e.g. (1, 1, 28, 28). With it, a forward pass
            on zeros in eval mode gives each layer's output shape.
        dtype : dtype
            The dtype of those zeros when the model has no parameters.
        file : text file, optional
            Where to print (default: sys.stdout).
        """
        print(self.summary_text(input_shape, dtype), file=file)

    def summary_text(self, input_shape: Sequence[int] | None = None,
                     dtype: DTypeLike = np.float32) -> str:
        """The table that ``summary()`` prints, as a str.

        Parameters
        ----------
        input_shape, dtype
            As for ``summary``.

        Returns
        -------
        str
            A header, one row per layer (#, layer, output shape or "?" without
            ``input_shape``, parameter count), and the total parameter count.
        """
        shapes: list[tuple[int, ...] | None] = [None] * len(self.layers)
        if input_shape is not None:
            own, modes = self.training, [layer.training for layer in self.layers]
            self.eval()
            x = move(np.zeros(input_shape, dtype=self.dtype or dtype), self.device or "cpu")
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                layer._cache = None
                shapes[i] = x.shape
            for layer, mode in zip(self.layers, modes):
                layer.train(mode)
            self.training = own
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
        return "\n".join([lines[0], rule] + lines[1:] + [rule, f"total parameters: {total:,}"])

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)
