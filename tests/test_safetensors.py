"""model.save / model.load in safetensors: torch opens the files, and tinynet opens torch's."""
import os

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close
from tinynet.serialization import CheckpointError, read_tensors, write_tensors


def small_cnn():
    tn.init.seed(0)
    return tn.Sequential(tn.Conv2D(2, 4, 3, padding=1), tn.BatchNorm(4), tn.ReLU(),
                         tn.MaxPool2D(2), tn.Flatten(), tn.Dense(4 * 3 * 3, 5))


def torch_cnn(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 5))


def same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def trained(model, rng):
    """Move BatchNorm's running stats and counter away from their initial values."""
    model.forward(rng.standard_normal((3, 2, 6, 6)).astype(model.dtype))
    model.forward(rng.standard_normal((3, 2, 6, 6)).astype(model.dtype))
    return model.eval()


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_save_load_roundtrip(tmp_path, rng, ext):
    model = trained(small_cnn(), rng)
    path = tmp_path / f"m{ext}"
    model.save(path)
    assert os.listdir(tmp_path) == [path.name], "no temp file is left behind"
    other = small_cnn()
    assert other.load(path) is other
    for k, v in model.state_dict().items():
        got = other.state_dict()[k]
        assert got.dtype == v.dtype and got.shape == v.shape, k
        np.testing.assert_array_equal(got, v, err_msg=k)
    assert int(other[1].num_batches_tracked) == 2


def test_format_is_picked_by_extension(tmp_path):
    model = small_cnn()
    model.save(tmp_path / "m.safetensors")
    model.save(tmp_path / "m.npz")
    assert (tmp_path / "m.safetensors").read_bytes()[8:9] == b"{", "a JSON header"
    assert (tmp_path / "m.npz").read_bytes()[:2] == b"PK", "a zip archive"
    model.save(tmp_path / "m.bin")  # another name: .npz, as earlier versions wrote
    assert (tmp_path / "m.bin").read_bytes()[:2] == b"PK"
    os.replace(tmp_path / "m.safetensors", tmp_path / "st.bin")
    for name in ("m.bin", "st.bin"):  # read back by their first bytes
        assert same(small_cnn().load(tmp_path / name), model), name


def test_safetensors_opens_in_torch(tmp_path, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from safetensors.torch import load_file
    model = trained(small_cnn(), rng).to(np.float64)
    path = tmp_path / "m.safetensors"
    model.save(path)
    tmodel = torch_cnn(torch).double()
    tmodel.load_state_dict(load_file(str(path)))
    tmodel.eval()
    x = rng.standard_normal((3, 2, 6, 6))
    assert_close(tmodel(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                 rtol=1e-10, atol=1e-10, what="torch after loading tinynet's safetensors")
    assert int(tmodel[1].num_batches_tracked) == 2


def test_torch_safetensors_opens_in_tinynet(tmp_path, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from safetensors.torch import save_file
    torch.manual_seed(0)
    tmodel = torch_cnn(torch)
    tmodel.train()
    tmodel(torch.randn(4, 2, 6, 6))  # running stats away from their init
    tmodel.eval()
    path = tmp_path / "t.safetensors"
    save_file(tmodel.state_dict(), str(path))
    model = small_cnn().load(path).eval()
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    assert_close(model.forward(x), tmodel(torch.from_numpy(x)).detach().numpy(),
                 rtol=1e-5, atol=1e-5, what="tinynet after loading torch's safetensors")


def test_load_names_the_file_and_key(tmp_path):
    model = small_cnn()
    sd = model.state_dict()
    del sd["1.running_var"]
    write_tensors(tmp_path / "missing.safetensors", sd)
    with pytest.raises(KeyError, match=r"missing\.safetensors.*1\.running_var"):
        small_cnn().load(tmp_path / "missing.safetensors")
    sd = dict(model.state_dict(), **{"5.weight": np.zeros((5, 7), np.float32)})
    write_tensors(tmp_path / "shape.npz", sd)
    with pytest.raises(ValueError, match=r"shape\.npz.*5\.weight"):
        small_cnn().load(tmp_path / "shape.npz")
    sd = dict(model.state_dict(), **{"0.bias": np.zeros(4, np.int32)})
    write_tensors(tmp_path / "dtype.safetensors", sd)
    with pytest.raises(TypeError, match=r"dtype\.safetensors.*0\.bias.*int32"):
        small_cnn().load(tmp_path / "dtype.safetensors")


def test_nan_in_a_checkpoint_is_rejected(tmp_path):
    sd = small_cnn().state_dict()
    sd["5.bias"][2] = np.nan
    write_tensors(tmp_path / "nan.safetensors", sd)
    model = small_cnn()
    before = model.state_dict()
    with pytest.raises(CheckpointError, match=r"nan\.safetensors.*5\.bias.*NaN"):
        model.load(tmp_path / "nan.safetensors")
    for k, v in before.items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)


def test_metadata_roundtrip(tmp_path):
    for ext in (".safetensors", ".npz"):
        path = tmp_path / f"t{ext}"
        write_tensors(path, {"a/b": np.arange(3), "c": np.array(2.5)}, {"k": "v", "n": "3"})
        tensors, meta = read_tensors(path)
        assert meta == {"k": "v", "n": "3"}
        np.testing.assert_array_equal(tensors["a/b"], np.arange(3))
        assert tensors["c"].shape == () and float(tensors["c"]) == 2.5
