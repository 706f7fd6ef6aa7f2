"""The IDX file format of LeCun's MNIST page: :func:`read_idx` reads a raw or gzip-compressed
file into a validated array, :func:`read_idx_pair` an MNIST-style images/labels pair.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tripletlab.data.errors import DataError

# IDX type code -> element type (big-endian as stored), from LeCun's MNIST page.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_REPLACE_FIX = "replace it with an intact copy (delete it to have it downloaded again)"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the name)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); fix: check the path") from err
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({err}); fix: {_REPLACE_FIX}"
            ) from err
    return data


def _parse_idx(data: bytes, path: Path) -> npt.NDArray[Any]:
    """Validate IDX bytes and return them as a writable native-endian array of the header's
    dims."""
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated IDX file ({len(data)} bytes, shorter than the 4-byte magic "
            f"number); fix: {_REPLACE_FIX}"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number 0x{data[:4].hex()} must start with two zero "
            f"bytes); fix: {_REPLACE_FIX}"
        )
    code, ndim = data[2], data[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02X} (valid: {valid}); fix: {_REPLACE_FIX}"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; fix: {_REPLACE_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need "
            f"{header}); fix: {_REPLACE_FIX}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated IDX file (header says {dims} of {dtype.name}, {expected} bytes, "
            f"but it holds {len(data)}); fix: {_REPLACE_FIX}"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: {len(data) - expected} unexpected trailing bytes after the {dims} "
            f"{dtype.name} array ({expected} bytes); fix: {_REPLACE_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read an IDX file (raw or gzip-compressed) into a validated array.

    The IDX format (LeCun's MNIST page): two zero bytes, a type code (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one
    big-endian uint32 per dimension, then the elements in C order, big-endian.

    Args:
        path: the file. Compression is detected from the content (the gzip magic number), not
            from the name.

    Returns:
        A writable array in native byte order whose shape is the header's dimensions, e.g.
        (60000, 28, 28) uint8 for MNIST's training images.

    Raises:
        DataError: naming the file if it cannot be read, is corrupt or truncated gzip, has a bad
            magic number, an unknown type code, zero dimensions, or a length that does not
            match its header (truncated, or trailing bytes).
    """
    p = Path(path)
    return _parse_idx(_read_bytes(p), p)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Read an MNIST-style pair: (N, H, W) uint8 images and (N,) uint8 labels.

    Raises:
        DataError: from :func:`read_idx`, or naming the files if the images are not 3-D uint8,
            the labels not 1-D uint8, or their counts differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_pair(images, labels, Path(images_path), Path(labels_path))
    return images, labels


def _check_pair(
    images: npt.NDArray[Any], labels: npt.NDArray[Any], images_path: Path, labels_path: Path
) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected (N, H, W) uint8 images, got {images.dtype} of shape "
            f"{images.shape}; fix: pass the images file of the pair"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected (N,) uint8 labels, got {labels.dtype} of shape "
            f"{labels.shape}; fix: pass the labels file of the pair"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; fix: use the images and labels files of the same split"
        )
