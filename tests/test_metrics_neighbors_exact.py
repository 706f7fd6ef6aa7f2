"""tripletlab.metrics.neighbors' exact kernel (:func:`exact_search` on an
:class:`ExactGallery`, behind ``nearest_neighbors`` and the search index): against a float64
brute-force twin over block shapes, sizes and seeds, exact ties in row order, against
faiss's flat indexes, and its bad input."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import needs_faiss
from tolerances import assert_distances_close, assert_same_neighbours, gram_error, order_keys

from tripletlab.distances import Distance
from tripletlab.metrics import (
    exact_gallery,
    exact_search,
    extend_gallery,
    nearest_neighbors,
    neighbors,
)
from tripletlab.metrics.neighbors import GROUP
from tripletlab.search import EmbeddingIndex, IndexConfig, SearchError

DISTANCES = ["euclidean", "sqeuclidean", "cosine"]


def brute_knn(
    q: torch.Tensor, g: torch.Tensor, k: int, distance: Distance, exclude_self: bool = False
) -> tuple[list[list[float]], list[list[int]]]:
    """The twin: every (query, item) distance in float64 from the differences (or the
    normalised rows), one at a time; each query's list sorted by (distance, row)."""
    qd, gd = q.double(), g.double()
    dists, rows = [], []
    for a in range(qd.shape[0]):
        scored = []
        for j in range(gd.shape[0]):
            if exclude_self and a == j:
                continue
            if distance == "cosine":
                cos = float(qd[a] @ gd[j]) / (float(qd[a].norm()) * float(gd[j].norm()))
                d = min(max(1.0 - cos, 0.0), 2.0)
            else:
                d = float((qd[a] - gd[j]).square().sum())
                d = math.sqrt(d) if distance == "euclidean" else d
            scored.append((d, j))
        scored.sort()
        dists.append([d for d, _ in scored[:k]])
        rows.append([j for _, j in scored[:k]])
    return dists, rows


# (N, Q, D, k, chunk, gallery_chunk): one block; several gallery blocks with a tail shorter
# than a group; groups screened; k = N; tiny blocks; one query.
SHAPES = [
    (1, 3, 4, 1, None, None),
    (50, 7, 5, 3, 3, 7),
    (50, 7, 5, 50, None, 16),
    (300, 40, 8, 10, 16, GROUP),
    (300, 40, 8, 1, None, 2 * GROUP + 5),
    (700, 33, 16, 25, 8, 3 * GROUP),
    (200, 1, 6, 7, None, GROUP),
    (2000, 20, 8, 10, None, None),  # the first block's top k found by its groups' minima
    (1500, 6, 4, 20, None, 21 * GROUP),
]


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_search_matches_the_float64_twin(
    distance: Distance, shape: tuple[int, int, int, int, int | None, int | None], seed: int
) -> None:
    check_against_the_twin(distance, *shape, seed)


# (N, Q, k) under a score block of 2**14: k > 32 (6 queries x 2,560 rows a block, so three
# query blocks and three gallery blocks); one query (a block of 16,384 rows: two).
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(("n", "q", "k"), [(6000, 15, 40), (20000, 1, 5)])
def test_the_default_blocks_keep_the_score_block(
    monkeypatch: pytest.MonkeyPatch, distance: Distance, n: int, q: int, k: int
) -> None:
    monkeypatch.setattr(neighbors, "SCORE_BLOCK", 2**14)
    check_against_the_twin(distance, n, q, 4, k, None, None, 0)


def check_against_the_twin(
    distance: Distance,
    n: int,
    q: int,
    d: int,
    k: int,
    chunk: int | None,
    gallery_chunk: int | None,
    seed: int,
) -> None:
    """``exact_search`` of random data against :func:`brute_knn` (float64)."""
    g = torch.Generator().manual_seed(seed)
    x, queries = torch.randn(n, d, generator=g), torch.randn(q, d, generator=g)
    got_d, got_i = exact_search(
        queries, exact_gallery(x, distance), k, chunk=chunk, gallery_chunk=gallery_chunk
    )
    want_d, want_i = brute_knn(queries, x, k, distance)
    assert got_d.shape == got_i.shape == (q, k) and got_i.dtype == torch.int64
    error = gram_error(queries, x, distance=distance)
    assert_distances_close(got_d, torch.tensor(want_d, dtype=torch.float64), distance, error)
    keys = order_keys(queries, x, distance)
    assert_same_neighbours(got_i, torch.tensor(want_i), keys, error)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(("n", "k", "chunk", "gallery_chunk"), [(40, 39, 6, 9), (257, 12, 32, 64)])
