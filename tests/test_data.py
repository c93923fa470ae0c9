"""IDX reader/writer, MNIST / Fashion-MNIST loading and download, DataLoader, augmentations."""
import gzip
import hashlib
import os
import stat

import numpy as np
import pytest
from conftest import REPO

import tinynet as tn
import tinynet.data.datasets as datasets
from tinynet.data import (IDXError, read_idx, write_idx, load_mnist, load_fashion_mnist,
                          DatasetNotFoundError, DatasetError, DataLoader, RandomShift,
                          Cutout, prepare_images, NORMALIZATION)

REAL_MNIST_DIR = os.path.join(REPO, "..", "shared", "data", "mnist")
REAL_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
TEST_NAMES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


# -- IDX ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, rng, dtype, suffix):
    x = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"x.idx{suffix}"
    write_idx(path, x)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == (suffix == ".gz")
    y = read_idx(path)
    assert y.dtype == dtype and y.dtype.isnative and y.shape == x.shape
    assert y.flags.writeable
    np.testing.assert_array_equal(y, x)


def test_idx_header_layout(tmp_path):
    write_idx(tmp_path / "a", np.arange(6, dtype=np.int16).reshape(2, 3))
    data = (tmp_path / "a").read_bytes()
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert data[4:12] == bytes([0, 0, 0, 2, 0, 0, 0, 3])
    assert data[12:16] == bytes([0, 0, 0, 1])  # big-endian 0, 1


def test_idx_big_endian_input_and_1d(tmp_path):
    x = np.arange(7, dtype=">i4")
    write_idx(tmp_path / "a", x)
    y = read_idx(tmp_path / "a")
    assert y.dtype == np.int32 and y.dtype.isnative
    np.testing.assert_array_equal(y, np.arange(7))


def test_idx_gzip_is_detected_by_magic_not_name(tmp_path):
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", x)
    os.rename(tmp_path / "a.gz", tmp_path / "plain-name")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), x)
    write_idx(tmp_path / "raw", x)
    os.rename(tmp_path / "raw", tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), x)


def _raw_idx(tmp_path):
    path = tmp_path / "x-idx2-ubyte"
    write_idx(path, np.arange(20, dtype=np.uint8).reshape(4, 5))
    return path, bytearray(path.read_bytes())


@pytest.mark.parametrize("edit, words", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:1] + b"\x07" + b[2:], "magic"),
    (lambda b: b[:2] + b"\x0a" + b[3:], "type code 0x0A"),
    (lambda b: b[:3] + b"\x00" + b[4:], "ndim"),
    (lambda b: b[:3] + b"\x09" + b[4:], "header"),
    (lambda b: b[:3], "too short"),
    (lambda b: b"", "too short"),
])
def test_idx_malformed_raises_naming_file(tmp_path, edit, words):
    path, data = _raw_idx(tmp_path)
    path.write_bytes(bytes(edit(data)))
    with pytest.raises(IDXError, match=words) as e:
        read_idx(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_idx_truncated_payload_inside_gzip(tmp_path):
    path, data = _raw_idx(tmp_path)
    gz = tmp_path / "short.gz"
    gz.write_bytes(gzip.compress(bytes(data[:-3])))
    with pytest.raises(IDXError, match="truncated") as e:
        read_idx(gz)
    assert str(gz) in str(e.value)


@pytest.mark.parametrize("damage", ["cut", "flip", "crc"])
def test_idx_corrupt_gzip_raises_naming_file(tmp_path, damage):
    x = np.arange(4000, dtype=np.int32)
    path = tmp_path / "x.idx.gz"
    write_idx(path, x)
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "flip":
        for i in range(12, len(data) - 8):
            data[i] ^= 0xFF
    else:
        data[-8] ^= 0xFF  # the CRC32 of the trailer
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match="gzip") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_idx_missing_file():
    with pytest.raises(FileNotFoundError):
        read_idx("/nonexistent/dir/file-idx1-ubyte")


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="write_idx.*int64"):
        write_idx(tmp_path / "a", np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError, match="write_idx.*0 axes"):
        write_idx(tmp_path / "a", np.array(3, dtype=np.uint8))


# -- MNIST / Fashion-MNIST files ---------------------------------------------

