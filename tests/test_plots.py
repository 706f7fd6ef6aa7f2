"""Pictures: every plot writes a valid PNG atomically; the projector files agree; 2-D
embeddings are drawn directly; the worst-query ranking matches a loop; bad input fails with
one line that names the problem and the fix."""

from __future__ import annotations

import math
import os
import sys
import types
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab import plots
from tripletlab.data import ImageSet, Splits, load_dataset
from tripletlab.metrics import nearest_neighbors
from tripletlab.plots import (
    Projection,
    QuerySelection,
    available_projections,
    plot_distance_histogram,
    plot_embedding,
    plot_learning_curves,
    plot_neighbor_grid,
    plot_neighbors,
    project_2d,
    worst_queries,
    write_pictures,
    write_projector,
)
from tripletlab.training import EpochStats
from tripletlab.training import atomic_write_bytes as write_atomic


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset("digits")  # 8x8, 10 classes, 1,438 train / 359 test


def embed(images: torch.Tensor, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """A fixed random projection of the pixels, L2-normalised: (N, dim), class-structured."""
    w = torch.randn(images[0].numel(), dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(images.flatten(1).float() @ w, dim=1)


def history(epochs: int = 4) -> list[dict[str, Any]]:
    """Records shaped as training.fit writes them (EpochStats fields + validation metric)."""
    out = []
    for e in range(1, epochs + 1):
        stats = EpochStats(0.3 / e, 0.6 / e, 0.4, 0.6 + 0.1 * e, 10, 640, 1.0, 0.2)
        record = {"epoch": e, **asdict(stats), "val_knn_accuracy": 0.7 + 0.05 * e}
        record["samples_per_second"] = stats.samples_per_second
        out.append(record)
    return out


def assert_png(path: Path, min_side: int = 100) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side, im.size
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


def count_near(path: Path, rgb: tuple[int, int, int], tol: int = 12) -> int:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(2) <= tol).sum())


# ---------------------------------------------------------------------------------- plots


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_writes_png(digits: Splits, tmp_path: Path, method: Projection) -> None:
    t = digits.test
    out = plot_embedding(
        embed(t.images),
        t.labels,
        tmp_path / "e.png",
        method=method,
        classes=t.classes,
        max_points=200,
    )
    assert out == tmp_path / "e.png"
    assert_png(out, 300)


def test_two_dimensional_embedding_is_drawn_directly(digits: Splits, tmp_path: Path) -> None:
    e = embed(digits.test.images, dim=2)
    np.testing.assert_array_equal(project_2d(e, "direct"), e.numpy())
    assert available_projections(2) == ("direct",)
    out = write_pictures(
        tmp_path,
        test=digits.test,
        test_embeddings=e,
        train=digits.train,
        train_embeddings=embed(digits.train.images, dim=2),
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
    e, y = embed(digits.test.images), digits.test.labels
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
        embed(digits.test.images), digits.test.labels, tmp_path / "u.png", method="umap"
    )
    assert_png(out)


