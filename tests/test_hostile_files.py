"""Hostile and damaged files: sizes are checked before anything is allocated, every
read error names the file, written files follow the umask.

Covers tinynet.serialization (.npz and .safetensors checkpoints), the value range
check of load_state_dict (tinynet.state) and the IDX reader (tinynet.data.idx).
"""
import gzip
import io
import json
import os
import stat
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import tinynet as tn
import tinynet.data.idx as idx
import tinynet.serialization as serialization
from conftest import REPO
from tinynet.data import IDXError, read_idx, write_idx
from tinynet.serialization import CheckpointError, read_tensors, write_tensors

MiB = 2**20


def small_model():
    tn.init.seed(0)
    return tn.Sequential(tn.Dense(3, 4), tn.BatchNorm(4), tn.Dense(4, 2))


def npy(shape, descr="<f4", data=b""):
    """The bytes of a .npy file whose header says ``shape`` and ``descr``, then ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + data


def zip_file(path, members, compression=zipfile.ZIP_STORED):
    """Write ``members`` (name -> bytes) as a zip archive at ``path``."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def patch_central_directory(path, compressed=None, uncompressed=None):
    """Overwrite the sizes that the first central-directory record claims."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # central directory file header: sizes at +20, +24
    if compressed is not None:
        data[at + 20:at + 24] = compressed.to_bytes(4, "little")
    if uncompressed is not None:
        data[at + 24:at + 28] = uncompressed.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def peak_bytes(fn):
    """(exception raised by fn, peak bytes Python and numpy allocated meanwhile)."""
    tracemalloc.start()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (the caller checks it)
        error = e
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# -- .npz: sizes checked before anything is read -------------------------------------

def test_npz_header_claiming_4_tib_is_refused_without_allocating(tmp_path):
    path = zip_file(tmp_path / "huge.npz", {"w.npy": npy((2**40,), data=bytes(16))})
    error, peak = peak_bytes(lambda: read_tensors(path))
    assert isinstance(error, CheckpointError), repr(error)
    message = str(error)
    assert str(path) in message and "entry 'w'" in message
    assert "shape (1099511627776,) of float32, 4398046511104 bytes" in message
    assert "the member holds 16" in message
    assert peak < 16 * MiB


@pytest.mark.parametrize("compression, words", [
    (zipfile.ZIP_STORED, "more than a stored member holds"),
    (zipfile.ZIP_DEFLATED, "more than deflate can expand to"),
])
def test_npz_member_claiming_more_than_its_bytes_hold(tmp_path, compression, words):
    """The .npy header and the zip agree on 2 GiB, but the compressed bytes cannot hold it."""
    member = npy((2**31,), descr="|u1", data=bytes(64))
    path = zip_file(tmp_path / "claims.npz", {"w.npy": member}, compression)
    header = len(npy((2**31,), descr="|u1"))
    patch_central_directory(path, uncompressed=header + 2**31)
    error, peak = peak_bytes(lambda: read_tensors(path))
    assert isinstance(error, CheckpointError), repr(error)
    assert str(path) in str(error) and "entry 'w'" in str(error)
    assert f"claims {header + 2**31} bytes uncompressed" in str(error) and words in str(error)
    assert peak < 16 * MiB


def test_npz_compressed_bytes_past_the_end_of_the_file(tmp_path):
    path = zip_file(tmp_path / "past.npz", {"w.npy": npy((4,), data=bytes(16))},
                    zipfile.ZIP_DEFLATED)
    patch_central_directory(path, compressed=2**31)
    with pytest.raises(CheckpointError, match=r"past\.npz.*entry 'w' claims 2147483648 "
                                              r"compressed bytes at offset 0, past the end"):
        read_tensors(path)


def test_npz_member_above_max_tensor_bytes(tmp_path, monkeypatch):
    write_tensors(tmp_path / "big.npz", {"w": np.zeros(1000, np.float32)})
    read_tensors(tmp_path / "big.npz")
    monkeypatch.setattr(serialization, "MAX_TENSOR_BYTES", 3999)
    with pytest.raises(CheckpointError, match=r"big\.npz.*entry 'w' is 4000 bytes, more than "
                                              r"MAX_TENSOR_BYTES = 3999"):
        read_tensors(tmp_path / "big.npz")


def test_npz_compressed_zeros_still_load(tmp_path):
    """savez_compressed of zeros reaches deflate's ~1030:1; that is no forgery."""
    x = np.zeros(2 * MiB, np.float64)
    np.savez_compressed(tmp_path / "zeros.npz", w=x)
    info = zipfile.ZipFile(tmp_path / "zeros.npz").infolist()[0]
    assert info.file_size > 1000 * info.compress_size
    tensors, _ = read_tensors(tmp_path / "zeros.npz")
    np.testing.assert_array_equal(tensors["w"], x)


