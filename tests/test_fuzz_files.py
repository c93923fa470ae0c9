"""Property-based tests: random, mutated and forged bytes into the IDX reader and the checkpoint loaders.

Each input either loads exactly what was written, or raises a clear error that
names the file: never a crash, a hang, an unpickle or a silently wrong result.
"""
import gzip
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import given, strategies as st  # noqa: E402

import tinynet as tn  # noqa: E402
from tinynet.data import IDXError, read_idx, write_idx  # noqa: E402
from tinynet.serialization import CheckpointError, read_tensors, write_tensors  # noqa: E402
from tinynet.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def mutate(data, edits, cut):
    """Apply (position fraction, byte) edits, then keep the first `cut` fraction."""
    b = bytearray(data)
    for where, value in edits:
        if b:
            b[int(where * (len(b) - 1))] = value
    return bytes(b[:max(0, int(round(cut * len(b))))])


edits_st = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4)
cut_st = st.one_of(st.just(1.0), st.floats(0, 1))


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@given(data=st.binary(max_size=200))
def test_idx_random_bytes(tmp_path, data):
    path = write_bytes(tmp_path, "random-idx", data)
    try:
        x = read_idx(path)
    except IDXError as e:
        assert str(path) in str(e)
        return
    # it parsed: the header must describe exactly the payload
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4)
    assert x.shape == tuple(int(d) for d in dims)
    assert 4 + 4 * ndim + x.nbytes == len(data)


@given(dtype=st.sampled_from(IDX_DTYPES),
       shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
       gz=st.booleans(), edits=edits_st, cut=cut_st)
def test_idx_mutated_file(tmp_path, dtype, shape, gz, edits, cut):
    x = (np.arange(int(np.prod(shape))) % 100).astype(dtype).reshape(shape)
    clean = tmp_path / ("clean.gz" if gz else "clean")
    write_idx(clean, x)
    data = mutate(clean.read_bytes(), edits, cut)
    path = write_bytes(tmp_path, "mutated.gz" if gz else "mutated", data)
    try:
        y = read_idx(path)
    except IDXError as e:
        assert str(path) in str(e)
        return
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    # whatever parsed is what the (possibly changed) bytes say, nothing else
    assert y.tobytes() == np.frombuffer(raw, y.dtype.newbyteorder(">"),
                                        offset=4 + 4 * y.ndim).astype(y.dtype).tobytes()


@given(dtype=st.sampled_from(["F32", "U8", "F64", "I64", "F128"]),
       shape=st.lists(st.integers(0, 2**40), max_size=3),
       offsets=st.lists(st.integers(-1, 2**40), min_size=0, max_size=3),
       data_len=st.integers(0, 64))
