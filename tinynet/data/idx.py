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
(1f 8b) is decompressed first, whatever its name.
Format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).
"""
import gzip
import math
import os
import zlib

import numpy as np

__all__ = ["IDXError", "read_idx", "write_idx"]

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """An IDX file is malformed: bad magic, bad dims, wrong length or bad gzip."""


def _read_bytes(path):
    """The file's bytes, decompressed when they start with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"IDX file {path!r}: corrupt gzip stream ({e})") from e


def read_idx(path):
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
        wrong, ndim is 0, the header is cut short, or the payload is not
        exactly ``prod(dims) * itemsize`` bytes. The message names the file.
    FileNotFoundError
        When the file does not exist.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"IDX file {path!r}: {len(data)} bytes, too short for the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"IDX file {path!r}: bad magic number {data[:4].hex()}, "
                       f"the first two bytes must be zero")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IDXError(f"IDX file {path!r}: unknown type code 0x{code:02X}, expected one of {known}")
    if ndim < 1:
        raise IDXError(f"IDX file {path!r}: ndim is 0, expected at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"IDX file {path!r}: header cut short, {len(data)} bytes "
                       f"but {ndim} dims need {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        what = "truncated" if payload < expected else "trailing bytes"
        raise IDXError(f"IDX file {path!r}: {what}: payload is {payload} bytes, dims {dims} "
                       f"of {dtype.name} need {expected}")
    x = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return x.astype(dtype.newbyteorder("="))


def write_idx(path, array):
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
