"""The model zoo: the models ``tinynet train --model NAME`` builds, by name.

Each builder returns a ``Sequential`` of tinynet layers; ``MODELS`` maps a
name to its builder and its input shape (one sample), and ``build(name, ...)``
builds one. The run directory stores ``get_config()`` of the model it built,
so a model loads without this module (``tn.load_model``).
"""
from .layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, GroupNorm, InstanceNorm,
                     LayerNorm, MaxPool2D, ReLU)
from .model import Sequential

__all__ = ["MODELS", "NORMS", "build", "build_cnn", "build_mlp"]

NORMS = ("batch", "layer", "instance", "group", "none")


def _norm_2d(kind, channels, spatial):
    """A normalization for (N, channels, H, W) feature maps, or None."""
    if kind == "batch":
        return BatchNorm(channels)
    if kind == "layer":
        return LayerNorm((channels,) + spatial)
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "group":
        return GroupNorm(8, channels)
    return None


def _norm_1d(kind, features):
    """A normalization for (N, features) activations, or None."""
    if kind == "batch":
        return BatchNorm(features)
    if kind == "layer":
        return LayerNorm(features)
    if kind == "group":
        return GroupNorm(8, features)
    return None  # instance norm has no meaning for a feature vector


def build_cnn(norm="batch", num_classes=10, dropout=0.5):
    """The reference CNN for 1x28x28 images.

    conv32-norm-relu-pool, conv64-norm-relu-pool, dense128-relu, dropout, dense10.
    Shapes: (N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128) -> (N, 10).
    """
    layers = [Conv2D(1, 32, 3, padding=1), _norm_2d(norm, 32, (28, 28)), ReLU(), MaxPool2D(2),
              Conv2D(32, 64, 3, padding=1), _norm_2d(norm, 64, (14, 14)), ReLU(), MaxPool2D(2),
              Flatten(), Dense(64 * 7 * 7, 128), ReLU(), Dropout(dropout), Dense(128, num_classes)]
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False  # the images need no gradient
    return model


def build_mlp(norm="batch", num_classes=10, hidden=256, dropout=0.2):
    """An MLP for flattened images: (N, 784) -> 256 -> 256 -> (N, 10)."""
    layers = []
    width = 28 * 28
    for _ in range(2):
        layers += [Dense(width, hidden), _norm_1d(norm, hidden), ReLU(), Dropout(dropout)]
        width = hidden
    layers.append(Dense(width, num_classes))
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False
    return model


# name -> (builder(norm=..., num_classes=...), input shape of one sample)
MODELS = {"cnn": (build_cnn, (1, 28, 28)), "mlp": (build_mlp, (28 * 28,))}


def build(name, norm="batch", num_classes=10):
    """The zoo model ``name`` (one of MODELS) with normalization ``norm`` (one of NORMS)."""
    if name not in MODELS:
        raise ValueError(f"zoo: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if norm not in NORMS:
        raise ValueError(f"zoo: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return MODELS[name][0](norm, num_classes=num_classes)
