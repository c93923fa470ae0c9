"""IDX files: the array format of MNIST and Fashion-MNIST, raw or gzipped.

An IDX file is a 4-byte magic number, one 4-byte dimension per axis, then the
values in C order, all big-endian:

    byte 0, 1   zero
    byte 2      type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte 3      ndim (at least 1)
    then        ndim uint32 sizes, then prod(sizes) values

The reader checks each of these and that the payload holds exactly
prod(sizes) * itemsize bytes. A file that starts with the gzip magic
(1f 8b) is decompressed as it is read, whatever its name.

The file is read as a stream, header first: dims that imply a payload above
MAX_IDX_BYTES are refused before any of it is read, and the payload is read
only up to the size the dims imply, plus one byte to see that the stream
ends there. A gzip bomb (a small .gz that expands to gigabytes) is therefore
never decompressed whole.
Format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).
"""
from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["IDXError", "read_idx", "write_idx", "MAX_IDX_BYTES"]

GZIP_MAGIC = b"\x1f\x8b"
# The largest payload an IDX file may declare, in bytes (1 GiB): MNIST's
# training images are 47 MB; dims that claim more are refused unread.
MAX_IDX_BYTES = 2**30

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """An IDX file is malformed: bad magic, bad dims, wrong length or bad gzip."""


def _read_header(path: str, f: io.BufferedIOBase) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(dims, dtype) from the magic number and dims at the start of the stream ``f``."""
    magic = f.read(4)
    if len(magic) < 4:
        raise IDXError(f"IDX file {path!r}: {len(magic)} bytes, too short for the 4-byte magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise IDXError(f"IDX file {path!r}: bad magic number {magic.hex()}, "
                       f"the first two bytes must be zero")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXError(f"IDX file {path!r}: unknown type code 0x{code:02X}, expected one of {known}")
    if ndim < 1:
        raise IDXError(f"IDX file {path!r}: ndim is 0, expected at least 1")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IDXError(f"IDX file {path!r}: header cut short, {4 + len(sizes)} bytes "
                       f"but {ndim} dims need {4 + 4 * ndim}")
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    return dims, IDX_DTYPES[code]


def _read_stream(path: str, f: io.BufferedIOBase) -> NDArray[Any]:
    """The array in the IDX stream ``f``: header, then exactly the payload it implies."""
    dims, dtype = _read_header(path, f)
    expected = math.prod(dims) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise IDXError(f"IDX file {path!r}: dims {dims} of {dtype.name} claim {expected} bytes, "
                       f"more than MAX_IDX_BYTES = {MAX_IDX_BYTES}")
    payload = f.read(expected)
    if len(payload) < expected:
        raise IDXError(f"IDX file {path!r}: truncated: payload is {len(payload)} bytes, dims {dims} "
                       f"of {dtype.name} need {expected}")
    if f.read(1):
        raise IDXError(f"IDX file {path!r}: trailing bytes: payload is longer than the "
                       f"{expected} bytes dims {dims} of {dtype.name} need")
    x = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return x.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> NDArray[Any]:
    """Read an IDX file, raw or gzip-compressed, into a numpy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip is detected by the magic bytes 1f 8b, not by the name.

    Returns
    -------
    numpy.ndarray
        Shape ``(d0, d1, ...)`` as stored in the header, in native byte order
        (uint8, int8, int16, int32, float32 or float64), writable.

    Raises
    ------
    IDXError
        When the gzip stream is corrupt, the magic number or type code is
        wrong, ndim is 0, the header is cut short, the dims imply more than
        MAX_IDX_BYTES, the payload is not exactly ``prod(dims) * itemsize``
        bytes, or reading fails (an OSError such as a directory given as the
        file). The message names the file.
    FileNotFoundError
        When the file does not exist.
    """
    path = os.fspath(path)
    gz = False
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            if not gz:
                return _read_stream(path, raw)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_stream(path, f)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        what = "corrupt gzip stream" if gz else "could not be read"
        raise IDXError(f"IDX file {path!r}: {what} ({type(e).__name__}: {e})") from e


def write_idx(path: str | os.PathLike[str], array: ArrayLike) -> None:
    """Write an array as an IDX file, gzip-compressed when path ends in ``.gz``.

    The gzip stream uses level 6 (gzip's default) and a zero timestamp, so the
    same array always gives the same bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    array : array_like
        Shape ``(d0, d1, ...)`` with at least one axis and each size below
        2**32; dtype uint8, int8, int16, int32, float32 or float64 (any byte
        order).

    Raises
    ------
    TypeError
        When the dtype has no IDX type code.
    ValueError
        When the array has no axes, more than 255 axes, or a size of 2**32 or more.
    """
    path = os.fspath(path)
    x = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = x.dtype.newbyteorder("=")
    if native not in codes:
        names = ", ".join(dt.newbyteorder("=").name for dt in IDX_DTYPES.values())
        raise TypeError(f"write_idx: array dtype {x.dtype} has no IDX type code, expected one of {names}")
    if not 1 <= x.ndim <= 255:
        raise ValueError(f"write_idx: array has {x.ndim} axes, expected 1 to 255")
    if any(d >= 2**32 for d in x.shape):
        raise ValueError(f"write_idx: shape {x.shape} has a size of 2**32 or more")
    header = bytes([0, 0, codes[native], x.ndim]) + np.array(x.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(x, dtype=native.newbyteorder(">")).tobytes()
    if path.endswith(".gz"):
        with gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) as f:
            f.write(header + payload)
    else:
        with open(path, "wb") as f:
            f.write(header + payload)