def test_queries_on_the_gallery_exclude_themselves(
    distance: Distance, n: int, k: int, chunk: int, gallery_chunk: int
) -> None:
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(n))
    got_d, got_i = exact_search(
        x,
        exact_gallery(x, distance),
        k,
        exclude_self=True,
        chunk=chunk,
        gallery_chunk=gallery_chunk,
    )
    want_d, want_i = brute_knn(x, x, k, distance, exclude_self=True)
    assert not bool((got_i == torch.arange(n)[:, None]).any())
    error = gram_error(x, distance=distance)
    assert_distances_close(got_d, torch.tensor(want_d, dtype=torch.float64), distance, error)
    assert_same_neighbours(got_i, torch.tensor(want_i), order_keys(x, None, distance), error)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(
    ("copies", "k", "gallery_chunk"),
    [(3, 5, 4), (8, 20, GROUP), (5, 7, None), (40, 5, None), (40, 8, 3 * GROUP)],
)
def test_exact_ties_go_to_the_lower_row_also_at_the_kth_place(
    distance: Distance, copies: int, k: int, gallery_chunk: int | None
) -> None:
    # Small integer coordinates, each row repeated: every product and sum is exact in
    # float32, copies of a row have bit-equal scores, and every distance tie is exact. The
    # copies lie in different gallery blocks, and ties straddle the k-th place.
    g = torch.Generator().manual_seed(copies)
    base = torch.randint(-2, 3, (13, 4), generator=g).float()
    base[base.abs().sum(1) == 0] = 1.0  # no zero row (cosine)
    x = base.repeat(copies, 1)  # rows i, i + 13, i + 26, ... are equal
    queries = torch.cat([base[:5], torch.randint(-2, 3, (4, 4), generator=g).float() + 0.5])
    got_d, got_i = exact_search(
        queries, exact_gallery(x, distance), k, chunk=3, gallery_chunk=gallery_chunk
    )
    want_d, want_i = brute_knn(queries, x, k, distance)
    if distance != "cosine":  # integer distances: exact in float32, so the rows are fixed
        assert got_i.tolist() == want_i
        torch.testing.assert_close(got_d.double(), torch.tensor(want_d, dtype=torch.float64))
    else:  # cosines round, but copies tie exactly: each copy group in row order
        error = gram_error(queries, x, distance=distance)
        assert_same_neighbours(got_i, torch.tensor(want_i), order_keys(queries, x, distance), error)
        for row_d, row_i in zip(got_d.tolist(), got_i.tolist(), strict=True):
            for a, b in itertools.pairwise(range(len(row_i))):
                if row_d[a] == row_d[b] and row_i[a] % 13 == row_i[b] % 13:
                    assert row_i[a] < row_i[b]


def test_the_result_does_not_depend_on_the_blocks() -> None:
    # Ties broken by row at every step: every block shape gives the same rows.
    base = torch.randint(-2, 3, (31, 3), generator=torch.Generator().manual_seed(0)).float()
    x = base.repeat(7, 1)
    queries = torch.randint(-2, 3, (20, 3), generator=torch.Generator().manual_seed(1)).float()
    prepared = exact_gallery(x, "euclidean")
    first = exact_search(queries, prepared, 30)
    for chunk, gallery_chunk in [(1, 30), (3, 31), (7, GROUP), (20, 100), (4, 217)]:
        d, i = exact_search(queries, prepared, 30, chunk=chunk, gallery_chunk=gallery_chunk)
        assert torch.equal(i, first[1]) and torch.equal(d, first[0])


@pytest.mark.parametrize("distance", DISTANCES)
def test_an_extended_gallery_equals_one_prepared_at_once(distance: Distance) -> None:
    x = torch.randn(90, 5, generator=torch.Generator().manual_seed(3))
    whole = exact_gallery(x, distance)
    parts = extend_gallery(extend_gallery(exact_gallery(x[:0], distance), x[:40]), x[40:])
    assert torch.equal(whole.rows, parts.rows) and whole.dim == 5
    if distance != "cosine":  # rows [g, |g|^2]: the vectors as given, then the squares
        assert torch.equal(whole.rows[:, :5], x)


def test_float64_stays_float64_and_nearest_neighbors_uses_the_kernel() -> None:
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    d, i = nearest_neighbors(x, x, 5, exclude_self=True, chunk=7)
    assert d.dtype == torch.float64
    want = exact_search(x, exact_gallery(x, "euclidean"), 5, exclude_self=True, chunk=7)
    assert torch.equal(d, want[0]) and torch.equal(i, want[1])
    full = torch.cdist(x, x).fill_diagonal_(float("inf"))
    torch.testing.assert_close(d, full.topk(5, largest=False).values)


