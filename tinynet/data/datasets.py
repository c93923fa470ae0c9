"""MNIST and Fashion-MNIST: find the IDX files, download them, verify them.

Each split is two IDX files: images uint8 (N, 28, 28) and labels uint8 (N,),
with N = 60000 for "train" and 10000 for "test". They live in
``<root>/mnist/`` and ``<root>/fashion-mnist/``, raw (``train-images-idx3-ubyte``)
or gzipped (``train-images-idx3-ubyte.gz``). The root is, in this order, the
``root=`` argument, then ``$TINYNET_DATA_DIR``, then ``~/.cache/tinynet``.
A root given by the argument or the variable must exist: a typo is an error,
never a new folder. A root that is itself the dataset's folder (named
``mnist`` or ``fashion-mnist``, with no folder of that name inside) is used
as it is. Only the default root is created when a download needs it.
Fashion-MNIST is also looked for in /usr/share/datasets/fashion-mnist, where
Debian's ``dataset-fashion-mnist`` package installs the four .gz files
(``apt-get install dataset-fashion-mnist``); the not-found error says so.

Missing files are downloaded from several public mirrors in turn, into a
temporary file in the target directory that is renamed into place only after
the sha256 of its decompressed payload matches the table below, so the cache
never holds a partial or wrong file. The file gets the mode a new file gets
under the process's umask (``new_file_mode``), and a payload is hashed only
up to the largest IDX file (MAX_IDX_BYTES), so a gzip bomb from a mirror is
not decompressed whole.

MNIST:          http://yann.lecun.com/exdb/mnist/
Fashion-MNIST:  https://github.com/zalandoresearch/fashion-mnist (arXiv:1708.07747)
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..serialization import new_file_mode
from .idx import MAX_IDX_BYTES, read_idx

__all__ = ["load_mnist", "load_fashion_mnist", "data_root", "dataset_dir", "find_file",
           "DatasetNotFoundError", "DatasetError", "MNIST_MIRRORS", "FASHION_MNIST_MIRRORS",
           "CLASS_NAMES"]

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

# sha256 of the decompressed files (IDX header included)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# Directories searched after the root (read only; downloads never go there)
FASHION_MNIST_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
# The Debian package that installs a data set, and where it puts the files
DEBIAN_PACKAGES = {"fashion-mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")}

# Class names by label, per dataset
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
}

SPLITS = {"train": ("train", 60000), "test": ("t10k", 10000)}
DOWNLOAD_TIMEOUT = 10.0  # seconds per connection attempt


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing and could not be downloaded."""


class DatasetError(ValueError):
    """A dataset file has the wrong contents (hash, shape, count or labels)."""


def data_root(root: str | os.PathLike[str] | None = None) -> str:
    """The data root: ``root``, else ``$TINYNET_DATA_DIR``, else ``~/.cache/tinynet``.

    Parameters
    ----------
    root : str or os.PathLike, optional

    Returns
    -------
    str
        An absolute path (it need not exist yet).
    """
    if root is None:
        root = os.environ.get("TINYNET_DATA_DIR") or os.path.join("~", ".cache", "tinynet")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def dataset_dir(subdir: str, root: str | os.PathLike[str] | None = None) -> str:
    """The folder that holds (or a download fills) one dataset's IDX files.

    It is ``<root>/<subdir>``, or the root itself when the root is named
    ``subdir`` and has no ``subdir`` folder inside (``--data-dir data/mnist``).

    Parameters
    ----------
    subdir : {"mnist", "fashion-mnist"}
    root : str or os.PathLike, optional
        As for ``data_root``.

    Returns
    -------
    str
        An absolute path (it need not exist).

    Raises
    ------
    DatasetNotFoundError
        When the root comes from ``root=`` or ``$TINYNET_DATA_DIR`` and is
        not an existing directory. Nothing is created.
    """
    base = data_root(root)
    explicit = root is not None or os.environ.get("TINYNET_DATA_DIR")
    if explicit and not os.path.isdir(base):
        source = "root=" if root is not None else "$TINYNET_DATA_DIR"
        raise DatasetNotFoundError(f"data dir {base!r} does not exist (from {source}); "
                                   f"nothing was created. Fix the path or create it.")
    inside = os.path.join(base, subdir)
    if os.path.basename(base) == subdir and not os.path.isdir(inside):
        return base
    return inside