def test_umap_missing_is_a_clear_error(digits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    assert "umap" not in available_projections(8)
    with pytest.raises(ValueError, match="pip install umap-learn"):
        project_2d(embed(digits.test.images[:20]), "umap")


def test_neighbor_grid_frames_right_green_and_wrong_red(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (2, 1, 8, 8), generator=g, dtype=torch.uint8)
    n = torch.randint(0, 256, (2, 3, 1, 8, 8), generator=g, dtype=torch.uint8)
    right = plot_neighbor_grid(
        q, torch.tensor([0, 1]), n, torch.tensor([[0, 0, 0], [1, 1, 1]]), tmp_path / "r.png"
    )
    mixed = plot_neighbor_grid(
        q, torch.tensor([0, 1]), n, torch.tensor([[0, 1, 0], [1, 1, 2]]), tmp_path / "m.png"
    )
    assert_png(right)
    assert count_near(right, plots.GREEN) > 0 and count_near(right, plots.RED) == 0
    assert count_near(mixed, plots.GREEN) > 0 and count_near(mixed, plots.RED) > 0


@pytest.mark.parametrize("select", ["random", "worst"])
def test_plot_neighbors(digits: Splits, tmp_path: Path, select: QuerySelection) -> None:
    t = digits.test
    out = plot_neighbors(
        embed(t.images),
        t.labels,
        t.images,
        tmp_path / "n.png",
        k=5,
        num_queries=4,
        select=select,
        classes=t.classes,
    )
    assert_png(out)


def test_plot_neighbors_with_a_gallery_and_rgb_images(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (30, 3, 12, 12), generator=g, dtype=torch.uint8)
    y = torch.arange(30) % 3
    e = torch.randn(30, 4, generator=g)
    out = plot_neighbors(
        e[:10],
        y[:10],
        img[:10],
        tmp_path / "n.png",
        gallery_embeddings=e[10:],
        gallery_labels=y[10:],
        gallery_images=img[10:],
        k=20,
        num_queries=3,
        select="worst",
    )
    assert_png(out)


def test_distance_histogram(digits: Splits, tmp_path: Path) -> None:
    t = digits.test
    assert_png(
        plot_distance_histogram(embed(t.images), t.labels, tmp_path / "d.png", threshold=0.5)
    )
    assert_png(plot_distance_histogram(embed(t.images), t.labels, tmp_path / "e.png", num_pairs=50))


def test_learning_curves_from_fit_records(tmp_path: Path) -> None:
    assert_png(plot_learning_curves(history(), tmp_path / "c.png"), 300)
    gaps = history(3)
    gaps[1]["loss"] = float("nan")
    del gaps[0]["val_knn_accuracy"]
    assert_png(plot_learning_curves(gaps, tmp_path / "g.png"))
    assert_png(plot_learning_curves(history(1), tmp_path / "one.png"))


# ---------------------------------------------------------------------------------- projector


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_projector_files_agree(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 37, 5
    e = torch.randn(n, d, generator=g)
    y = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    classes = ["zero", "one\tbad", "two", "three"]
    split = ["train"] * 30 + ["test"] * 7
    files = write_projector(
        tmp_path, e, y, images=images, classes=classes, columns={"split": split}
    )
    assert set(files) == {"tensors", "metadata", "sprite", "config"}
    tensors, meta = read_tsv(files["tensors"]), read_tsv(files["metadata"])
    assert len(tensors) == n and all(len(row) == d for row in tensors)
    np.testing.assert_allclose(np.array(tensors, dtype=float), e.numpy(), rtol=1e-5)
    assert meta[0] == ["label", "class", "split"]
    assert len(meta) == n + 1 and all(len(row) == 3 for row in meta)
    assert meta[2] == ["1", "one bad", "train"] and meta[-1][2] == "test"
    side = math.ceil(math.sqrt(n))
    with Image.open(files["sprite"]) as im:
        assert im.size == (side * 8, side * 8)
    config = files["config"].read_text()
    for name in ("tensors.tsv", "metadata.tsv", "sprite.png"):
        assert f'"{name}"' in config and (tmp_path / name).is_file()
    assert config.count("single_image_dim: 8") == 2


def test_projector_subsamples_and_shrinks_the_sprite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "SPRITE_MAX_SIDE", 40)
    e, y = torch.randn(50, 3), torch.arange(50) % 5
    images = torch.zeros(50, 3, 10, 10, dtype=torch.uint8)
    files = write_projector(tmp_path, e, y, images=images, max_points=20)
    assert len(read_tsv(files["tensors"])) == 20 == len(read_tsv(files["metadata"])) - 1
    with Image.open(files["sprite"]) as im:
        assert max(im.size) <= 40  # 5 x 5 tiles of 8 x 8
    assert "single_image_dim: 8" in files["config"].read_text()


# ---------------------------------------------------------------------------------- all


def test_write_pictures_writes_the_full_set(digits: Splits, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    out = write_pictures(
        tmp_path / "pictures",
        test=digits.test,
        test_embeddings=embed(digits.test.images),
        train=digits.train,
        train_embeddings=embed(digits.train.images),
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


# ---------------------------------------------------------------------------------- twins


def brute_worst(y: list[int], ny: list[list[int]], nd: list[list[float]], count: int) -> list[int]:
    keys = []
    for q in range(len(y)):
        hits = [a == y[q] for a in ny[q]]
        wrong = [d for d, h in zip(nd[q], hits, strict=True) if not h]
        keys.append((sum(hits) / len(hits), min(wrong) if wrong else math.inf, q))
    return [q for *_, q in sorted(keys)[:count]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("q", "k"), [(1, 1), (7, 3), (40, 5)])
def test_worst_queries_matches_a_loop(seed: int, q: int, k: int) -> None:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (q,), generator=g)
    ny = torch.randint(0, 3, (q, k), generator=g)
    nd = torch.rand(q, k, generator=g, dtype=torch.float64)
    got = worst_queries(y, ny, nd, q // 2 + 1).tolist()
    assert got == brute_worst(y.tolist(), ny.tolist(), nd.tolist(), q // 2 + 1)


def test_worst_queries_skips_ineligible() -> None:
    y = torch.tensor([0, 1, 2])
    ny = torch.tensor([[1], [0], [0]])
    nd = torch.tensor([[0.1], [0.2], [0.3]])
    assert worst_queries(y, ny, nd, 3, eligible=torch.tensor([True, False, True])).tolist() == [
        0,
        2,
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_search_leaving_the_query_out_matches_exclude_self(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(50, 4, generator=g)
    rows = torch.randperm(50, generator=g)[:12]
    d, idx = plots._search(e[rows], e, 5, rows, "euclidean")
    d_ref, idx_ref = nearest_neighbors(e, e, 5, exclude_self=True)
    torch.testing.assert_close(idx, idx_ref[rows])
    torch.testing.assert_close(d, d_ref[rows])


def test_search_with_duplicates_never_returns_the_query() -> None:
    e = torch.zeros(6, 2)  # every item ties with every other
    rows = torch.arange(6)
    _, idx = plots._search(e, e, 5, rows, "euclidean")
    assert not (idx == rows[:, None]).any()
    assert all(sorted(r) == sorted(set(range(6)) - {i}) for i, r in enumerate(idx.tolist()))


# ---------------------------------------------------------------------------------- writes


def test_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.png"
    write_atomic(path, b"old")

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


# ---------------------------------------------------------------------------------- errors

E = torch.nn.functional.normalize(
    torch.randn(20, 4, generator=torch.Generator().manual_seed(0)), dim=1
)
Y = torch.arange(20) % 4
IMG = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
NAN = E.clone()
NAN[3, 1] = float("nan")
SET = ImageSet(IMG, Y, ("a", "b", "c", "d"))

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
    "k larger than the gallery": (lambda p: plot_neighbors(E, Y, IMG, p / "x.png", k=20), "k=20"),
    "k larger than a given gallery": (
        lambda p: plot_neighbors(
            E,
            Y,
            IMG,
            p / "x.png",
            k=6,
            gallery_embeddings=E[:5],
            gallery_labels=Y[:5],
            gallery_images=IMG[:5],
        ),
        "k=6",
    ),
    "half a gallery": (
        lambda p: plot_neighbors(E, Y, IMG, p / "x.png", gallery_embeddings=E),
        "all three",
    ),
    "images mismatch": (lambda p: plot_neighbors(E, Y, IMG[:5], p / "x.png", k=3), "5 images"),
    "float images": (lambda p: plot_neighbors(E, Y, IMG.float(), p / "x.png", k=3), "uint8"),
    "NaN queries": (lambda p: plot_neighbors(NAN, Y, IMG, p / "x.png", k=3), "NaN"),
    "unknown selection": (
        lambda p: plot_neighbors(E, Y, IMG, p / "x.png", select=cast(Any, "best")),
        "choose one of",
    ),
    "no worst query": (
        lambda p: plot_neighbors(E[:4], Y[:4], IMG[:4], p / "x.png", k=2, select="worst"),
        "select='random'",
    ),
    "histogram of one class": (
        lambda p: plot_distance_histogram(E, torch.zeros(20, dtype=torch.long), p / "x.png"),
        "2 classes",
    ),
    "empty history": (lambda p: plot_learning_curves([], p / "x.png"), "history is empty"),
    "history without curves": (
        lambda p: plot_learning_curves([{"epoch": 1}], p / "x.png"),
        "no curve",
    ),
    "projector column": (lambda p: write_projector(p, E, Y, columns={"split": ["a"]}), "'split'"),
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
    with pytest.raises(ValueError) as err:  # noqa: PT011 - the message is checked below
        call(tmp_path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and len(message) < 220
    assert ";" in message or ":" in message  # names the problem, then the fix
    assert not list(tmp_path.glob("**/*.png")), "nothing is written for bad input"


def test_calibration_plot(tmp_path: Path) -> None:
    from tripletlab.calibration import calibrate_matches

    cal = calibrate_matches(
        torch.tensor([0.1, 0.2, 0.3, 0.5, float("inf")]),  # inf: a query with no neighbour
        torch.tensor([0, 1, 0, 1, -1]),
        torch.tensor([0, 1, 1, 2, 0]),
        torch.tensor([True, True, True, False, True]),
        (0.9, 0.999),
    )
    path = plots.plot_calibration(cal, tmp_path / "pr.png", distance="cosine")
    assert path == tmp_path / "pr.png"
    assert_png(path, 300)
    again = plots.plot_calibration(cal, tmp_path / "again.png", distance="cosine")
    assert again.read_bytes() == path.read_bytes()  # deterministic
