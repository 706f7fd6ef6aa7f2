"""Embedding plots (tripletlab.plots.embedding): a valid PNG, the same bytes for the same
seed; 2-D embeddings are drawn directly; UMAP is used when installed; bad input fails with
one line that names the problem and the fix."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from plots_helpers import (
    NAN,
    E,
    Y,
    assert_one_clear_line,
    assert_png,
    digits_fixture,  # noqa: F401 - the digits fixture
    embed,
)

from tripletlab.data import Splits
from tripletlab.plots import (
    Projection,
    available_projections,
    plot_embedding,
    project_2d,
    write_pictures,
)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_writes_png(digits: Splits, tmp_path: Path, method: Projection) -> None:
    t = digits.test
    out = plot_embedding(
        embed(t.images[:]),
        t.labels,
        tmp_path / "e.png",
        method=method,
        classes=t.classes,
        max_points=200,
    )
    assert out == tmp_path / "e.png"
    assert_png(out, 300)


def test_two_dimensional_embedding_is_drawn_directly(digits: Splits, tmp_path: Path) -> None:
    e = embed(digits.test.images[:], dim=2)
    np.testing.assert_array_equal(project_2d(e, "direct"), e.numpy())
    assert available_projections(2) == ("direct",)
    out = write_pictures(
        tmp_path,
        test=digits.test,
        test_embeddings=e,
        train=digits.train,
        train_embeddings=embed(digits.train.images[:], dim=2),
        projector=False,
    )
    assert sorted(n for n in out if n.startswith("embedding_")) == [
        "embedding_test_direct",
        "embedding_train_direct",
    ]
    assert_png(out["embedding_test_direct"], 300)


def test_pca_and_tsne_otherwise(digits: Splits) -> None:
    assert available_projections(8)[:2] == ("pca", "tsne")


def test_plot_embedding_is_deterministic(digits: Splits, tmp_path: Path) -> None:
    e, y = embed(digits.test.images[:]), digits.test.labels
    a = plot_embedding(e, y, tmp_path / "a.png", max_points=100, seed=3)
    b = plot_embedding(e, y, tmp_path / "b.png", max_points=100, seed=3)
    assert a.read_bytes() == b.read_bytes()


def test_umap_is_used_when_installed(
    digits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeUMAP:
        def __init__(self, n_components: int, n_neighbors: int, random_state: int) -> None:
            assert n_components == 2

        def fit_transform(self, x: np.ndarray) -> np.ndarray:
            return x[:, :2]

    fake = types.ModuleType("umap")
    fake.UMAP = FakeUMAP  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "umap", fake)
    assert available_projections(8) == ("pca", "tsne", "umap")
    out = plot_embedding(
        embed(digits.test.images[:]), digits.test.labels, tmp_path / "u.png", method="umap"
    )
    assert_png(out)


def test_umap_missing_is_a_clear_error(digits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    assert "umap" not in available_projections(8)
    with pytest.raises(ValueError, match="pip install umap-learn"):
        project_2d(embed(digits.test.images[:20]), "umap")


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "mismatched lengths": (
        lambda p: plot_embedding(E, Y[:19], p / "x.png"),
        "20 embeddings but labels",
    ),
    "NaN embeddings": (lambda p: plot_embedding(NAN, Y, p / "x.png"), "NaN"),
    "empty set": (lambda p: plot_embedding(E[:0], Y[:0], p / "x.png"), "empty"),
    "not (N, D)": (lambda p: plot_embedding(E[0], Y, p / "x.png"), "(N, D)"),
    "direct needs 2-D": (lambda p: plot_embedding(E, Y, p / "x.png", method="direct"), "2-D"),
    "unknown method": (
        lambda p: plot_embedding(E, Y, p / "x.png", method=cast(Any, "mds")),
        "choose one of",
    ),
    "too few points": (lambda p: project_2d(E[:2], "tsne"), "at least 3 points"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)