def _split_arrays(n):
    """Synthetic split: image i has pixel (i % 28, 5) = i % 256, label i % 10."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[np.arange(n), np.arange(n) % 28, 5] = np.arange(n) % 256
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def _write_split(directory, prefix="t10k", n=10000, gz=True):
    os.makedirs(directory, exist_ok=True)
    images, labels = _split_arrays(n)
    ext = ".gz" if gz else ""
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}"), images)
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
    return images, labels


def _payload_sha256(path):
    with gzip.open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Keep a host's /usr/share/datasets out of the Fashion-MNIST tests."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIRS", ())


def test_load_mnist_from_root(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYNET_DATA_DIR", raising=False)
    images, labels = _write_split(tmp_path / "mnist", gz=False)
    x, y = load_mnist("test", root=tmp_path, download=False)
    assert x.dtype == np.uint8 and x.shape == (10000, 28, 28)
    assert y.dtype == np.int64 and y.shape == (10000,)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_from_env(tmp_path, monkeypatch):
    images, _ = _write_split(tmp_path / "envroot" / "mnist")
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path / "envroot"))
    x, _ = load_mnist("test", download=False)
    np.testing.assert_array_equal(x, images)


def test_root_argument_wins_over_env(tmp_path, monkeypatch):
    _write_split(tmp_path / "envroot" / "mnist")
    _write_split(tmp_path / "argroot" / "mnist")
    write_idx(tmp_path / "argroot" / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path / "envroot"))
    x, _ = load_mnist("test", root=tmp_path / "argroot", download=False)
    assert x.max() == 0
    x_env, _ = load_mnist("test", download=False)
    assert x_env.max() > 0


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYNET_DATA_DIR", raising=False)
    assert datasets.data_root() == str(tmp_path / "home" / ".cache" / "tinynet")
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path / "env"))
    assert datasets.data_root() == str(tmp_path / "env")
    assert datasets.data_root(tmp_path / "arg") == str(tmp_path / "arg")


def test_load_mnist_rejects_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_mnist("valid", root=tmp_path, download=False)


def test_load_mnist_checks_counts(tmp_path):
    _write_split(tmp_path / "mnist", n=9999)
    with pytest.raises(DatasetError, match="expected 10000"):
        load_mnist("test", root=tmp_path, download=False)


def test_load_mnist_checks_label_range(tmp_path):
    _write_split(tmp_path / "mnist")
    labels = np.full(10000, 10, dtype=np.uint8)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, labels)
    with pytest.raises(DatasetError, match="label 10") as e:
        load_mnist("test", root=tmp_path, download=False)
    assert str(path) in str(e.value)


def test_load_mnist_checks_image_shape(tmp_path):
    _write_split(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 27, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"\(N, 28, 28\)"):
        load_mnist("test", root=tmp_path, download=False)


def test_missing_files_without_download(tmp_path):
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", _split_arrays(10000)[1])
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist("test", root=tmp_path, download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels" not in msg
    assert str(tmp_path / "mnist") in msg
    assert "TINYNET_DATA_DIR" in msg and "root=" in msg and "download=False" in msg


def _mirror(tmp_path, prefix="t10k", n=10000):
    """A file:// mirror holding a synthetic split, and the sha256 table for it."""
    directory = tmp_path / "mirror"
    images, labels = _write_split(directory, prefix, n)
    table = {f"{prefix}-{kind}": _payload_sha256(directory / f"{prefix}-{kind}.gz")
             for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    return directory.as_uri() + "/", table, images, labels


def test_download_from_file_mirror(tmp_path, monkeypatch):
    url, table, images, labels = _mirror(tmp_path)
    for name, digest in table.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, name, digest)
    root = tmp_path / "cache"
    root.mkdir()
    missing = "file://" + str(tmp_path / "nowhere") + "/"
    x, y = load_mnist("test", root=root, mirrors=[missing, url])
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert sorted(os.listdir(root / "mnist")) == sorted(n + ".gz" for n in TEST_NAMES)
    for name in TEST_NAMES:
        assert _payload_sha256(root / "mnist" / (name + ".gz")) == table[name]
    # a second load reads the cache and needs no mirror
    x2, _ = load_mnist("test", root=root, mirrors=[])
    np.testing.assert_array_equal(x2, images)


def test_download_wrong_hash_leaves_no_file(tmp_path):
    url, _, _, _ = _mirror(tmp_path)
    root = tmp_path / "cache"
    root.mkdir()
    with pytest.raises(DatasetError, match="sha256") as e:
        load_mnist("test", root=root, mirrors=[url])
    assert datasets.MNIST_SHA256["t10k-images-idx3-ubyte"] in str(e.value)
    assert os.listdir(root / "mnist") == []