def test_npz_other_compression_and_duplicates_are_refused(tmp_path):
    path = zip_file(tmp_path / "bz.npz", {"w.npy": npy((4,), data=bytes(16))}, zipfile.ZIP_BZIP2)
    with pytest.raises(CheckpointError, match=r"bz\.npz.*entry 'w' uses zip compression "
                                              r"method 12, expected stored \(0\) or deflated"):
        read_tensors(path)
    path = tmp_path / "dup.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        zip_file(path, {"w.npy": npy((1,), data=bytes(4))})
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("w.npy", npy((2,), data=bytes(8)))
    with pytest.raises(CheckpointError, match=r"dup\.npz': entry 'w' appears 2 times"):
        read_tensors(path)


def test_npz_member_that_is_not_npy(tmp_path):
    path = zip_file(tmp_path / "text.npz", {"notes.txt": b"hello"})
    with pytest.raises(CheckpointError, match=r"text\.npz.*entry 'notes\.txt' is not a \.npy "
                                              r"array"):
        read_tensors(path)


# -- .safetensors: header checked before the library runs ----------------------------

def safetensors_bytes(header, data=b"", length=None):
    """A safetensors file: 8-byte header length (or ``length``), JSON header, data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(text) if length is None else length
    return n.to_bytes(8, "little") + text + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("contents, words", [
    (b"\x01\x02", "is 2 bytes, too short for the 8-byte header length"),
    (safetensors_bytes({"w": F32}, bytes(8), length=10**6),
     "header length is 1000000 bytes, but the file holds"),
    (safetensors_bytes({"w": F32}, bytes(8), length=2**63),
     f"header length is {2**63} bytes"),
    (safetensors_bytes(b"{not json"), "header is not valid JSON"),
    (safetensors_bytes(b"[" * 100000 + b"]" * 100000), "header is not valid JSON"),
    (safetensors_bytes([1, 2]), "header is a JSON list, expected an object"),
    (safetensors_bytes({"w": dict(F32, dtype="F128")}, bytes(8)), "tensor 'w' has dtype 'F128'"),
    (safetensors_bytes({"w": dict(F32, shape=[-2])}, bytes(8)), "tensor 'w' has shape [-2]"),
    (safetensors_bytes({"w": dict(F32, shape=[2.0])}, bytes(8)), "tensor 'w' has shape [2.0]"),
    (safetensors_bytes({"w": "F32"}, bytes(8)), "tensor 'w' has dtype None"),
    (safetensors_bytes({"w": dict(F32, data_offsets=[0, 2**40])}, bytes(8)),
     ("tensor 'w' has data_offsets [0, 1099511627776], expected [begin, end] with "
      "0 <= begin <= end <= 8")),
    (safetensors_bytes({"w": dict(F32, data_offsets=[8, 0])}, bytes(8)),
     "tensor 'w' has data_offsets [8, 0]"),
    (safetensors_bytes({"w": dict(F32, shape=[2**40])}, bytes(8)),
     ("tensor 'w' of shape (1099511627776,) and dtype F32 needs 4398046511104 bytes, but its "
      "data_offsets [0, 8] span 8")),
])
def test_hostile_safetensors_header(tmp_path, monkeypatch, contents, words):
    import safetensors

    def never(*args, **kwargs):
        raise AssertionError("safetensors was called before the header was checked")
    monkeypatch.setattr(safetensors, "safe_open", never)
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(contents)
    error, peak = peak_bytes(lambda: read_tensors(path))
    assert isinstance(error, CheckpointError), repr(error)
    assert str(path) in str(error) and words in str(error)
    assert peak < 64 * MiB


def test_safetensors_tensor_above_max_tensor_bytes(tmp_path, monkeypatch):
    write_tensors(tmp_path / "big.safetensors", {"w": np.zeros(1000, np.float32)})
    monkeypatch.setattr(serialization, "MAX_TENSOR_BYTES", 3999)
    with pytest.raises(CheckpointError, match=r"big\.safetensors.*tensor 'w' is 4000 bytes, "
                                              r"more than MAX_TENSOR_BYTES = 3999"):
        read_tensors(tmp_path / "big.safetensors")


# -- read errors become CheckpointError naming the file --------------------------------

def test_npz_with_a_byte_missing_names_the_file(tmp_path):
    write_tensors(tmp_path / "good.npz", small_model().state_dict())
    data = (tmp_path / "good.npz").read_bytes()
    path = tmp_path / "short.npz"
    path.write_bytes(data[:4] + data[5:])  # zipfile seeks before the start: an OSError
    with pytest.raises(CheckpointError, match=r"checkpoint '.*short\.npz' could not be read: "
                                              r"OSError"):
        read_tensors(path)
    with pytest.raises(CheckpointError, match=r"short\.npz"):
        small_model().load(path)


@pytest.mark.parametrize("name", ["dir.npz", "dir.safetensors", "dir"])
def test_a_directory_is_not_a_checkpoint(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(CheckpointError, match=rf"checkpoint '.*{name}' is a directory, not a file"):
        read_tensors(tmp_path / name)


def test_a_fifo_is_not_a_checkpoint(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(CheckpointError, match=r"pipe\.npz' is not a regular file"):
        read_tensors(tmp_path / "pipe.npz")


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nope\.npz' does not exist"):
        read_tensors(tmp_path / "nope.npz")


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_permission_denied_names_the_file(tmp_path, monkeypatch, ext):
    path = tmp_path / f"locked{ext}"
    write_tensors(path, small_model().state_dict())

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(file))
    monkeypatch.setattr(serialization, "open", denied, raising=False)
    with pytest.raises(CheckpointError, match=rf"locked{ext}' could not be read: "
                                              r"PermissionError"):
        read_tensors(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_permission_denied_by_the_file_mode(tmp_path):
    path = tmp_path / "locked.npz"
    write_tensors(path, small_model().state_dict())
    path.chmod(0)
    with pytest.raises(CheckpointError, match=r"locked\.npz' could not be read: PermissionError"):
        read_tensors(path)


# -- float64 values that overflow float32 ---------------------------------------------

def test_value_that_overflows_float32_is_refused_by_name():
    model = small_model()
    before = model.state_dict()
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in before.items()}
    state["2.bias"][1] = 1e300
    state["0.weight"][0, 0] = 123.0  # a good value before it: still nothing written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning either
        with pytest.raises(ValueError) as e:
            model.load_state_dict(state)
    assert str(e.value) == "load_state_dict: key '2.bias' holds 1e+300, which overflows float32"
    for k, v in before.items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)


def test_values_within_float32_range_load():
    model = small_model()
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v
             for k, v in model.state_dict().items()}
    fmax = float(np.finfo(np.float32).max)
    state["2.bias"][:] = [fmax, -3e38]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_state_dict(state)
    np.testing.assert_array_equal(model[2].bias.data, np.array([fmax, -3e38], np.float32))


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_overflowing_file_names_the_file_and_key(tmp_path, ext):
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v
             for k, v in small_model().state_dict().items()}
    state["1.running_var"][2] = -1e39
    write_tensors(tmp_path / f"big{ext}", state)
    with pytest.raises(ValueError, match=rf"big{ext}: load_state_dict: key '1\.running_var' "
                                         r"holds -1e\+39, which overflows float32"):
        small_model().load(tmp_path / f"big{ext}")


# -- written files follow the umask ----------------------------------------------------

UMASK_SCRIPT = """
import os, sys
import numpy as np
import tinynet.serialization as s
os.umask(int(sys.argv[1], 8))
d = sys.argv[2]
s.write_tensors(os.path.join(d, "m.npz"), {"w": np.zeros(2)})
s.write_tensors(os.path.join(d, "m.safetensors"), {"w": np.zeros(2)})
s.atomic_write(os.path.join(d, "t.json"), lambda f: f.write(b"{}"))
modes = [oct(os.stat(os.path.join(d, n)).st_mode & 0o777) for n in ("m.npz", "m.safetensors", "t.json")]
via_proc = s.new_file_mode()
def no_proc(*args, **kwargs):
    raise OSError("no /proc")
