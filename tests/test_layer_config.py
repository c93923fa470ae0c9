"""Layer configs: every layer describes itself (get_config) and is rebuilt from it, so
tn.load_model loads any model without the code that built it."""
import json

import numpy as np
import pytest

import tinynet as tn
from tinynet.layers.base import LAYER_CLASSES, Layer

# one instance of every public layer, with non-default arguments where it has them
EXAMPLES = {
    "Dense": lambda: tn.Dense(3, 4, bias=False),
    "Conv2D": lambda: tn.Conv2D(2, 4, (3, 1), stride=2, padding=(1, 0), bias=False, groups=2),
    "MaxPool2D": lambda: tn.MaxPool2D(2),
    "AvgPool2D": lambda: tn.AvgPool2D(3, stride=2),
    "GlobalAvgPool2D": tn.GlobalAvgPool2D,
    "Flatten": tn.Flatten,
    "ReLU": tn.ReLU,
    "LeakyReLU": lambda: tn.LeakyReLU(0.2),
    "Sigmoid": tn.Sigmoid,
    "Tanh": tn.Tanh,
    "GELU": tn.GELU,
    "Softmax": lambda: tn.Softmax(dim=1),
    "Dropout": lambda: tn.Dropout(0.3, seed=7),
    "BatchNorm": lambda: tn.BatchNorm(4, eps=1e-3, momentum=0.2, affine=False),
    "LayerNorm": lambda: tn.LayerNorm((3, 4, 4), elementwise_affine=True, bias=False),
    "InstanceNorm": lambda: tn.InstanceNorm(3, affine=True, track_running_stats=True),
    "GroupNorm": lambda: tn.GroupNorm(2, 4, eps=1e-4),
    "WeightNorm": lambda: tn.WeightNorm(tn.Conv2D(2, 3, 3, padding=1)),
    "DropConnect": lambda: tn.DropConnect(tn.Dense(3, 4), 0.5, seed=3),
    "MeanOnlyBatchNorm": lambda: tn.MeanOnlyBatchNorm(4, momentum=0.3),
    "RandomAffineNoise": lambda: tn.RandomAffineNoise(4, shift=0.2, scale=1.5, seed=2),
    "Residual": lambda: tn.Residual(tn.Sequential(tn.Dense(4, 5), tn.ReLU()),
                                    shortcut=tn.Dense(4, 5)),
    "Concat": lambda: tn.Concat(tn.Dense(3, 2), tn.Sequential(tn.Dense(3, 4)), axis=1),
    "Sequential": lambda: tn.Sequential(tn.Dense(3, 4), tn.ReLU(), tn.Residual(tn.Dense(4, 4))),
}


def public_layer_classes():
    return sorted(name for name in dir(tn.layers) if isinstance(getattr(tn.layers, name), type)
                  and issubclass(getattr(tn.layers, name), Layer)
                  and name not in ("Layer", "Container")) + ["Sequential"]


def test_every_public_layer_has_an_example():
    assert sorted(EXAMPLES) == sorted(public_layer_classes())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_round_trip(name):
    layer = EXAMPLES[name]()
    config = tn.layer_to_config(layer)
    again = tn.layer_from_config(json.loads(json.dumps(config)))  # through JSON
    assert type(again) is type(layer)
    assert tn.layer_to_config(again) == config
    assert repr(again) == repr(layer)
    a, b = layer.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert LAYER_CLASSES[name] is type(layer)


def test_requires_input_grad_is_part_of_the_config():
    model = tn.Sequential(tn.Dense(3, 4))
    model.requires_input_grad = False
    assert tn.layer_from_config(tn.layer_to_config(model)).requires_input_grad is False


def test_unknown_classes_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown layer class 'Mystery'.*register_layer"):
        tn.layer_from_config({"class": "Mystery", "config": {}})
    with pytest.raises(ValueError, match="layer config of Dense: .*unexpected keyword"):
        tn.layer_from_config({"class": "Dense", "config": {"in_features": 3, "width": 4}})
    with pytest.raises(ValueError, match="layer config of Dense: Dense: in_features"):
        tn.layer_from_config({"class": "Dense", "config": {"in_features": -3,
                                                            "out_features": 4}})
    with pytest.raises(ValueError, match="layer config must be"):
        tn.layer_from_config([1])


def test_a_user_layer_registers_and_loads(tmp_path):
    @tn.register_layer
    class Scale(Layer):
        def __init__(self, factor=2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    model = tn.Sequential(tn.Dense(3, 2), Scale(3.0))
    model.save(tmp_path / "m.safetensors")
    again = tn.load_model(tmp_path / "m.safetensors")
    assert isinstance(again[1], Scale) and again[1].factor == 3.0


def test_a_layer_whose_arguments_are_not_attributes_says_so():
    class Opaque(Layer):
        def __init__(self, size):
            super().__init__()
            self._size = size
    with pytest.raises(NotImplementedError, match="Opaque.get_config: cannot read .*'size'"):
        Opaque(3).get_config()


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_load_model_rebuilds_weights_and_dtype(tmp_path, ext, rng):
    tn.init.seed(1)
    model = tn.Sequential(tn.Conv2D(1, 4, 3, padding=1), tn.BatchNorm(4), tn.ReLU(),
                          tn.Residual(tn.Sequential(tn.Conv2D(4, 4, 3, padding=1),
                                                    tn.GroupNorm(2, 4))),
                          tn.GlobalAvgPool2D(), tn.Dropout(0.2), tn.Dense(4, 3)).to(np.float64)
    x = rng.standard_normal((2, 1, 6, 6))
    model.forward(x)  # moves the running statistics and dropout's counter
    model.save(tmp_path / f"m{ext}")
    again = tn.load_model(tmp_path / f"m{ext}")
    assert again.dtype == np.float64
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value, err_msg=key)
    model.eval(), again.eval()
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def test_load_model_from_a_checkpoint_restores_mask_counters_inside_containers(tmp_path, rng):
    tn.init.seed(0)
    model = tn.Sequential(tn.Dense(6, 8), tn.Residual(tn.Sequential(tn.Dropout(0.5), tn.Dense(8, 8))),
                          tn.Dense(8, 3))
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    tn.fit(model, tn.SoftmaxCrossEntropy(), tn.optim.SGD(model.parameters(), lr=0.1), (x, y),
           epochs=1, batch_size=8, checkpoint=tmp_path / "c.safetensors", progress=False)
    again = tn.load_model(tmp_path / "c.safetensors")
    assert again[1].block[0].step == model[1].block[0].step == 4
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_load_model_errors_name_the_file(tmp_path):
    from tinynet.serialization import CheckpointError, write_tensors
    write_tensors(tmp_path / "bare.safetensors", tn.Dense(2, 2).state_dict())
    with pytest.raises(CheckpointError, match="bare.safetensors: holds no architecture"):
        tn.load_model(tmp_path / "bare.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint.safetensors"):
        tn.load_model(tmp_path)
    write_tensors(tmp_path / "wrong.safetensors", tn.Dense(2, 2).state_dict(),
                  {"architecture": json.dumps(tn.layer_to_config(tn.Dense(2, 3)))})
    with pytest.raises(ValueError, match="wrong.safetensors: load_state_dict: key 'weight'"):
        tn.load_model(tmp_path / "wrong.safetensors")
    write_tensors(tmp_path / "huge.safetensors", {},
                  {"architecture": json.dumps({"class": "Dense", "config": {
                      "in_features": 10**7, "out_features": 10**7}})})
    with pytest.raises(CheckpointError, match="needs more memory than this machine has"):
        tn.load_model(tmp_path / "huge.safetensors")