def test_download_not_gzip_is_a_hash_error(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in TEST_NAMES:
        (mirror / (name + ".gz")).write_bytes(b"<html>not found</html>")
    (tmp_path / "cache").mkdir()
    with pytest.raises(DatasetError, match="not a valid gzip"):
        load_mnist("test", root=tmp_path / "cache", mirrors=[mirror.as_uri() + "/"])
    assert os.listdir(tmp_path / "cache" / "mnist") == []


def test_download_skips_a_bad_mirror(tmp_path, monkeypatch):
    url, table, images, _ = _mirror(tmp_path)
    for name, digest in table.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, name, digest)
    bad = tmp_path / "bad"
    _write_split(bad, n=10)
    (tmp_path / "cache").mkdir()
    x, _ = load_mnist("test", root=tmp_path / "cache", mirrors=[bad.as_uri() + "/", url])
    np.testing.assert_array_equal(x, images)


def test_all_mirrors_unreachable(tmp_path):
    mirrors = ["file://" + str(tmp_path / "nowhere") + "/", "http://127.0.0.1:9/mnist/"]
    root = tmp_path / "cache"
    root.mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist("test", root=root, mirrors=mirrors)
    msg = str(e.value)
    for name in TEST_NAMES:
        assert name in msg
    assert str(root / "mnist") in msg
    assert "TINYNET_DATA_DIR" in msg and "root=" in msg
    assert "127.0.0.1:9" in msg
    assert os.listdir(root / "mnist") == []


def test_default_mirrors_are_tried_in_order(tmp_path, monkeypatch):
    tried = []

    def fake_urlopen(url, timeout):
        tried.append(url)
        raise OSError("offline")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DatasetNotFoundError):
        load_mnist("train", root=tmp_path)
    expected = [m + n + ".gz" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
                for m in datasets.MNIST_MIRRORS]
    assert tried == expected
    assert len(datasets.MNIST_MIRRORS) >= 2


def test_fashion_mnist_from_root(tmp_path, no_system_dirs):
    images, labels = _write_split(tmp_path / "fashion-mnist", "train", 60000, gz=False)
    x, y = load_fashion_mnist("train", root=tmp_path, download=False)
    assert x.shape == (60000, 28, 28) and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_fashion_mnist_from_system_dir(tmp_path, monkeypatch):
    images, _ = _write_split(tmp_path / "usr-share")
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "usr-share"),))
    (tmp_path / "empty").mkdir()
    x, _ = load_fashion_mnist("test", root=tmp_path / "empty", download=False)
    np.testing.assert_array_equal(x, images)
    # the root is searched first
    own, _ = _write_split(tmp_path / "root" / "fashion-mnist")
    write_idx(tmp_path / "root" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", own * 0)
    x, _ = load_fashion_mnist("test", root=tmp_path / "root", download=False)
    assert x.max() == 0


def test_fashion_mnist_download_and_missing(tmp_path, monkeypatch, no_system_dirs):
    url, table, images, _ = _mirror(tmp_path)
    (tmp_path / "cache").mkdir()
    with pytest.raises(DatasetError, match="sha256"):
        load_fashion_mnist("test", root=tmp_path / "cache", mirrors=[url])
    for name, digest in table.items():
        monkeypatch.setitem(datasets.FASHION_MNIST_SHA256, name, digest)
    x, _ = load_fashion_mnist("test", root=tmp_path / "cache", mirrors=[url])
    np.testing.assert_array_equal(x, images)
    assert sorted(os.listdir(tmp_path / "cache" / "fashion-mnist")) == sorted(n + ".gz" for n in TEST_NAMES)
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist") as err:
        load_fashion_mnist("train", root=tmp_path / "cache", download=False)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist("train", root=tmp_path / "cache", download=False)
    assert "apt-get" not in str(err.value), "no Debian package holds MNIST"


# -- data directories are not invented ---------------------------------------------

@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize("download", [False, True])
def test_missing_root_argument_is_an_error_and_creates_nothing(tmp_path, monkeypatch, loader,
                                                               download):
    monkeypatch.delenv("TINYNET_DATA_DIR", raising=False)
    typo = tmp_path / "dta" / "sub"
    with pytest.raises(DatasetNotFoundError) as e:
        loader("test", root=typo, download=download, mirrors=[(tmp_path / "m").as_uri() + "/"])
    assert isinstance(e.value, FileNotFoundError)
    assert str(e.value).startswith(f"data dir '{typo}' does not exist (from root=)")
    assert os.listdir(tmp_path) == [], "nothing was created"


def test_missing_env_root_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYNET_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError,
                       match=r"data dir '.*typo' does not exist \(from \$TINYNET_DATA_DIR\)"):
        load_mnist("test")
    assert os.listdir(tmp_path) == []


