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
leaves that temporary file behind; ``remove_stale_temps`` deletes it. The
file gets the mode a plain ``open(path, "w")`` gives a new file:
0o666 without the bits of the process's umask (0o644 under umask 022).

A safetensors file that tinynet writes carries a sha256 of its tensors and
metadata in its header (``tinynet.sha256``), so a changed byte is an error
on reading; a file from elsewhere has none and is read as it is. An .npz
has a CRC-32 per member, which zipfile checks.

Reads check the sizes a file claims before they allocate anything, so a
hostile or damaged file is an error, never a MemoryError or a huge read:

- .safetensors: the 8-byte header length must fit in the file and be at most
  MAX_SAFETENSORS_HEADER; every tensor's dtype, shape and data_offsets must
  agree (prod(shape) * itemsize == end - begin) and lie inside the file.
- .npz: each member's .npy header is parsed first; prod(shape) * itemsize
  must equal the member's uncompressed size less the header, the member's
  compressed bytes must lie inside the file, and its uncompressed size can be
  at most what its compressed bytes can expand to (stored: equal; deflate:
  MAX_DEFLATE_RATIO times, plus 1 KiB).
- No tensor may exceed MAX_TENSOR_BYTES.

Reads then check everything before returning: the container parses, every
entry is a plain numeric array (no object arrays, so nothing is unpickled,
and no strings outside the metadata), and every floating-point value is
finite (a NaN or inf in a checkpoint is an error, never silently loaded).
Any failure, an OSError while reading included, raises ``CheckpointError``
naming the file.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import IO, Any, BinaryIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["CheckpointError", "write_tensors", "read_tensors", "atomic_write",
           "remove_stale_temps", "temp_pattern", "new_file_mode", "FORMATS",
           "MAX_TENSOR_BYTES", "MAX_SAFETENSORS_HEADER", "MAX_DEFLATE_RATIO"]

FORMATS = (".safetensors", ".npz")
# safetensors metadata key of the sha256 that write_tensors stores (see _digest)
_DIGEST = "tinynet.sha256"
_NPZ_META = "meta/"
# dtype kinds a tensor may have: bool, signed and unsigned int, float
_TENSOR_KINDS = "biuf"

# The largest tensor a file may hold, in bytes (16 GiB): far above any model
# tinynet trains, and a cap on what a forged header can make a read allocate.
MAX_TENSOR_BYTES = 16 * 2**30
# The largest safetensors JSON header, in bytes: the safetensors library's own
# limit (its MAX_HEADER_SIZE).
MAX_SAFETENSORS_HEADER = 100_000_000
# Deflate, the only compression np.savez_compressed uses, expands at most
# 1032:1 (a 258-byte match costs at least 2 bits); a member that claims more
# cannot be what it says.
MAX_DEFLATE_RATIO = 1032
# bytes per element of each safetensors dtype (the format's list)
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                         "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                         "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
_NPY_MAGIC = b"\x93NUMPY"


class CheckpointError(ValueError):
    """A tensor file is unreadable, malformed, or holds a value tinynet rejects."""


def _format(path: str, sniff: bool = False) -> str:
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


