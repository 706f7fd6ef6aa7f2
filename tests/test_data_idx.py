"""Tests for tripletlab.data.idx: IDX reading and validation."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_helpers import IDX_CODES, idx_bytes, one_line_error

from tripletlab.data import DataError, read_idx, read_idx_pair


def write_idx(path: Path, array: np.ndarray[Any, Any], *, gz: bool = False) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


_SHAPES = [(7,), (3, 5), (4, 3, 2)]


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: np.dtype[Any], gz: bool) -> None:
    rng = np.random.default_rng(0)
    for shape in _SHAPES:
        if dtype.kind == "f":
            array = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        path = write_idx(tmp_path / f"a{len(shape)}{'.gz' if gz else ''}", array, gz=gz)
        out = read_idx(path)
        assert out.shape == shape
        assert out.dtype == dtype  # native byte order
        assert out.flags.writeable
        np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_content(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_idx(tmp_path / "no-suffix", array, gz=True)
    np.testing.assert_array_equal(read_idx(str(path)), array)


def test_read_idx_empty_dimension(tmp_path: Path) -> None:
    array = np.zeros((0, 28, 28), dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "empty", array)).shape == (0, 28, 28)


def _corrupt(kind: str) -> bytes:
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    corruptions: dict[str, Callable[[], bytes]] = {
        "bad_magic": lambda: b"\x01\x00" + good[2:],
        "unknown_dtype": lambda: good[:2] + b"\x0a" + good[3:],
        "zero_dims": lambda: b"\x00\x00\x08\x00",
        "short_magic": lambda: b"\x00\x00",
        "truncated_header": lambda: good[:9],
        "truncated": lambda: good[:-1],
        "trailing": lambda: good + b"\x00\x00\x00",
        "truncated_gzip": lambda: gzip.compress(good)[:-12],
        "corrupt_gzip": lambda: b"\x1f\x8b" + b"\xff" * 30,
    }
    return corruptions[kind]()


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("bad_magic", "magic"),
        ("unknown_dtype", "type code 0x0A"),
        ("zero_dims", "0 dimensions"),
        ("short_magic", "truncated"),
        ("truncated_header", "truncated IDX header"),
        ("truncated", "truncated IDX file"),
        ("trailing", "3 unexpected trailing bytes"),
        ("truncated_gzip", "gzip"),
        ("corrupt_gzip", "gzip"),
    ],
)
def test_read_idx_corruption(tmp_path: Path, kind: str, words: str) -> None:
    path = tmp_path / f"{kind}-idx3-ubyte.gz"
    path.write_bytes(_corrupt(kind))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    message = one_line_error(excinfo)
    assert str(path) in message
    assert words in message
    assert "fix:" in message


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_read_idx_pair_count_mismatch(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbl", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        read_idx_pair(images, labels)
    message = one_line_error(excinfo)
    assert str(images) in message and str(labels) in message
    assert "5 images" in message and "4 labels" in message


def test_read_idx_pair_wrong_kinds(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbl", np.zeros(5, dtype=np.int32))
    with pytest.raises(DataError, match="labels"):
        read_idx_pair(images, labels)
    with pytest.raises(DataError, match="images"):
        read_idx_pair(labels, labels)
    out_images, out_labels = read_idx_pair(images, write_idx(tmp_path / "l8", np.ones(5, np.uint8)))
    assert out_images.shape == (5, 2, 2) and out_labels.shape == (5,)