def test_missing_root_is_an_error_even_with_the_system_dir(tmp_path, monkeypatch):
    _write_split(tmp_path / "usr-share")
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "usr-share"),))
    with pytest.raises(DatasetNotFoundError, match=r"data dir '.*typo' does not exist"):
        load_fashion_mnist("test", root=tmp_path / "typo", download=False)


@pytest.mark.parametrize("download", [False, True])
def test_root_that_is_the_dataset_folder_is_used_as_is(tmp_path, download, no_system_dirs):
    images, _ = _write_split(tmp_path / "mnist")
    x, _ = load_mnist("test", root=tmp_path / "mnist", download=download, mirrors=[])
    np.testing.assert_array_equal(x, images)
    assert not (tmp_path / "mnist" / "mnist").exists()
    assert datasets.dataset_dir("mnist", tmp_path / "mnist") == str(tmp_path / "mnist")
    assert datasets.dataset_dir("mnist", tmp_path) == str(tmp_path / "mnist")
    # a folder named like the dataset inside it wins: <root>/mnist/mnist
    (tmp_path / "mnist" / "mnist").mkdir()
    assert datasets.dataset_dir("mnist", tmp_path / "mnist") == str(tmp_path / "mnist" / "mnist")
    # another dataset's name is never taken for this one's folder
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path / "mnist", download=False)


def test_files_in_a_root_of_another_name_get_a_hint(tmp_path, no_system_dirs):
    _write_split(tmp_path / "digits")
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist("test", root=tmp_path / "digits", download=False)
    assert (f"{tmp_path / 'digits'} itself holds t10k-images-idx3-ubyte.gz: move the files into "
            f"{tmp_path / 'digits' / 'mnist'}, or name their folder mnist/") in str(e.value)


def test_default_root_is_created_for_a_download(tmp_path, monkeypatch):
    url, table, images, _ = _mirror(tmp_path)
    for name, digest in table.items():
        monkeypatch.setitem(datasets.MNIST_SHA256, name, digest)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYNET_DATA_DIR", raising=False)
    x, _ = load_mnist("test", mirrors=[url])
    np.testing.assert_array_equal(x, images)
    cache = tmp_path / "home" / ".cache" / "tinynet" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(n + ".gz" for n in TEST_NAMES)
    umask = os.umask(0)
    os.umask(umask)
    for name in TEST_NAMES:  # a downloaded file follows the umask, not mkstemp's 0o600
        assert stat.S_IMODE(os.stat(cache / (name + ".gz")).st_mode) == 0o666 & ~umask


def test_download_hash_stops_at_the_largest_idx_size(tmp_path, monkeypatch):
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(bytes(5000)))
    monkeypatch.setattr(datasets, "MAX_IDX_BYTES", 1000)
    assert datasets._gunzip_sha256(path) == (f"not computed: the payload is more than "
                                             f"{1000 + 4 + 4 * 255} bytes")
    monkeypatch.setattr(datasets, "MAX_IDX_BYTES", 5000)
    assert datasets._gunzip_sha256(path) == hashlib.sha256(bytes(5000)).hexdigest()


def test_hash_tables_cover_every_file():
    names = {f"{p}-{k}" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")}
    for table in (datasets.MNIST_SHA256, datasets.FASHION_MNIST_SHA256):
        assert set(table) == names
        assert all(len(v) == 64 and int(v, 16) >= 0 for v in table.values())


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST_DIR), reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_real_mnist_test_split():
    x, y = load_mnist("test", root=os.path.join(REAL_MNIST_DIR, ".."), download=False)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert x.max() == 255 and 30 < x.mean() < 40
    path = os.path.join(REAL_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")
    assert _payload_sha256(path) == datasets.MNIST_SHA256["t10k-labels-idx1-ubyte"]


def test_public_api():
    assert tn.data.load_mnist is load_mnist and tn.data.load_fashion_mnist is load_fashion_mnist
    assert issubclass(IDXError, ValueError) and issubclass(DatasetNotFoundError, FileNotFoundError)


# -- DataLoader -----------------------------------------------------------------

def _xy(n=10):
    x = np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 3), np.float32)
    y = np.arange(n)
    return x, y


