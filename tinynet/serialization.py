"""Tensor files: safetensors and .npz, written atomically, read without unpickling.

A file holds named arrays (tensors) and string metadata. The format is
picked by the extension (any other name is .npz, as in earlier versions, and
is recognized by its first bytes when read):

- ``.safetensors``: the safetensors format (https://github.com/huggingface/safetensors),
  which torch, JAX and NumPy all read: an 8-byte header length, a JSON header
  (dtypes, shapes, offsets and a ``__metadata__`` dict of strings), then the
  raw little-endian bytes. ``safetensors.torch.load_file`` opens it directly.
- ``.npz``: NumPy's zip of .npy files, read with ``allow_pickle=False``;
  metadata entries are 0-d unicode arrays under ``meta/<key>``.

Writes go to a temporary file beside the target (``.<name>.<random>.tmp``),
flushed to disk and renamed over the target, so the target always holds
either the old or the new complete file. A process killed during the write
leaves that temporary file behind; ``remove_stale_temps`` deletes it.

A safetensors file that tinynet writes carries a sha256 of its tensors and
metadata in its header (``tinynet.sha256``), so a changed byte is an error
on reading; a file from elsewhere has none and is read as it is. An .npz
has a CRC-32 per member, which zipfile checks.

Reads check everything before returning: the container parses, every entry is
a plain numeric array (no object arrays, so nothing is unpickled, and no
strings outside the metadata), and every floating-point value is finite (a
NaN or inf in a checkpoint is an error, never silently loaded). Any failure
raises ``CheckpointError`` naming the file.
"""
import glob
import hashlib
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "write_tensors", "read_tensors", "atomic_write",
           "remove_stale_temps", "FORMATS"]

FORMATS = (".safetensors", ".npz")
# safetensors metadata key of the sha256 that write_tensors stores (see _digest)
_DIGEST = "tinynet.sha256"
_NPZ_META = "meta/"
# dtype kinds a tensor may have: bool, signed and unsigned int, float
_TENSOR_KINDS = "biuf"


class CheckpointError(ValueError):
    """A tensor file is unreadable, malformed, or holds a value tinynet rejects."""


def _format(path, sniff=False):
    """The file's format (one of FORMATS) from its extension.

    Any other name is .npz, the format of earlier versions; with ``sniff``
    (reading) an existing file of another name is recognized by its first
    bytes instead: "PK" (a zip archive) is .npz, anything else safetensors.
    """
    for ext in FORMATS:
        if path.endswith(ext):
            return ext
    if sniff and os.path.isfile(path):
        with open(path, "rb") as f:
            return ".npz" if f.read(2) == b"PK" else ".safetensors"
    return ".npz"


def _temp_pattern(path):
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.*.tmp")


def atomic_write(path, write):
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The target; its directory is created when missing.
    write : callable
        ``write(f)`` with ``f`` a binary file object.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temps(path):
    """Delete the temp files a killed ``atomic_write(path, ...)`` left behind.

    Returns
    -------
    list of str
        The paths removed.
    """
    removed = []
    for tmp in glob.glob(_temp_pattern(os.fspath(path))):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed


def write_tensors(path, tensors, metadata=None):
    """Write ``tensors`` and string ``metadata`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.safetensors`` or ``.npz``; any other name gets .npz.
    tensors : dict of str -> numpy.ndarray
        Numeric arrays of any shape, 0-d included.
    metadata : dict of str -> str, optional
    """
    path = os.fspath(path)
    fmt = _format(path)
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    arrays = {}
    for key, value in tensors.items():
        value = np.asarray(value, order="C")  # ascontiguousarray would make 0-d arrays 1-d
        if value.dtype.kind not in _TENSOR_KINDS:
            raise TypeError(f"write_tensors({path!r}): {key!r} has dtype {value.dtype}, "
                            f"expected a bool, integer or float array")
        arrays[key] = value
    if fmt == ".safetensors":
        from safetensors.numpy import save
        metadata[_DIGEST] = _digest(arrays, metadata)
        payload = save(arrays, metadata=metadata)
        atomic_write(path, lambda f: f.write(payload))
    else:
        arrays.update({_NPZ_META + k: np.array(v) for k, v in metadata.items()})
        atomic_write(path, lambda f: np.savez(f, **arrays))


def _digest(tensors, metadata):
    """sha256 over every tensor's key, dtype, shape and bytes, and the other metadata."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.asarray(tensors[key], order="C")
        h.update(json.dumps([key, value.dtype.str, list(value.shape)]).encode())
        h.update(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
    h.update(json.dumps(sorted((k, v) for k, v in metadata.items() if k != _DIGEST)).encode())
    return h.hexdigest()


def _read_safetensors(path):
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r} is not a valid safetensors file: {e}") from e
    expected = metadata.pop(_DIGEST, None)
    if expected is not None and expected != _digest(tensors, metadata):
        raise CheckpointError(f"checkpoint {path!r} is corrupt: its contents do not match the "
                              f"sha256 that tinynet stored when it wrote the file")
    return tensors, metadata


def _read_npz(path):
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise CheckpointError(f"checkpoint {path!r} is a single .npy array, "
                                  f"not an .npz archive of named arrays")
        with f:
            entries = {key: f[key] for key in f.files}
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as e:
        if isinstance(e, CheckpointError):
            raise
        why = ("it holds a pickled object, which tinynet never loads"
               if "pickle" in str(e) else f"not a valid .npz archive ({type(e).__name__}: {e})")
        raise CheckpointError(f"checkpoint {path!r}: {why}") from e
    tensors, metadata = {}, {}
    for key, value in entries.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"checkpoint {path!r}: entry {key!r} is not a .npy array")
        if value.dtype.kind == "U" and value.ndim == 0:
            # metadata; earlier checkpoints stored it without the "meta/" prefix
            metadata[key[len(_NPZ_META):] if key.startswith(_NPZ_META) else key] = str(value)
        elif key.startswith(_NPZ_META):
            raise CheckpointError(f"checkpoint {path!r}: metadata entry {key!r} must be a "
                                  f"0-d string, got dtype {value.dtype} shape {value.shape}")
        else:
            tensors[key] = value
    return tensors, metadata


def read_tensors(path):
    """Read a file written by ``write_tensors`` (or torch's safetensors, or np.savez).

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.safetensors`` or ``.npz``; a file of another name is
        recognized by its first bytes.

    Returns
    -------
    (tensors, metadata) : (dict of str -> numpy.ndarray, dict of str -> str)

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    CheckpointError
        When the file does not parse, holds a pickled object or an entry that
        is not a numeric array, or a float value that is NaN or infinite. The
        message names the file and the entry.
    """
    path = os.fspath(path)
    fmt = _format(path, sniff=True)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    tensors, metadata = _read_safetensors(path) if fmt == ".safetensors" else _read_npz(path)
    for key, value in tensors.items():
        if value.dtype.kind not in _TENSOR_KINDS:
            raise CheckpointError(f"checkpoint {path!r}: {key!r} has dtype {value.dtype}, "
                                  f"expected a bool, integer or float array")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = "NaN" if np.isnan(value).any() else "inf"
            raise CheckpointError(f"checkpoint {path!r}: {key!r} holds {bad}; a checkpoint "
                                  f"with non-finite values is never loaded")
    return tensors, metadata
