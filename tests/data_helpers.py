"""Helpers shared by the tests of :mod:`tripletlab.data` (``tests/test_data_*.py``): IDX bytes
written independently of the reader, digests, one-line error checks, toy image sets,
seeded generators and a tiny In-Shop folder to train and evaluate on.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from tripletlab.data import ImageSet

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


E = TypeVar("E", bound=BaseException)


def one_line_error(excinfo: pytest.ExceptionInfo[E]) -> str:
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


@dataclass(frozen=True)
class InShopReplica:
    """What :func:`inshop_replica` wrote: its folder and the images of each split."""

    root: Path
    train: int
    query: int
    gallery: int


def inshop_replica(
    root: Path, *, train_items: int = 6, test_items: int = 4, images: int = 5
) -> InShopReplica:
    """A tiny In-Shop folder as distributed (``list_eval_partition.txt``: a count, a header,
    then ``image_name item_id evaluation_status``; the images under ``img/``): ``train_items``
    items of ``images`` train images each, then ``test_items`` items of 2 query and
    ``images - 2`` gallery images each. Each item is one colour with seeded noise per image
    (16 x 16 RGB PNG files), so items are told apart by colour."""
    g = np.random.default_rng(0)
    lines: list[str] = []
    for item in range(train_items + test_items):
        colour = g.integers(0, 256, 3)
        for i in range(images):
            status = "train" if item < train_items else "query" if i < 2 else "gallery"
            name = f"img/WOMEN/Tees/id_{item:08d}/{i:02d}_{i + 1}_front.png"
            pixels = np.clip(colour + g.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name)
            lines.append(f"{name} id_{item:08d} {status}")
    header = [str(len(lines)), "image_name item_id evaluation_status"]
    (root / "list_eval_partition.txt").write_text("\n".join([*header, *lines]) + "\n")
    return InShopReplica(root, train_items * images, 2 * test_items, (images - 2) * test_items)


class CountCalls(TorchFunctionMode):
    """Counts the torch functions called inside ``with CountCalls() as mode:`` (``mode.calls``),
    to check that a batched function makes as many calls for any batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))
