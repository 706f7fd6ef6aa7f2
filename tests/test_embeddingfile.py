"""Tests for tripletlab.embeddingfile: round trip, validation, corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tripletlab.embeddingfile import (
    EmbeddingFile,
    EmbeddingFileError,
    load_embeddings,
    save_embeddings,
)


def _sample(n: int = 5, d: int = 3) -> EmbeddingFile:
    g = torch.Generator().manual_seed(0)
    return EmbeddingFile(
        embeddings=torch.randn(n, d, generator=g),
        labels=torch.tensor([0, 1, -1, 1, 0][:n]),
        ids=tuple(f"test/{i}" for i in range(n)),
        classes=("cat", "dog"),
        meta={"dataset": "digits", "normalized": True},
    )


def test_round_trip(tmp_path: Path) -> None:
    data = _sample()
    path = save_embeddings(tmp_path / "e.npz", data)
    back = load_embeddings(path)
    assert torch.equal(back.embeddings, data.embeddings)
    assert torch.equal(back.labels, data.labels)
    assert back.ids == data.ids and back.classes == data.classes
    assert back.meta == {"format_version": 1, "dataset": "digits", "normalized": True}
    assert len(back) == 5 and back.dim == 3


def test_empty_round_trip(tmp_path: Path) -> None:
    data = EmbeddingFile(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), ())
    back = load_embeddings(save_embeddings(tmp_path / "e.npz", data))
    assert back.embeddings.shape == (0, 4) and back.ids == () and back.classes == ()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embeddings": torch.zeros(2, 3, dtype=torch.float64)}, "float32"),
        ({"embeddings": torch.zeros(2)}, "shape"),
        ({"labels": torch.tensor([0, 5])}, "labels must lie"),
        ({"labels": torch.tensor([0, -2])}, "labels must lie"),
        ({"labels": torch.tensor([0.0, 1.0])}, "int64"),
        ({"ids": ("a",)}, "ids"),
        ({"embeddings": torch.tensor([[float("nan")] * 3, [0.0] * 3])}, "NaN"),
    ],
)
def test_invalid_data_is_rejected(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {
        "embeddings": torch.zeros(2, 3),
        "labels": torch.tensor([0, 1]),
        "ids": ("a", "b"),
        "classes": ("x", "y"),
    }
    base.update(kwargs)
    with pytest.raises(EmbeddingFileError, match=match):
        EmbeddingFile(**base)  # type: ignore[arg-type]


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingFileError, match="tripletlab embed"):
        load_embeddings(tmp_path / "nope.npz")


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = save_embeddings(tmp_path / "e.npz", _sample())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(EmbeddingFileError, match="corrupt"):
        load_embeddings(path)


def test_foreign_npz_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(EmbeddingFileError, match="missing embeddings"):
        load_embeddings(path)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        embeddings=np.zeros((1, 2), np.float32),
        labels=np.zeros(1, np.int64),
        ids=np.array([{"a": 1}], dtype=object),
        classes=np.array(["x"]),
        meta=np.array("{}"),
    )
    with pytest.raises(EmbeddingFileError, match="corrupt"):
        load_embeddings(path)


def test_labels_out_of_range_in_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        embeddings=np.zeros((1, 2), np.float32),
        labels=np.array([3], np.int64),
        ids=np.array(["a"]),
        classes=np.array(["x"]),
        meta=np.array("{}"),
    )
    with pytest.raises(EmbeddingFileError, match=r"bad\.npz"):
        load_embeddings(path)