@pytest.mark.parametrize("n, bs, drop_last, sizes", [
    (10, 3, False, [3, 3, 3, 1]),
    (10, 3, True, [3, 3, 3]),
    (9, 3, False, [3, 3, 3]),
    (9, 3, True, [3, 3, 3]),
    (2, 5, False, [2]),
    (2, 5, True, []),
])
def test_loader_batch_count(n, bs, drop_last, sizes):
    x, y = _xy(n)
    loader = DataLoader(x, y, batch_size=bs, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(xb) for xb, _ in loader] == sizes


def test_loader_in_order_without_shuffle():
    x, y = _xy(10)
    loader = DataLoader(x, y, batch_size=4)
    for _ in range(2):
        ys = np.concatenate([yb for _, yb in loader])
        np.testing.assert_array_equal(ys, y)


def test_loader_shuffle_visits_each_sample_once():
    x, y = _xy(23)
    loader = DataLoader(x, y, batch_size=4, shuffle=True, seed=3)
    for _ in range(3):
        xs, ys = zip(*loader)
        xs, ys = np.concatenate(xs), np.concatenate(ys)
        np.testing.assert_array_equal(np.sort(ys), y)
        np.testing.assert_array_equal(xs[:, 0], ys)  # pairs stay together


def _orders(loader, epochs):
    return [np.concatenate([yb for _, yb in loader]) for _ in range(epochs)]


def test_loader_shuffle_reproducible_and_new_each_epoch():
    x, y = _xy(50)
    a = _orders(DataLoader(x, y, batch_size=7, shuffle=True, seed=11), 3)
    b = _orders(DataLoader(x, y, batch_size=7, shuffle=True, seed=11), 3)
    c = _orders(DataLoader(x, y, batch_size=7, shuffle=True, seed=12), 1)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], y)


def test_loader_epoch_counter_replays():
    x, y = _xy(30)
    loader = DataLoader(x, y, batch_size=30, shuffle=True, seed=5)
    first = _orders(loader, 2)
    assert loader.epoch == 2
    loader.epoch = 1
    np.testing.assert_array_equal(_orders(loader, 1)[0], first[1])


def test_loader_applies_augment():
    x, y = _xy(8)
    calls = []

    def augment(xb, rng):
        calls.append(isinstance(rng, np.random.Generator))
        return xb + 100

    loader = DataLoader(x, y, batch_size=3, augment=augment)
    xs = np.concatenate([xb for xb, _ in loader])
    assert calls == [True, True, True]
    np.testing.assert_array_equal(xs, x + 100)
    np.testing.assert_array_equal(x, _xy(8)[0])


def test_loader_validates_arguments():
    x, y = _xy(6)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(x, y, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        DataLoader(x, y, batch_size=2.0)
    with pytest.raises(ValueError, match=r"len\(x\) = 6 but len\(y\) = 5"):
        DataLoader(x, y[:5])
    with pytest.raises(ValueError, match="empty"):
        DataLoader(x[:0], y[:0])
    with pytest.raises(TypeError, match="augment must be callable"):
        DataLoader(x, y, augment="shift")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        DataLoader(x, y, seed=-1)


# -- augmentations ----------------------------------------------------------------

def _shifted(img, dy, dx):
    """Reference shift of (..., H, W): out[r, c] = img[r - dy, c - dx], zero outside."""
    out = np.zeros_like(img)
    H, W = img.shape[-2:]
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        img[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


@pytest.mark.parametrize("shape", [(40, 7, 9), (40, 2, 7, 9)])
def test_random_shift_moves_pixels(shape):
    k = 2
    x = np.random.default_rng(0).integers(1, 256, size=shape).astype(np.uint8)
    before = x.copy()
    out = RandomShift(k)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(x, before)
    seen = set()
    for n in range(len(x)):
        matches = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)
                   if np.array_equal(out[n], _shifted(x[n], dy, dx))]
        assert len(matches) == 1, f"image {n} is not a single shift within {k}"
        seen.add(matches[0])
    assert len(seen) > 5