s.open = no_proc  # the fallback: set the umask and set it back
via_umask = s.new_file_mode()
print(modes, oct(via_proc), oct(via_umask), oct(os.umask(0)))
"""


@pytest.mark.parametrize("umask, mode", [("022", "0o644"), ("077", "0o600"), ("002", "0o664")])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    out = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, umask, str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    assert out == [f"['{mode}',", f"'{mode}',", f"'{mode}']", mode, mode, oct(int(umask, 8))]


def test_write_leaves_this_process_umask_alone(tmp_path):
    old = os.umask(0o027)
    try:
        write_tensors(tmp_path / "m.npz", {"w": np.zeros(2)})
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640


# -- IDX: the header is read first, the body only as far as it says ---------------------

def idx_header(dims, code=0x08):
    return bytes([0, 0, code, len(dims)]) + np.array(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_claiming_too_much_is_refused_unread(tmp_path, gz):
    data = idx_header((60000, 60000, 28)) + bytes(100)
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(data) if gz else data)
    error, peak = peak_bytes(lambda: read_idx(path))
    assert isinstance(error, IDXError), repr(error)
    assert str(path) in str(error)
    assert (f"dims (60000, 60000, 28) of uint8 claim {60000 * 60000 * 28} bytes, "
            f"more than MAX_IDX_BYTES = {2**30}") in str(error)
    assert peak < MiB


def test_idx_payload_beyond_a_lowered_bound(tmp_path, monkeypatch):
    path = tmp_path / "x-idx3-ubyte.gz"
    write_idx(path, np.zeros((64, 128, 128), np.uint8))  # 1 MiB of zeros, 1 KiB of gzip
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", MiB - 1)
    with pytest.raises(IDXError, match=r"claim 1048576 bytes, more than MAX_IDX_BYTES = 1048575"):
        read_idx(path)
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", MiB)
    assert read_idx(path).shape == (64, 128, 128)


def test_idx_gzip_bomb_is_not_decompressed_whole(tmp_path):
    """3 GiB of zeros in 3 MB: gzip members of 1 MiB each, the first holding a small IDX."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    zeros = gzip.compress(bytes(MiB), 9)
    with open(path, "wb") as f:
        f.write(gzip.compress(idx_header((10,)) + bytes(10)))
        for _ in range(3 * 1024):
            f.write(zeros)
    assert path.stat().st_size < 4 * MiB
    start = time.perf_counter()
    error, peak = peak_bytes(lambda: read_idx(path))
    assert isinstance(error, IDXError), repr(error)
    assert str(path) in str(error)
    assert "trailing bytes: payload is longer than the 10 bytes dims (10,) of uint8 need" in str(error)
    assert peak < 8 * MiB and time.perf_counter() - start < 5


