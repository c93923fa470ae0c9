"""The model zoo: the models ``tinynet train --model NAME`` builds, by name.

Each builder returns a ``Sequential`` of tinynet layers; ``MODELS`` maps a
name to its builder and its input shape (one sample), and ``build(name, ...)``
builds one. The run directory stores ``get_config()`` of the model it built,
so a model loads without this module (``tn.load_model``).

The models, for 1x28x28 images and 10 classes:

- ``cnn``: the reference CNN (two conv blocks, a dense hidden layer);
- ``mlp``: a two-hidden-layer perceptron on the flattened image;
- ``lenet5``: LeNet-5 (LeCun et al. 1998, http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf);
- ``resnet8``, ``resnet20``: the CIFAR ResNets of He et al. 2016
  (https://arxiv.org/abs/1512.03385, section 4.2), depth 6n+2, on 28x28;
- ``speedrun``: the two-conv net of the public MNIST speedrun recipe
  (``tinynet speedrun``), with torch's default initialization.

The normalizations (NORMS) of lenet5 and the ResNets, placed after a conv
(or a hidden dense layer of lenet5) and before its nonlinearity; the layer
before a normalization has no bias (the norm's beta takes its place, as in
torchvision). For a feature map of C channels:

- ``batch``: BatchNorm(C), each channel over (N, H, W) (Ioffe & Szegedy 2015);
- ``group``: GroupNorm(G, C) with G = ``group_norm_groups(C)`` (Wu & He 2018,
  https://arxiv.org/abs/1803.08494): 8 groups at 16 channels, 16 at 32, 32 at 64;
- ``layer``: GroupNorm(1, C): each sample over all of (C, H, W), Ba et al.'s
  LayerNorm for conv nets as Wu & He render it (G = 1), with a per-channel
  gamma and beta. A LayerNorm((C, H, W)) has the same statistics, but its
  elementwise affine would hold 2*C*H*W values (25,088 for 16x28x28, more
  than the conv it follows) and tie the model to one image size; with G = 1
  every norm has the same 2*C parameters, so the norms compare alone;
- ``instance``: InstanceNorm(C, affine=True), each (sample, channel) over (H, W)
  (Ulyanov et al. 2016), the same as GroupNorm(C, C);
- ``none``: no normalization, and every conv and dense layer keeps its bias.
"""
from typing import Protocol

from . import init
from .layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     GroupNorm, InstanceNorm, LayerNorm, Layer, MaxPool2D, ReLU, Tanh)
from .layers.container import Residual
from .model import Sequential

__all__ = ["MODELS", "NORMS", "Builder", "build", "build_cnn", "build_mlp", "build_lenet5",
           "build_resnet", "build_resnet8", "build_resnet20", "build_speedrun",
           "group_norm_groups"]

NORMS = ("batch", "layer", "instance", "group", "none")
# The zoo's models name their initialization, so that their documented results do
# not move with the layers' default (torch's): He uniform, with zero biases.
HE = "he_uniform"


def _norm_2d(kind: str, channels: int, spatial: tuple[int, ...]) -> Layer | None:
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


def _norm_1d(kind: str, features: int) -> Layer | None:
    """A normalization for (N, features) activations, or None."""
    if kind == "batch":
        return BatchNorm(features)
    if kind == "layer":
        return LayerNorm(features)
    if kind == "group":
        return GroupNorm(8, features)
    return None  # instance norm has no meaning for a feature vector


def build_cnn(norm: str = "batch", num_classes: int = 10, dropout: float = 0.5) -> Sequential:
    """The reference CNN for 1x28x28 images.

    conv32-norm-relu-pool, conv64-norm-relu-pool, dense128-relu, dropout, dense10.
    Shapes: (N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128) -> (N, 10).
    """
    layers: list[Layer | None] = [
        Conv2D(1, 32, 3, padding=1, init=HE), _norm_2d(norm, 32, (28, 28)), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1, init=HE), _norm_2d(norm, 64, (14, 14)), ReLU(), MaxPool2D(2),
        Flatten(), Dense(64 * 7 * 7, 128, init=HE), ReLU(), Dropout(dropout),
        Dense(128, num_classes, init=HE)]
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False  # the images need no gradient
    return model