def test_random_shift_zero_is_identity_and_validates():
    x = np.random.default_rng(0).standard_normal((3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(RandomShift(0)(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="RandomShift: max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match=r"RandomShift: x must be \(N, H, W\)"):
        RandomShift(1)(np.zeros((4, 5)), np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(200, 9, 11), (200, 3, 9, 11)])
def test_cutout_zeros_a_square(shape):
    size = 4
    x = np.ones(shape, dtype=np.float32)
    out = Cutout(size)(x, np.random.default_rng(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.all(x == 1)
    full = clipped = 0
    for n in range(len(x)):
        masks = out[n] == 0
        if out.ndim == 4:
            assert all(np.array_equal(masks[0], m) for m in masks)  # same square in every channel
            masks = masks[0]
        rows, cols = np.nonzero(masks)
        assert len(rows) > 0
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert masks[r0:r1, c0:c1].all() and masks.sum() == (r1 - r0) * (c1 - c0)
        assert r1 - r0 <= size and c1 - c0 <= size
        if (r1 - r0, c1 - c0) == (size, size):
            full += 1
        else:
            assert r0 == 0 or r1 == shape[-2] or c0 == 0 or c1 == shape[-1]
            clipped += 1
    assert full > 0 and clipped > 0


def test_cutout_validates():
    with pytest.raises(ValueError, match="Cutout: size must be >= 1"):
        Cutout(0)
    with pytest.raises(TypeError, match="Cutout: size must be an int"):
        Cutout(2.5)


def test_augment_inside_loader_keeps_shapes():
    x = prepare_images(_split_arrays(10)[0])
    loader = DataLoader(x, np.arange(10), batch_size=4, shuffle=True, seed=0, augment=RandomShift(2))
    assert [xb.shape for xb, _ in loader] == [(4, 1, 28, 28), (4, 1, 28, 28), (2, 1, 28, 28)]


# -- prepare_images -------------------------------------------------------------------

def test_prepare_images():
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1] = 255
    images[2, 4, 6] = 51
    x = prepare_images(images)
    assert x.dtype == np.float32 and x.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(x[0], -0.1307 / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[1], (1 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[2, 0, 4, 6], (0.2 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_array_equal(prepare_images(images, dataset="mnist"), x)
    flat = prepare_images(images, mean=0.5, std=0.5, flatten=True)
    assert flat.dtype == np.float32 and flat.shape == (3, 784)
    np.testing.assert_allclose(flat[1], 1.0)
    np.testing.assert_allclose(flat[2, 4 * 28 + 6], 0.2 * 2 - 1, rtol=1e-6)


def test_prepare_images_validates():
    with pytest.raises(TypeError, match="prepare_images: images must be uint8"):
        prepare_images(np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"prepare_images: images must be \(N, H, W\)"):
        prepare_images(np.zeros((2, 1, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="std must be > 0"):
        prepare_images(np.zeros((2, 28, 28), dtype=np.uint8), std=0)


def test_prepare_images_per_dataset():
    images = np.array([[[0, 51], [255, 0]]], dtype=np.uint8)  # pixel 51 is 0.2
    mean, std = NORMALIZATION["fashion-mnist"]
    x = prepare_images(images, dataset="fashion-mnist")
    np.testing.assert_allclose(x[0, 0, 0], [-0.2860 / 0.3530, (0.2 - 0.2860) / 0.3530], rtol=1e-6)
    assert (mean, std) == (0.2860, 0.3530) and NORMALIZATION["mnist"] == (0.1307, 0.3081)
    # an explicit mean or std wins over the dataset's
    np.testing.assert_allclose(prepare_images(images, mean=0.0, dataset="fashion-mnist")[0, 0, 0],
                               [0.0, 0.2 / 0.3530], rtol=1e-6)
    np.testing.assert_allclose(prepare_images(images, std=1.0, dataset="fashion-mnist")[0, 0, 0],
                               [-0.2860, 0.2 - 0.2860], rtol=1e-6)
    with pytest.raises(ValueError, match="prepare_images: dataset must be one of 'mnist', "
                                         "'fashion-mnist' or None, got 'cifar'"):
        prepare_images(images, dataset="cifar")
    assert tn.data.NORMALIZATION is NORMALIZATION


@pytest.mark.parametrize("dataset, loader, directory", [
    ("mnist", load_mnist, REAL_MNIST_DIR),
    ("fashion-mnist", load_fashion_mnist, REAL_FASHION_DIR),
])
def test_normalization_is_each_training_sets_statistics(dataset, loader, directory):
    if not os.path.isfile(os.path.join(directory, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"the real {dataset} training images are not in {directory}")
    x, _ = loader("train", root=directory, download=False)
    pixels = x.astype(np.float64) / 255
    mean, std = NORMALIZATION[dataset]
    assert (round(pixels.mean(), 4), round(pixels.std(), 4)) == (mean, std)