def temp_pattern(path: str) -> str:
    """The glob of ``atomic_write(path)``'s temp files; the path's own glob characters
    ([, ], *, ?) are escaped, so a directory named "g[1]" matches itself."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")


def _umask() -> int:
    """The process's umask, read from /proc/self/status where Linux has it.

    Elsewhere it is read by setting it and setting it back, which another
    thread creating a file at that moment would see.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the umask's bits.

    Returns
    -------
    int
        E.g. 0o644 under umask 022, 0o600 under umask 077.
    """
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    The file gets ``new_file_mode()`` (mkstemp creates it 0o600).

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
            try:
                os.fchmod(f.fileno(), new_file_mode())
            except PermissionError:  # a file system without modes (FAT, some network mounts)
                pass
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temps(path: str | os.PathLike[str]) -> list[str]:
    """Delete the temp files a killed ``atomic_write(path, ...)`` left behind.

    Returns
    -------
    list of str
        The paths removed.
    """
    removed = []
    for tmp in glob.glob(temp_pattern(os.fspath(path))):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed


def write_tensors(path: str | os.PathLike[str], tensors: Mapping[str, ArrayLike],
                  metadata: Mapping[str, str] | None = None) -> None:
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
    arrays: dict[str, NDArray[Any]] = {}
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
        # numpy's stub checks **kwds against savez's allow_pickle: bool as well;
        # every key here is a tensor name, never "allow_pickle".
        atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _digest(tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str]) -> str:
    """sha256 over every tensor's key, dtype, shape and bytes, and the other metadata."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.asarray(tensors[key], order="C")
        h.update(json.dumps([key, value.dtype.str, list(value.shape)]).encode())
        h.update(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
    h.update(json.dumps(sorted((k, v) for k, v in metadata.items() if k != _DIGEST)).encode())
    return h.hexdigest()


def _check_safetensors_header(path: str, f: IO[bytes], file_size: int) -> None:
    """Check the header's length, dtypes, shapes and data_offsets against the file size.

    ``f`` is the file open at byte 0. Nothing the header claims is allocated
    before it is checked against ``file_size`` and MAX_TENSOR_BYTES.
    """
    where = f"checkpoint {path!r}"
    if file_size < 8:
        raise CheckpointError(f"{where} is {file_size} bytes, too short for the 8-byte "
                              f"header length of a safetensors file")
    n = int.from_bytes(f.read(8), "little")
    if n > min(file_size - 8, MAX_SAFETENSORS_HEADER):
        raise CheckpointError(f"{where}: the safetensors header length is {n} bytes, but the "
                              f"file holds {file_size - 8} bytes after it (and a header is at "
                              f"most {MAX_SAFETENSORS_HEADER})")
    try:
        header = json.loads(f.read(n))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: the safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the safetensors header is a JSON "
                              f"{type(header).__name__}, expected an object")
    data_size = file_size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        entry = entry if isinstance(entry, dict) else {}
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_ITEMSIZE:
            raise CheckpointError(f"{where}: tensor {key!r} has dtype {dtype!r}, expected one "
                                  f"of {', '.join(_SAFETENSORS_ITEMSIZE)}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: tensor {key!r} has shape {shape!r}, expected a "
                                  f"list of sizes >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise CheckpointError(f"{where}: tensor {key!r} has data_offsets {offsets!r}, "
                                  f"expected [begin, end] with 0 <= begin <= end <= {data_size}, "
                                  f"the bytes of data in the file")
        nbytes = math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype]
        if nbytes != offsets[1] - offsets[0]:
            raise CheckpointError(f"{where}: tensor {key!r} of shape {tuple(shape)} and dtype "
                                  f"{dtype} needs {nbytes} bytes, but its data_offsets "
                                  f"{offsets} span {offsets[1] - offsets[0]}")
        if nbytes > MAX_TENSOR_BYTES:
            raise CheckpointError(f"{where}: tensor {key!r} is {nbytes} bytes, more than "
                                  f"MAX_TENSOR_BYTES = {MAX_TENSOR_BYTES}")


def _read_safetensors(path: str) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    with open(path, "rb") as f:
        _check_safetensors_header(path, f, os.fstat(f.fileno()).st_size)
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


def _npz_key(info: zipfile.ZipInfo) -> str:
    """The entry name of a zip member: its file name less ".npy", as np.load names it."""
    return info.filename.removesuffix(".npy")


def _check_npz_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                      file_size: int) -> None:
    """Check one member's sizes against its .npy header, reading only the header.

    The member's compressed bytes must lie inside the file, its uncompressed
    size must be one its compressed bytes can expand to, and the header's
    prod(shape) * itemsize must be that size less the header, at most
    MAX_TENSOR_BYTES.
    """
    where = f"checkpoint {path!r}: entry {_npz_key(info)!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{where} uses zip compression method {info.compress_type}, "
                              f"expected stored (0) or deflated (8) as np.savez writes")
    if info.header_offset + info.compress_size > file_size:
        raise CheckpointError(f"{where} claims {info.compress_size} compressed bytes at offset "
                              f"{info.header_offset}, past the end of the {file_size}-byte file")
    stored = info.compress_type == zipfile.ZIP_STORED
    limit = info.compress_size if stored else MAX_DEFLATE_RATIO * info.compress_size + 1024
    if info.file_size > limit:
        raise CheckpointError(f"{where} claims {info.file_size} bytes uncompressed from "
                              f"{info.compress_size} compressed, more than "
                              f"{'a stored member holds' if stored else 'deflate can expand to'}")
    with zf.open(info) as m:
        try:
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(m)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(m)
            else:
                raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
        except ValueError as e:
            raise CheckpointError(f"{where} is not a .npy array ({e})") from e
        header = m.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{where} holds a pickled object, which tinynet never loads")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - header:
        raise CheckpointError(f"{where}: its header says shape {shape} of {dtype}, "
                              f"{nbytes} bytes, but the member holds {info.file_size - header}")
    if nbytes > MAX_TENSOR_BYTES:
        raise CheckpointError(f"{where} is {nbytes} bytes, more than "
                              f"MAX_TENSOR_BYTES = {MAX_TENSOR_BYTES}")


