"""Neighbour grids (tripletlab.plots.neighbors): right neighbours framed green and wrong ones
red; the worst-query ranking matches a loop; the leave-one-out search never returns the
query; bad input fails with one line that names the problem and the fix."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image
from plots_helpers import (
    IMG,
    NAN,
    E,
    Y,
    assert_one_clear_line,
    assert_png,
    digits_fixture,  # noqa: F401 - the digits fixture
    embed,
)
from tolerances import assert_distances_close, assert_same_neighbours, gram_error, order_keys

from tripletlab.data import Splits
from tripletlab.metrics import nearest_neighbors
from tripletlab.plots import (
    QuerySelection,
    neighbors,
    plot_neighbor_grid,
    plot_neighbors,
    worst_queries,
)


def count_near(path: Path, rgb: tuple[int, int, int], tol: int = 12) -> int:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(2) <= tol).sum())


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
    assert count_near(right, neighbors.GREEN) > 0 and count_near(right, neighbors.RED) == 0
    assert count_near(mixed, neighbors.GREEN) > 0 and count_near(mixed, neighbors.RED) > 0


def test_neighbor_grid_wraps_a_long_title_inside_the_picture(tmp_path: Path) -> None:
    # One query and 3 neighbours are narrower than the title: it is wrapped onto more lines
    # (the picture grows taller), not cut at the right edge; the text stays inside.
    q = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    n = torch.zeros(1, 3, 1, 8, 8, dtype=torch.uint8)
    args = (q, torch.tensor([0]), n, torch.tensor([[0, 1, 0]]))
    short = plot_neighbor_grid(*args, tmp_path / "s.png", title="a title")
    for i, title in enumerate(["word " * 60, "MAP@R WWW MMM " * 20]):  # wide letters too
        long = plot_neighbor_grid(*args, tmp_path / f"l{i}.png", title=title)
        with Image.open(short) as a, Image.open(long) as b:
            assert a.width == b.width and b.height >= a.height + 3 * 14
            right = np.asarray(b.convert("L"))[:, -3:]  # the last columns: white, no text cut
            assert int(right.min()) == 255


@pytest.mark.parametrize("select", ["random", "worst"])
def test_plot_neighbors(digits: Splits, tmp_path: Path, select: QuerySelection) -> None:
    t = digits.test
    out = plot_neighbors(
        embed(t.images[:]),
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
    d, idx = neighbors._search(e[rows], e, 5, rows, "euclidean")
    d_ref, idx_ref = nearest_neighbors(e, e, 5, exclude_self=True)
    # 12 queries against 50 is another matrix product than 50 against 50, which a BLAS may
    # sum in another order: equal up to the Gram identity's rounding, and the same rows
    # wherever two neighbours are further apart than that
    error = gram_error(e)
    assert_same_neighbours(idx, idx_ref[rows], order_keys(e)[rows], error)
    assert_distances_close(d, d_ref[rows], "euclidean", error)


def test_search_with_duplicates_never_returns_the_query() -> None:
    e = torch.zeros(6, 2)  # every item ties with every other
    rows = torch.arange(6)
    _, idx = neighbors._search(e, e, 5, rows, "euclidean")
    assert not (idx == rows[:, None]).any()
    assert all(sorted(r) == sorted(set(range(6)) - {i}) for i, r in enumerate(idx.tolist()))


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
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
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)


def test_neighbor_grid_frames_grey_when_a_label_is_unknown(tmp_path: Path) -> None:
    """An unknown query (-1: e.g. an image outside the index's classes) has no right or wrong
    neighbours: grey frames, not red; an unlabelled neighbour of a known query too."""
    q = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)  # black: no pixel near a frame colour
    n = torch.zeros(2, 3, 1, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([[0, 1, 2], [1, 1, 2]])
    unknown = plot_neighbor_grid(q, torch.tensor([-1, -1]), n, labels, tmp_path / "u.png")
    assert count_near(unknown, neighbors.RED) == 0 and count_near(unknown, neighbors.GREEN) == 0
    assert count_near(unknown, neighbors.GREY) > 0
    half = plot_neighbor_grid(
        q, torch.tensor([1, -1]), n, torch.tensor([[-1, -1, -1], [0, 1, 2]]), tmp_path / "h.png"
    )
    assert count_near(half, neighbors.RED) == 0 and count_near(half, neighbors.GREEN) == 0


def test_neighbor_grid_fades_the_neighbours_beyond(tmp_path: Path) -> None:
    q = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    n = torch.zeros(1, 2, 1, 8, 8, dtype=torch.uint8)
    y, ny = torch.tensor([0]), torch.tensor([[0, 0]])
    plain = plot_neighbor_grid(q, y, n, ny, tmp_path / "p.png")
    far = plot_neighbor_grid(q, y, n, ny, tmp_path / "f.png", beyond=torch.tensor([[False, True]]))
    green = count_near(plain, neighbors.GREEN)
    assert 0 < count_near(far, neighbors.GREEN) < green  # one frame of two stays green
    r, g, b = neighbors.GREEN
    faded = ((r + 255) // 2, (g + 255) // 2, (b + 255) // 2)  # half-way to white
    assert count_near(far, faded, tol=6) > 0 and count_near(plain, faded, tol=6) == 0
    with pytest.raises(ValueError, match=r"beyond must be \(Q, k\) = \(1, 2\)"):
        plot_neighbor_grid(q, y, n, ny, tmp_path / "x.png", beyond=torch.tensor([True]))
