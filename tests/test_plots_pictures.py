"""All the pictures of a run (tripletlab.plots.pictures): the full set in order with progress,
what the data cannot show left out; bad input fails at once with one clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from plots_helpers import (
    NAN,
    SET,
    E,
    assert_one_clear_line,
    assert_png,
    digits_fixture,  # noqa: F401 - the digits fixture
    embed,
    history,
    read_tsv,
)

from tripletlab.data import ImageSet, Splits
from tripletlab.plots import write_pictures


def test_write_pictures_writes_the_full_set(digits: Splits, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    out = write_pictures(
        tmp_path / "pictures",
        test=digits.test,
        test_embeddings=embed(digits.test.images[:]),
        train=digits.train,
        train_embeddings=embed(digits.train.images[:]),
        history=history(),
        threshold=0.6,
        max_points=150,
        k=5,
        num_queries=4,
        progress=lambda name, done, total: calls.append((name, done, total)),
    )
    pictures = [
        "learning_curves",
        "embedding_train_pca",
        "embedding_test_pca",
        "embedding_train_tsne",
        "embedding_test_tsne",
        "neighbors_random",
        "neighbors_worst",
        "distances",
    ]
    projector = ["projector_tensors", "projector_metadata", "projector_sprite", "projector_config"]
    assert list(out) == pictures + projector
    for name in pictures:
        assert out[name] == tmp_path / "pictures" / f"{name}.png"
        assert_png(out[name])
    meta = read_tsv(out["projector_metadata"])
    assert (
        len(read_tsv(out["projector_tensors"]))
        == len(meta) - 1
        == len(digits.train) + len(digits.test)
    )
    assert {row[2] for row in meta[1:]} == {"train", "test"}
    total = len(pictures) + 1
    assert [c[1] for c in calls] == list(range(total + 1))
    assert {c[2] for c in calls} == {total} and calls[-1][0] == "done"


def test_write_pictures_leaves_out_what_the_data_cannot_show(tmp_path: Path) -> None:
    images = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 2:5, 2:5] = torch.arange(6, dtype=torch.uint8)[:, None, None, None] * 40
    one_class = ImageSet(images, torch.zeros(6, dtype=torch.long), ("a", "b"))
    out = write_pictures(
        tmp_path, test=one_class, test_embeddings=torch.randn(6, 3), k=2, projector=False
    )
    assert "distances" not in out and "neighbors_random" in out
    singletons = ImageSet(images, torch.arange(6), tuple("abcdef"))
    out = write_pictures(
        tmp_path, test=singletons, test_embeddings=torch.randn(6, 3), k=2, projector=False
    )
    assert "neighbors_worst" not in out and "distances" not in out


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "train without embeddings": (
        lambda p: write_pictures(p, test=SET, test_embeddings=E, train=SET),
        "train_embeddings",
    ),
    "pictures with NaN": (lambda p: write_pictures(p, test=SET, test_embeddings=NAN), "NaN"),
    "pictures with k too large": (
        lambda p: write_pictures(p, test=SET, test_embeddings=E, k=20),
        "k=20",
    ),
    "pictures of the wrong length": (
        lambda p: write_pictures(p, test=SET, test_embeddings=E[:10]),
        "10 embeddings but labels",
    ),
    "pictures of different dimensions": (
        lambda p: write_pictures(
            p, test=SET, test_embeddings=E, train=SET, train_embeddings=E[:, :3]
        ),
        "same model",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)