def _read_npz(path: str) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
        file_size = os.fstat(f.fileno()).st_size
    if head == _NPY_MAGIC:
        raise CheckpointError(f"checkpoint {path!r} is a single .npy array, "
                              f"not an .npz archive of named arrays")
    if head[:1] == b"\x80":  # the PROTO opcode that starts a pickle
        raise CheckpointError(f"checkpoint {path!r}: it holds a pickled object, "
                              f"which tinynet never loads")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            keys = [_npz_key(info) for info in members]
            if len(set(keys)) < len(keys):
                twice = next(key for i, key in enumerate(keys) if key in keys[:i])
                raise CheckpointError(f"checkpoint {path!r}: entry {twice!r} appears "
                                      f"{keys.count(twice)} times")
            # every header and size is checked before any array is read
            for info in members:
                _check_npz_member(path, zf, info, file_size)
            entries: dict[str, NDArray[Any]] = {}
            for key, info in zip(keys, members):
                with zf.open(info) as m:
                    entries[key] = np.lib.format.read_array(m, allow_pickle=False)
                    m.read()  # to the end, where zipfile checks the CRC-32
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
            NotImplementedError, OverflowError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path!r}: not a valid .npz archive "
                              f"({type(e).__name__}: {e})") from e
    tensors: dict[str, NDArray[Any]] = {}
    metadata: dict[str, str] = {}
    for key, value in entries.items():
        if value.dtype.kind == "U" and value.ndim == 0:
            # metadata; earlier checkpoints stored it without the "meta/" prefix
            metadata[key[len(_NPZ_META):] if key.startswith(_NPZ_META) else key] = str(value)
        elif key.startswith(_NPZ_META):
            raise CheckpointError(f"checkpoint {path!r}: metadata entry {key!r} must be a "
                                  f"0-d string, got dtype {value.dtype} shape {value.shape}")
        else:
            tensors[key] = value
    return tensors, metadata


def read_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    """Read a file written by ``write_tensors`` (or torch's safetensors, or np.savez).

    Every size the file claims is checked against the file's size and
    MAX_TENSOR_BYTES before anything is allocated (see the module docstring).

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
        When the path is a directory or not a regular file, reading it fails
        (an OSError: permission denied, an I/O error), the file does not
        parse, claims sizes it does not hold or above the bounds, holds a
        pickled object or an entry that is not a numeric array, or a float
        value that is NaN or infinite. The message names the file and the
        entry.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"checkpoint {path!r} is not a regular file "
                                  f"(a device, pipe or socket)")
        fmt = _format(path, sniff=True)
        tensors, metadata = _read_safetensors(path) if fmt == ".safetensors" else _read_npz(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from e
    except OSError as e:
        raise CheckpointError(f"checkpoint {path!r} could not be read: "
                              f"{type(e).__name__}: {e}") from e
    for key, value in tensors.items():
        if value.dtype.kind not in _TENSOR_KINDS:
            raise CheckpointError(f"checkpoint {path!r}: {key!r} has dtype {value.dtype}, "
                                  f"expected a bool, integer or float array")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = "NaN" if np.isnan(value).any() else "inf"
            raise CheckpointError(f"checkpoint {path!r}: {key!r} holds {bad}; a checkpoint "
                                  f"with non-finite values is never loaded")
    return tensors, metadata