def build_mlp(norm: str = "batch", num_classes: int = 10, hidden: int = 256,
              dropout: float = 0.2) -> Sequential:
    """An MLP for flattened images: (N, 784) -> 256 -> 256 -> (N, 10)."""
    layers: list[Layer | None] = []
    width = 28 * 28
    for _ in range(2):
        layers += [Dense(width, hidden, init=HE), _norm_1d(norm, hidden), ReLU(), Dropout(dropout)]
        width = hidden
    layers.append(Dense(width, num_classes, init=HE))
    model = Sequential(*[layer for layer in layers if layer is not None])
    model.requires_input_grad = False
    return model


def build_speedrun(norm: str = "none", num_classes: int = 10) -> Sequential:
    """The model of the public "99% on MNIST in under a second" recipe
    (``tinynet speedrun``; tinynet/speedrun.py):

        x      (N, 1, 28, 28)
        conv   5x5, 24, no padding, maxpool 2, relu   -> (N, 24, 12, 12)
        conv   3x3, 32, no padding, maxpool 2, relu   -> (N, 32, 5, 5)
        dense  800 -> 256, relu                       -> (N, 256)
        dense  256 -> num_classes                     -> (N, 10)

    with torch's default initialization (the layers' default, ``init="torch"``),
    as the recipe was tuned with it. A norm other than "none" goes after each
    conv (before its pool), as in the ResNets (the module docstring's table),
    and that conv has no bias.
    """
    _check_norm("speedrun", norm)
    bias = norm == "none"  # a norm's beta takes the place of the conv's bias
    layers = [Conv2D(1, 24, 5, bias=bias), _norm_maps(norm, 24), MaxPool2D(2), ReLU(),
              Conv2D(24, 32, 3, bias=bias), _norm_maps(norm, 32), MaxPool2D(2), ReLU(),
              Flatten(), Dense(32 * 5 * 5, 256), ReLU(), Dense(256, num_classes)]
    model = _chain(*layers)
    model.requires_input_grad = False
    return model