def find_file(name: str, dirs: Iterable[str]) -> str | None:
    """Path of ``name`` or ``name.gz`` in the first directory that has one, else None."""
    for d in dirs:
        for candidate in (name, name + ".gz"):
            path = os.path.join(d, candidate)
            if os.path.isfile(path):
                return path
    return None


def _gunzip_sha256(path: str) -> str:
    """sha256 hex digest of the decompressed contents of a gzip file.

    A payload larger than any IDX file may be (MAX_IDX_BYTES plus the
    largest header) is not hashed to its end; the result then says so.
    """
    limit = MAX_IDX_BYTES + 4 + 4 * 255
    h, size = hashlib.sha256(), 0
    with gzip.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            size += len(block)
            if size > limit:
                return f"not computed: the payload is more than {limit} bytes"
            h.update(block)
    return h.hexdigest()


def _download(name: str, target_dir: str, mirrors: Sequence[str],
              sha256: str) -> tuple[str | None, list[str]]:
    """Fetch ``name.gz`` into ``target_dir`` from the first mirror that serves it intact.

    Returns ``(path, failures)``: the final path, or None when no mirror could
    be read, and one line per failed mirror. Raises DatasetError when a mirror
    served a payload with the wrong hash and no other served the right one.
    """
    failures: list[str] = []
    bad_hash: list[str] = []
    final = os.path.join(target_dir, name + ".gz")
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target_dir)
        except OSError as e:
            failures.append(f"cannot write to {target_dir}: {e}")
            break
        try:
            print(f"tinynet: downloading {url}", file=sys.stderr)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
            try:
                digest = _gunzip_sha256(tmp)
            except (OSError, EOFError, zlib.error) as e:
                digest = f"not a valid gzip file ({e})"
            if digest != sha256:
                bad_hash.append(f"{url}: sha256 of the decompressed payload is {digest}, expected {sha256}")
                continue
            try:
                os.chmod(tmp, new_file_mode())  # mkstemp made it 0o600
            except PermissionError:  # a file system without modes (FAT, some network mounts)
                pass
            os.replace(tmp, final)
            return final, failures
        except (OSError, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if bad_hash:
        raise DatasetError(f"{name}: no mirror served a file with the expected hash; "
                           f"nothing was written to {target_dir}.\n  " + "\n  ".join(bad_hash + failures))
    return None, failures


def _check(images: NDArray[np.uint8], labels: NDArray[np.uint8], images_path: str,
           labels_path: str, count: int) -> None:
    """Check dtypes, shapes, counts and label range of one split."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: images have dtype {images.dtype} and shape "
                           f"{images.shape}, expected uint8 (N, 28, 28)")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{labels_path}: labels have dtype {labels.dtype} and shape "
                           f"{labels.shape}, expected uint8 (N,)")
    if len(images) != count or len(labels) != count:
        raise DatasetError(f"{images_path}, {labels_path}: {len(images)} images and "
                           f"{len(labels)} labels, expected {count} of each")
    if labels.max() > 9:
        raise DatasetError(f"{labels_path}: label {int(labels.max())} is out of range 0..9")


def _load(dataset: str, subdir: str, split: str, root: str | os.PathLike[str] | None,
          download: bool, mirrors: Sequence[str], sha256_table: Mapping[str, str],
          extra_dirs: Sequence[str]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Shared body of load_mnist and load_fashion_mnist."""
    if split not in SPLITS:
        raise ValueError(f"load_{dataset}: split must be 'train' or 'test', got {split!r}")
    prefix, count = SPLITS[split]
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    target_dir = dataset_dir(subdir, root)
    search = [target_dir, *extra_dirs]

    paths = {name: find_file(name, search) for name in names}
    failures: list[str] = []
    missing = [name for name in names if paths[name] is None]
    if missing and download:
        try:
            os.makedirs(target_dir, exist_ok=True)
        except OSError as e:
            failures.append(f"cannot create {target_dir}: {e}")
        else:
            for name in missing:
                paths[name], failed = _download(name, target_dir, mirrors, sha256_table[name])
                failures += failed
    missing = [name for name in names if paths[name] is None]
    if missing:
        listed = ", ".join(f"{name}[.gz]" for name in missing)
        if not download:
            why = "Downloading is off (download=False)."
        elif failures:
            why = "Download failed:\n  " + "\n  ".join(failures)
        else:
            why = "No mirrors were given to download from."
        also = f" (also searched {', '.join(extra_dirs)})" if extra_dirs else ""
        package = ""
        if subdir in DEBIAN_PACKAGES:
            name, where = DEBIAN_PACKAGES[subdir]
            package = f" On Debian or Ubuntu, `apt-get install {name}` installs them in {where}."
        # the files may sit in the root itself, in a folder not named like the dataset
        base = data_root(root)
        beside = find_file(missing[0], [base]) if base != target_dir else None
        misplaced = (f" {base} itself holds {os.path.basename(beside)}: move the files into "
                     f"{target_dir}, or name their folder {subdir}/ and pass that." if beside else "")
        raise DatasetNotFoundError(
            f"load_{dataset}({split!r}): missing {listed} in {target_dir}{also}.\n{why}\n"
            f"Put the files (raw IDX or .gz) in {target_dir}, or pass root= or set "
            f"TINYNET_DATA_DIR to a directory that holds {subdir}/.{package}{misplaced}")

    images_path, labels_path = paths[names[0]], paths[names[1]]
    assert images_path is not None and labels_path is not None  # none is missing
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check(images, labels, images_path, labels_path, count)
    return images, labels.astype(np.int64)


def load_mnist(split: str = "train", root: str | os.PathLike[str] | None = None,
               download: bool = True, mirrors: Sequence[str] | None = None
               ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load an MNIST split, downloading it into the data root when it is missing.

    Parameters
    ----------
    split : {"train", "test"}
        "train" has 60000 images, "test" 10000.
    root : str or os.PathLike, optional
        Data root; the files are in ``<root>/mnist/``, or in the root itself
        when it is named ``mnist`` (see ``dataset_dir``). Defaults to
        ``$TINYNET_DATA_DIR``, then ``~/.cache/tinynet``. A root given here
        or by the variable must exist; only the default one is created.
    download : bool
        Download missing files from the mirrors.
    mirrors : sequence of str, optional
        Base URLs tried in order (any scheme urllib opens, file:// included).
        Defaults to ``MNIST_MIRRORS``.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(N, 28, 28)``, values 0..255.
    labels : numpy.ndarray
        int64 ``(N,)``, values 0..9.

    Raises
    ------
    ValueError
        When split is not "train" or "test".
    DatasetNotFoundError
        When files are missing and could not be downloaded; the message lists
        them and the directory to put them in. Also when ``root`` (or
        ``$TINYNET_DATA_DIR``) does not exist: "data dir '...' does not exist".
    DatasetError
        When a download has the wrong sha256, or a file has the wrong shape,
        count or labels.
    IDXError
        When a file is not valid IDX.
    """
    return _load("mnist", "mnist", split, root, download,
                 MNIST_MIRRORS if mirrors is None else mirrors, MNIST_SHA256, ())


def load_fashion_mnist(split: str = "train", root: str | os.PathLike[str] | None = None,
                       download: bool = True, mirrors: Sequence[str] | None = None
                       ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load a Fashion-MNIST split, downloading it into the data root when it is missing.

    The files are looked for in ``<root>/fashion-mnist/``, then in
    ``FASHION_MNIST_SYSTEM_DIRS`` (Debian's /usr/share/datasets/fashion-mnist).
    Downloads are checked against the sha256 of the decompressed upstream
    files: these equal the payloads in Debian's package (whose .gz wrappers
    differ from upstream's only in the gzip header).

    Parameters
    ----------
    split : {"train", "test"}
        "train" has 60000 images, "test" 10000.
    root : str or os.PathLike, optional
        Data root; the files are in ``<root>/fashion-mnist/``, or in the
        root itself when it is named ``fashion-mnist``. Defaults to
        ``$TINYNET_DATA_DIR``, then ``~/.cache/tinynet``; as for ``load_mnist``,
        a root given here or by the variable must exist.
    download : bool
        Download missing files from the mirrors.
    mirrors : sequence of str, optional
        Base URLs tried in order. Defaults to ``FASHION_MNIST_MIRRORS``.

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(N, 28, 28)``, values 0..255.
    labels : numpy.ndarray
        int64 ``(N,)``, values 0..9 (T-shirt/top, Trouser, Pullover, Dress,
        Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

    Raises
    ------
    ValueError, DatasetNotFoundError, DatasetError, IDXError
        As for ``load_mnist``.
    """
    return _load("fashion_mnist", "fashion-mnist", split, root, download,
                 FASHION_MNIST_MIRRORS if mirrors is None else mirrors,
                 FASHION_MNIST_SHA256, FASHION_MNIST_SYSTEM_DIRS)