def test_idx_trailing_data_inside_gzip(tmp_path):
    path = tmp_path / "long.gz"
    path.write_bytes(gzip.compress(idx_header((2, 3)) + bytes(6) + b"extra"))
    with pytest.raises(IDXError, match=r"long\.gz': trailing bytes: payload is longer than "
                                       r"the 6 bytes dims \(2, 3\) of uint8 need"):
        read_idx(path)


@pytest.mark.parametrize("tail", [b"garbage", b"\x1f\x8bnot a gzip member"])
def test_idx_garbage_after_the_gzip_member(tmp_path, tail):
    path = tmp_path / "tail.gz"
    path.write_bytes(gzip.compress(idx_header((2, 3)) + bytes(6)) + tail)
    with pytest.raises(IDXError, match=r"tail\.gz': corrupt gzip stream \(BadGzipFile"):
        read_idx(path)


def test_idx_not_gzip_after_the_magic(tmp_path):
    path = tmp_path / "fake.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(30))
    with pytest.raises(IDXError, match=r"fake\.gz': corrupt gzip stream"):
        read_idx(path)


def test_idx_read_errors_name_the_file(tmp_path, monkeypatch):
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(IDXError, match=r"a-dir': could not be read \(IsADirectoryError"):
        read_idx(tmp_path / "a-dir")
    write_idx(tmp_path / "x.gz", np.zeros(5, np.uint8))

    def failing_read(self, size=-1):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(gzip.GzipFile, "read", failing_read)
    with pytest.raises(IDXError, match=r"x\.gz': corrupt gzip stream \(OSError: .*Input/output"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


def test_stale_temps_are_found_under_a_directory_with_glob_characters(tmp_path):
    from tinynet.serialization import remove_stale_temps
    directory = tmp_path / "g[1]*?"
    directory.mkdir()
    stale = directory / ".ckpt.safetensors.abc123.tmp"
    stale.write_bytes(b"partial")
    assert remove_stale_temps(directory / "ckpt.safetensors") == [str(stale)]
    assert not stale.exists()
