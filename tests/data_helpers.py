"""Helpers shared by the tests of :mod:`tripletlab.data` (``tests/test_data_*.py``): IDX bytes
written independently of the reader, digests, one-line error checks, toy image sets and
seeded generators.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
import pytest
import torch

from tripletlab.data import DataError, ImageSet

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """An IDX encoding of ``array`` written independently of the reader."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def toy_set(labels: list[int], classes: int = 10, size: int = 4) -> ImageSet:
    """An ImageSet of (1, size, size) images, image i filled with the value i."""
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, size, size)
    return ImageSet(images.contiguous(), torch.tensor(labels), tuple(map(str, range(classes))))


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