@needs_faiss
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_exact_search_agrees_with_faiss_flat(distance: Distance, k: int) -> None:
    import faiss

    g = torch.Generator().manual_seed(k)
    x, queries = torch.randn(3000, 32, generator=g), torch.randn(50, 32, generator=g)
    got_d, got_i = exact_search(queries, exact_gallery(x, distance), k, gallery_chunk=512)
    cosine = distance == "cosine"
    index = faiss.IndexFlatIP(32) if cosine else faiss.IndexFlatL2(32)
    rows = torch.nn.functional.normalize(x, dim=1) if cosine else x
    index.add(np.ascontiguousarray(rows.numpy()))
    qs = torch.nn.functional.normalize(queries, dim=1) if cosine else queries
    raw, idx = index.search(np.ascontiguousarray(qs.numpy()), k)
    want_d = 1.0 - torch.from_numpy(raw).double() if cosine else torch.from_numpy(raw).double()
    error = gram_error(queries, x, distance=distance)
    got = got_d.double() if cosine else got_d.double().square()
    torch.testing.assert_close(got, want_d, rtol=0, atol=error)
    keys = order_keys(queries, x, distance)
    assert_same_neighbours(got_i, torch.from_numpy(idx).long(), keys, error)


def test_bad_input_is_one_line_naming_the_problem() -> None:
    x = torch.randn(10, 4)
    nan = x.clone()
    nan[3, 1] = float("nan")
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: nearest_neighbors(torch.zeros(2, 3), x, 1), ValueError, "dimension 3 but"),
        (
            lambda: nearest_neighbors(torch.zeros(2, 4, dtype=torch.long), x, 1),
            ValueError,
            "must be a 2-D floating tensor",
        ),
        (lambda: nearest_neighbors(nan[2:5], x, 1), ValueError, "queries contain NaN"),
        (lambda: nearest_neighbors(x, nan, 1), ValueError, "gallery contain NaN or Inf in 1"),
        (lambda: nearest_neighbors(x, x, 11), ValueError, "k=11 is larger than the gallery"),
        (lambda: nearest_neighbors(x, x[:0], 1), ValueError, "larger than the gallery"),
        (lambda: nearest_neighbors(x, x, 2, chunk=0), ValueError, "chunk must be a positive"),
    ]
    index = EmbeddingIndex(4)
    index.add(x, torch.zeros(10, dtype=torch.long), [str(i) for i in range(10)])
    cases += [
        (lambda: index.search(torch.zeros(2, 3), 1), SearchError, "dimension 3 but the index"),
        (lambda: index.search(x.long(), 1), SearchError, "2-D float tensor"),
        (lambda: index.search(nan, 1), SearchError, "NaN or Inf in 1 of 10 rows"),
        (
            lambda: EmbeddingIndex(4).add(
                nan, torch.zeros(10, dtype=torch.long), list("abcdefghij")
            ),
            SearchError,
            "embeddings hold NaN or Inf",
        ),
        (lambda: EmbeddingIndex(4, IndexConfig()).search(x, 1), SearchError, "index is empty"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert index.search(x, 11).indices.shape == (10, 10)  # the index clips k to its size


@pytest.mark.parametrize("distance", DISTANCES)
def test_index_adds_save_and_load_search_alike(distance: Distance, tmp_path: object) -> None:
    from pathlib import Path

    g = torch.Generator().manual_seed(7)
    x, queries = torch.randn(120, 6, generator=g), torch.randn(9, 6, generator=g)
    config = IndexConfig(distance=distance)
    one = EmbeddingIndex(6, config)
    one.add(x, torch.zeros(120, dtype=torch.long), [str(i) for i in range(120)])
    several = EmbeddingIndex(6, config)
    for s in (slice(0, 50), slice(50, 51), slice(51, 120)):
        several.add(
            x[s],
            torch.zeros(s.stop - s.start, dtype=torch.long),
            [str(i) for i in range(s.start, s.stop)],
        )
    loaded = EmbeddingIndex.load(several.save(Path(str(tmp_path)) / "index.npz"))
    want = one.search(queries, 15)
    for other in (several, loaded):
        got = other.search(queries, 15)
        assert torch.equal(got.indices, want.indices) and torch.equal(got.distances, want.distances)
    arrays, _ = loaded.to_arrays()
    assert np.array_equal(arrays["vectors"], x.numpy())  # the file keeps the vectors as added