def group_norm_groups(channels: int) -> int:
    """The number of groups of the zoo's GroupNorm over ``channels`` channels.

    Wu & He's 32 groups where a layer is wide enough, and otherwise as many
    groups as leave at least 2 channels in each (1 channel per group would be
    InstanceNorm): the largest G <= min(32, channels // 2) that divides
    ``channels``, and 1 below 4 channels. 16 -> 8, 32 -> 16, 64 and more -> 32;
    lenet5's 6 -> 3, 120 -> 30, 84 -> 28.
    """
    most = max(1, min(32, channels // 2))
    return next(g for g in range(most, 0, -1) if channels % g == 0)


def _check_norm(model: str, norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"zoo: {model} takes a norm in {', '.join(NORMS)}, got {norm!r}")


def _chain(*layers: Layer | None) -> Sequential:
    """A Sequential of the layers that are not None (a norm of "none" is None)."""
    return Sequential(*[layer for layer in layers if layer is not None])


def _norm_maps(kind: str, channels: int) -> Layer | None:
    """The normalization of (N, channels, H, W) feature maps named ``kind``, or None
    (the table in the module docstring)."""
    if kind == "batch":
        return BatchNorm(channels)
    if kind == "group":
        return GroupNorm(group_norm_groups(channels), channels)
    if kind == "layer":
        return GroupNorm(1, channels)
    if kind == "instance":
        return InstanceNorm(channels, affine=True)
    return None


def _norm_features(kind: str, features: int) -> Layer | None:
    """The normalization of (N, features) activations named ``kind``, or None:
    BatchNorm (torch's BatchNorm1d), LayerNorm, or GroupNorm over groups of
    features; None for "none" and for "instance", whose sets would hold one
    value each (every output would be beta)."""
    if kind == "batch":
        return BatchNorm(features)
    if kind == "group":
        return GroupNorm(group_norm_groups(features), features)
    if kind == "layer":
        return LayerNorm(features)
    return None


def build_lenet5(norm: str = "batch", num_classes: int = 10) -> Sequential:
    """LeNet-5 (LeCun et al. 1998) for 1x28x28 images, in its modern rendering.

    The paper's 32x32 input is the 28x28 image padded by 2: the first conv
    takes padding=2 instead. Layers and shapes, with tanh activations:

        x        (N, 1, 28, 28)
        C1       conv 5x5, 6, padding 2   -> (N, 6, 28, 28)   [norm] tanh
        S2       average pool 2x2         -> (N, 6, 14, 14)
        C3       conv 5x5, 16             -> (N, 16, 10, 10)  [norm] tanh
        S4       average pool 2x2         -> (N, 16, 5, 5)
        flatten                           -> (N, 400)
        C5       dense 400 -> 120         -> (N, 120)         [norm] tanh
        F6       dense 120 -> 84          -> (N, 84)          [norm] tanh
        output   dense 84 -> num_classes  -> (N, 10)

    61,706 parameters with ``norm="none"``. Where the paper differs: its
    subsampling layers S2 and S4 multiply each 2x2 sum by a trainable
    coefficient, add a trainable bias and squash (here AvgPool2D(2), the
    classic modern rendering, with no parameters and no activation); C3
    connects each of its 16 maps to a subset of S2's 6 (here all 6); its
    activation is 1.7159 tanh(2a/3) (here tanh); C5 is a 5x5 conv over the
    5x5 maps (the same as the dense layer on the 400 flattened values); and
    its output layer is Euclidean RBF units (here a dense layer, for a
    softmax cross-entropy). The weights are Xavier uniform (Glorot & Bengio
    2010, derived for tanh networks), the biases zero.

    ``norm`` puts a normalization after C1, C3, C5 and F6, before tanh, and
    drops their biases: "batch" as BatchNorm (2d after the convs, 1d after
    the dense layers), "layer" as GroupNorm(1, C) after the convs and
    LayerNorm after the dense layers, "group" as
    GroupNorm(group_norm_groups(C), C) after all four, and "instance" as
    InstanceNorm after the two convs only (an instance of a feature vector is
    one value, so C5 and F6 stay plain). "none" is the paper's; "batch" is
    the default, as for every zoo model and the CLI's --norm.

    Parameters
    ----------
    norm : str
        One of NORMS.
    num_classes : int
        The outputs of the last layer.

    Returns
    -------
    Sequential
        (N, 1, 28, 28) -> (N, num_classes) logits.
    """
    _check_norm("lenet5", norm)

    def conv(cin: int, cout: int, padding: int = 0) -> list[Layer | None]:
        norm_layer = _norm_maps(norm, cout)
        return [Conv2D(cin, cout, 5, padding=padding, bias=norm_layer is None, init=HE),
                norm_layer, Tanh(), AvgPool2D(2)]

    def dense(fin: int, fout: int) -> list[Layer | None]:
        norm_layer = _norm_features(norm, fout)
        return [Dense(fin, fout, bias=norm_layer is None, init=HE), norm_layer, Tanh()]

    layers = [*conv(1, 6, padding=2), *conv(6, 16), Flatten(), *dense(16 * 5 * 5, 120),
              *dense(120, 84), Dense(84, num_classes, init=HE)]
    model = _chain(*layers)
    # Xavier for tanh, drawn over the He weights (which drew first and are kept in
    # the order of draws, so the documented seeds give the documented models).
    for layer in model.layers:
        if isinstance(layer, (Conv2D, Dense)):
            layer.weight.data[...] = init.xavier_uniform(layer.weight.shape)
    model.requires_input_grad = False
    return model


def _basic_block(cin: int, cout: int, stride: int, norm: str) -> list[Layer]:
    """A basic block and the ReLU after it: [Residual(block, shortcut), ReLU()].

    block = conv3x3(stride)-norm-relu-conv3x3-norm maps (N, cin, H, W) to
    (N, cout, H', W') with H' = (H - 1) // stride + 1; the shortcut is the
    identity when the shape stays, else a 1x1 conv with the block's stride
    and a norm (He et al.'s projection, option B).
    """
    bias = norm == "none"
    block = _chain(Conv2D(cin, cout, 3, stride=stride, padding=1, bias=bias, init=HE),
                   _norm_maps(norm, cout), ReLU(),
                   Conv2D(cout, cout, 3, padding=1, bias=bias, init=HE), _norm_maps(norm, cout))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = _chain(Conv2D(cin, cout, 1, stride=stride, bias=bias, init=HE),
                          _norm_maps(norm, cout))
    return [Residual(block, shortcut), ReLU()]


def build_resnet(depth: int, norm: str = "batch", num_classes: int = 10) -> Sequential:
    """The CIFAR ResNet of depth 6n+2 (He et al. 2016, section 4.2) for 1x28x28 images.

    A stem conv, three stages of n basic blocks (two 3x3 convs each, so 6n
    convs) and the classifier:

        x        (N, 1, 28, 28)
        stem     conv 3x3, 16, norm, relu          -> (N, 16, 28, 28)
        stage 1  n blocks, 16 channels              -> (N, 16, 28, 28)
        stage 2  n blocks, 32 channels, stride 2    -> (N, 32, 14, 14)
        stage 3  n blocks, 64 channels, stride 2    -> (N, 64, 7, 7)
        pool     global average                     -> (N, 64)
        output   dense 64 -> num_classes            -> (N, 10)

    Each block is ``Residual(Sequential(conv3x3-norm-relu-conv3x3-norm),
    shortcut)`` followed by a ReLU; only the first block of stages 2 and 3
    strides (its first conv, stride 2), and its shortcut is a 1x1 conv with
    stride 2 and a norm (the projection, option B); the others add x itself.
    Convs followed by a norm have no bias; with ``norm="none"`` every conv
    has one. Weights are He uniform (``init="he_uniform"``), norms gamma 1 and
    beta 0. The norms are the module docstring's table.

    Parameters
    ----------
    depth : int
        6n + 2 for n >= 1: 8, 14, 20, 32, 44, 56, 110, ...
    norm : str
        One of NORMS.
    num_classes : int
        The outputs of the last layer.

    Returns
    -------
    Sequential
        (N, 1, 28, 28) -> (N, num_classes) logits; layer 3 + 2i is block i's Residual.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"zoo: a resnet's depth must be 6n+2 with n >= 1 (8, 14, 20, ...), "
                         f"got {depth!r}")
    _check_norm(f"resnet{depth}", norm)
    n = (depth - 2) // 6
    layers = [Conv2D(1, 16, 3, padding=1, bias=norm == "none", init=HE), _norm_maps(norm, 16),
              ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            layers += _basic_block(cin, cout, stride, norm)
            cin = cout
    layers += [GlobalAvgPool2D(), Dense(64, num_classes, init=HE)]
    model = _chain(*layers)
    model.requires_input_grad = False
    return model


def build_resnet8(norm: str = "batch", num_classes: int = 10) -> Sequential:
    """ResNet-8: ``build_resnet(8, ...)``, one block per stage."""
    return build_resnet(8, norm, num_classes)


def build_resnet20(norm: str = "batch", num_classes: int = 10) -> Sequential:
    """ResNet-20: ``build_resnet(20, ...)``, three blocks per stage (272,186
    parameters with batch norm)."""
    return build_resnet(20, norm, num_classes)


class Builder(Protocol):
    """A zoo builder: ``builder(norm, num_classes=...)`` returns a new model."""

    def __call__(self, norm: str = ..., num_classes: int = ...) -> Sequential: ...


# name -> (builder(norm=..., num_classes=...), input shape of one sample)
MODELS: dict[str, tuple[Builder, tuple[int, ...]]] = {
    "cnn": (build_cnn, (1, 28, 28)), "mlp": (build_mlp, (28 * 28,)),
    "lenet5": (build_lenet5, (1, 28, 28)), "resnet8": (build_resnet8, (1, 28, 28)),
    "resnet20": (build_resnet20, (1, 28, 28)), "speedrun": (build_speedrun, (1, 28, 28))}


def build(name: str, norm: str = "batch", num_classes: int = 10) -> Sequential:
    """The zoo model ``name`` (one of MODELS) with normalization ``norm`` (one of NORMS)."""
    if name not in MODELS:
        raise ValueError(f"zoo: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if norm not in NORMS:
        raise ValueError(f"zoo: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return MODELS[name][0](norm, num_classes=num_classes)