def test_safetensors_forged_header(tmp_path, dtype, shape, offsets, data_len):
    """Whatever sizes the header claims: the tensor it describes, or an error naming the file."""
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}).encode()
    path = write_bytes(tmp_path, "forged.safetensors",
                       len(header).to_bytes(8, "little") + header + bytes(data_len))
    try:
        tensors, _ = read_tensors(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    assert tensors["w"].shape == tuple(shape) and tensors["w"].nbytes == data_len


@given(shape=st.lists(st.integers(0, 2**40), max_size=3),
       descr=st.sampled_from(["<f4", "|u1", "<f8", "|O"]), data_len=st.integers(0, 64),
       compressed=st.booleans())
def test_npz_forged_header(tmp_path, shape, descr, data_len, compressed):
    """An .npy header in an .npz that claims any shape: that array, or an error naming the file."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": tuple(shape)})
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        zf.writestr("w.npy", buf.getvalue() + bytes(data_len))
    try:
        tensors, _ = read_tensors(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    assert tensors["w"].shape == tuple(shape) and tensors["w"].nbytes == data_len


def small_model():
    tn.init.seed(0)
    return tn.Sequential(tn.Dense(3, 4), tn.BatchNorm(4), tn.ReLU(), tn.Dropout(0.2, seed=1),
                         tn.Dense(4, 2))


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]) for k in sa)


def load_or_clear_error(load, path):
    """Call load(); True when it loaded, False for an error that names the file."""
    try:
        load()
    except (CheckpointError, KeyError, ValueError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) else str(e)
        assert str(path) in message, message
        return False
    return True


@given(ext=st.sampled_from([".safetensors", ".npz"]), edits=edits_st, cut=cut_st)
def test_model_file_mutated(tmp_path, ext, edits, cut):
    model = small_model()
    model.forward(np.ones((2, 3), np.float32))
    clean = tmp_path / f"clean{ext}"
    model.save(clean)
    path = write_bytes(tmp_path, f"mutated{ext}", mutate(clean.read_bytes(), edits, cut))
    other = small_model()
    before = other.state_dict()
    if load_or_clear_error(lambda: other.load(path), path):
        assert same_state(other, model), "a file that loads holds exactly what was saved"
    else:
        assert all(np.array_equal(v, other.state_dict()[k]) for k, v in before.items()), \
            "a failed load changes nothing"


@given(ext=st.sampled_from([".safetensors", ".npz"]), data=st.binary(max_size=300))
def test_model_file_random_bytes(tmp_path, ext, data):
    path = write_bytes(tmp_path, f"random{ext}", data)
    assert not load_or_clear_error(lambda: small_model().load(path), path)


@given(ext=st.sampled_from([".safetensors", ".npz"]), edits=edits_st, cut=cut_st)
def test_training_checkpoint_mutated(tmp_path, ext, edits, cut):
    model = small_model()
    opt = tn.optim.Adam(model.parameters())
    x, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    history = tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=1, progress=False)
    clean = tmp_path / f"clean{ext}"
    save_checkpoint(clean, model, opt, 1, history, loader_epoch=1)
    path = write_bytes(tmp_path, f"mutated{ext}", mutate(clean.read_bytes(), edits, cut))
    other = small_model()
    other_opt = tn.optim.Adam(other.parameters())
    result = {}

    def load():
        result["value"] = load_checkpoint(path, other, other_opt)
    if load_or_clear_error(load, path):
        epoch, restored, loader_epoch = result["value"]
        assert same_state(other, model) and other[3].step == model[3].step
        if ext == ".safetensors":  # the sha256 covers the metadata too
            assert (epoch, loader_epoch, restored.records) == (1, 1, history.records)


def structured_cases(model):
    """name -> state dict written to a file, each of which must be refused."""
    sd = model.state_dict()
    nan = dict(sd, **{"0.weight": np.full_like(sd["0.weight"], np.nan)})
    inf = dict(sd, **{"1.running_var": np.full_like(sd["1.running_var"], np.inf)})
    return {
        "wrong dtype": dict(sd, **{"0.weight": sd["0.weight"].astype(np.int64)}),
        "wrong shape": dict(sd, **{"4.bias": np.zeros(3, np.float32)}),
        "NaN": nan,
        "inf": inf,
        "extra key": dict(sd, **{"9.weight": np.zeros(2, np.float32)}),
        "missing key": {k: v for k, v in sd.items() if k != "1.running_mean"},
        "bool for a float": dict(sd, **{"4.bias": np.zeros(2, bool)}),
    }


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
@pytest.mark.parametrize("case", ["wrong dtype", "wrong shape", "NaN", "inf", "extra key",
                                  "missing key", "bool for a float"])
def test_structured_bad_model_files(tmp_path, ext, case):
    model = small_model()
    path = tmp_path / f"bad{ext}"
    write_tensors(path, structured_cases(model)[case])
    other = small_model()
    assert not load_or_clear_error(lambda: other.load(path), path), case
    assert same_state(other, small_model()), "nothing changed"


class Boom:
    """Unpickling this would run code."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_objects_are_never_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sd = small_model().state_dict()
    np.savez(tmp_path / "obj.npz", **dict(sd, **{"0.weight": np.array([Boom()], dtype=object)}))
    (tmp_path / "plain.npz").write_bytes(pickle.dumps(sd | {"x": Boom()}))
    np.save(tmp_path / "single.npy", np.array([Boom()], dtype=object))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps(Boom()))
    for name in ("obj.npz", "plain.npz", "single.npz", "pickle.safetensors"):
        path = tmp_path / name
        assert not load_or_clear_error(lambda: small_model().load(path), path), name
        with pytest.raises(CheckpointError, match=name):
            read_tensors(path)
    assert not (tmp_path / "PWNED").exists()


def test_torch_file_without_digest_still_loads(tmp_path):
    """Files from other writers have no tinynet.sha256 and are read as they are."""
    from safetensors.numpy import save_file
    model = small_model()
    save_file(model.state_dict(), str(tmp_path / "other.safetensors"))
    assert same_state(small_model().load(tmp_path / "other.safetensors"), model)


def checkpoint_cases(tmp_path):
    """name -> (tensors, metadata) of a training checkpoint with one thing wrong."""
    model = small_model()
    opt = tn.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "good.safetensors", model, opt, 1,
                    tn.History([{"epoch": 1}]), loader_epoch=1)
    tensors, meta = read_tensors(tmp_path / "good.safetensors")
    drop = {k: v for k, v in tensors.items() if k != "step/3"}
    return {
        "a model file": (model.state_dict(), {}),
        "bad history JSON": (tensors, dict(meta, history="[{")),
        "epoch not an int": (tensors, dict(meta, epoch="one")),
        "epoch and history disagree": (tensors, dict(meta, epoch="2")),
        "negative loader epoch": (tensors, dict(meta, loader_epoch="-1")),
        "unknown section": (dict(tensors, **{"extra/x": np.zeros(1)}), meta),
        "missing step counter": (drop, meta),
        "float step counter": (dict(tensors, **{"step/3": np.array(2.0)}), meta),
        "missing optimizer moment": ({k: v for k, v in tensors.items()
                                      if k != "optim/0.exp_avg"}, meta),
        "NaN optimizer moment": (dict(tensors, **{"optim/0.exp_avg": np.full((4, 3), np.nan,
                                                                             np.float32)}), meta),
    }


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
@pytest.mark.parametrize("case", ["a model file", "bad history JSON", "epoch not an int",
                                  "epoch and history disagree", "negative loader epoch",
                                  "unknown section", "missing step counter",
                                  "float step counter", "missing optimizer moment",
                                  "NaN optimizer moment"])
def test_structured_bad_training_checkpoints(tmp_path, ext, case):
    tensors, meta = checkpoint_cases(tmp_path)[case]
    path = tmp_path / f"bad{ext}"
    write_tensors(path, tensors, meta)
    model = small_model()
    opt = tn.optim.Adam(model.parameters())
    before = model.state_dict()
    assert not load_or_clear_error(lambda: load_checkpoint(path, model, opt), path), case
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
    assert opt.step_count == 0 and model[3].step == 0
