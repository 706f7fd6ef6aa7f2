"""EmbeddingIndex (:mod:`tripletlab.search.index`): exact search against brute force, ties,
its own copy, incremental adds, bad input, calibration, matching and open-set scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import reference
import torch
from conftest import needs_faiss
from search_helpers import DISTANCES, clusters, faiss_config, gaussian, make_index
from tolerances import assert_distances_close, assert_same_neighbours, gram_error, order_keys

from tripletlab.metrics import blocks
from tripletlab.search import EmbeddingIndex, IndexConfig, SearchError


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(("n", "q", "k"), [(1, 3, 1), (9, 4, 3), (40, 7, 5), (25, 5, 25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunked", [False, True])
def test_exact_search_matches_brute_force(
    distance: str, n: int, q: int, k: int, seed: int, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunked:
        monkeypatch.setattr(blocks, "BLOCK", 2 * n)  # two queries per chunk
    x, y = gaussian(n, 6, seed)
    queries = gaussian(q, 6, seed + 100)[0]
    index = make_index(x, y, IndexConfig(distance=distance))  # type: ignore[arg-type]
    r = index.search(queries, k)
    expected = reference.knn(queries.numpy(), x.numpy(), k, distance)
    assert r.distances.shape == r.indices.shape == r.labels.shape == (q, min(k, n))
    assert r.distances.dtype == torch.float32 and r.indices.dtype == torch.int64
    # float32 Gram identity against float64 differences: equal up to its rounding error, and
    # the same rows wherever two items are further apart than that.
    error = gram_error(queries, x, distance=distance)
    want_d = torch.tensor([[d for d, _ in row] for row in expected], dtype=torch.float64)
    assert_distances_close(r.distances, want_d, distance, error)
    want_i = torch.tensor([[j for _, j in row] for row in expected])
    assert_same_neighbours(r.indices, want_i, order_keys(queries, x, distance), error)
    assert r.labels.tolist() == y[r.indices].tolist()
    assert r.ids == tuple(tuple(f"g{j}" for j in row) for row in r.indices.tolist())


@pytest.mark.parametrize("backend", ["exact", pytest.param("flat", marks=needs_faiss)])
def test_ties_are_ordered_by_row(backend: str) -> None:
    # Small integer coordinates: every product and sum is exact in float32 whatever the
    # kernel, so the distances are exactly 0 and 1 and the ties are exact.
    base = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x = base.repeat(3, 1)  # rows 0, 3, 6 identical, etc.
    config = IndexConfig() if backend == "exact" else faiss_config("flat")
    index = make_index(x, torch.arange(9), config)
    r = index.search(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), 6)
    assert r.indices.tolist() == [[0, 3, 6, 1, 4, 7], [1, 4, 7, 0, 3, 6]]
    assert r.distances[0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # Ties at the k-th distance: the distances are right whichever tied rows are returned.
    r = index.search(torch.tensor([[0.0, 0.0]]), 2)
    assert r.distances[0].tolist() == [0.0, 0.0] and set(r.indices[0].tolist()) <= {0, 3, 6}


@pytest.mark.parametrize(
    "kind", ["exact", *(pytest.param(kind, marks=needs_faiss) for kind in ("flat", "hnsw"))]
)
def test_k_larger_than_the_index_returns_every_item(kind: str) -> None:
    x, y = gaussian(4, 3, 0)
    config = IndexConfig() if kind == "exact" else faiss_config(kind)
    r = make_index(x, y, config).search(x[:2], 10)
    assert r.indices.shape == (2, 4)
    assert sorted(r.indices[0].tolist()) == [0, 1, 2, 3]


def test_the_index_keeps_its_own_copy() -> None:
    x, y = gaussian(5, 3, 0)
    index = make_index(x, y)
    queries = x.clone()
    before = index.search(queries, 2)
    x.add_(100.0)  # an index that kept a view of x would now find everything ~170 away
    y.fill_(3)
    after = index.search(queries, 2)  # the same queries through the same code: bit-equal
    assert torch.equal(after.distances, before.distances)
    assert torch.equal(after.indices, before.indices)
    assert index.labels.tolist() != y.tolist()


def test_empty_queries_and_incremental_adds() -> None:
    x, y = gaussian(30, 5, 0)
    index = make_index(x[:10], y[:10])
    index.add(x[10:], y[10:], [f"g{i}" for i in range(10, 30)])
    index.add(x[:0], y[:0], [])
    assert len(index) == 30 and index.labels.tolist() == y.tolist()
    assert torch.equal(index.search(x, 3).indices, make_index(x, y).search(x, 3).indices)
    r = index.search(x[:0], 3)
    assert r.distances.shape == (0, 3) and r.ids == ()


def test_bad_queries_and_arguments() -> None:
    index = make_index(*gaussian(10, 4, 0))
    bad_distance: dict[str, Any] = {"distance": "manhattan"}  # (not a Distance: mypy knows)
    bad_backend: dict[str, Any] = {"backend": "annoy"}
    bad_kind: dict[str, Any] = {"faiss_index": "pq"}
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: index.search(torch.zeros(4), 1), r"queries must be a 2-D float tensor \(n, 4\)"),
        (
            lambda: index.search(torch.zeros(2, 3), 1),
            "queries have dimension 3 but the index holds 4-d",
        ),
        (lambda: index.search(torch.zeros(2, 4, dtype=torch.long), 1), "2-D float tensor"),
        (lambda: index.search(torch.full((2, 4), float("nan")), 1), "NaN or Inf in 2 of 2 rows"),
        (lambda: index.search(torch.zeros(2, 4), 0), "k must be a positive integer, got 0"),
        (lambda: EmbeddingIndex(4).search(torch.zeros(2, 4), 1), "the index is empty; add"),
        (
            lambda: index.add(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), ["g3"]),
            "duplicate id 'g3'",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a", "a"]),
            "duplicate id 'a'",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), ["a", "b"]),
            r"shape \(2,\)",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a"]),
            "2 embeddings but 1 ids",
        ),
        (lambda: index.add(torch.zeros(1, 4), torch.tensor([-2]), ["a"]), "must be >= -1"),
        (lambda: IndexConfig(**bad_distance), "unknown distance 'manhattan'; choose one of"),
        (lambda: IndexConfig(**bad_backend), "unknown backend 'annoy'; choose one of: exact"),
        (lambda: IndexConfig(**bad_kind), "unknown faiss index 'pq'; choose one of: flat"),
        (lambda: IndexConfig(ef_search=0), "ef_search must be a positive integer"),
        (
            lambda: index.match(torch.zeros(1, 4)),
            "the index is not calibrated; run 'tripletlab calibrate",
        ),
        (lambda: EmbeddingIndex(0), "dim must be a positive integer"),
    ]
    for call, message in cases:
        with pytest.raises(SearchError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert len(index) == 10  # failed adds add nothing


def test_calibrate_on_the_indexed_set_skips_self_matches() -> None:
    x, y = clusters(20, [0, 1, 2], 0)
    index = make_index(x, y)
    cal = index.calibrate(x, y, ids=index.ids)
    d_self = index.search(x, 2).distances[:, 1]  # the nearest other item
    assert cal.curve.thresholds.min() == pytest.approx(float(d_self.min()), abs=1e-6)
    assert float(cal.curve.thresholds.min()) > 0  # no self-match at distance 0
    with_self = make_index(x, y).calibrate(x, y)  # no ids: every query matches itself
    # 0 up to the rounding of |q|^2 + |g|^2 - 2qg, whose square root the distance is
    assert float(with_self.curve.thresholds.max()) <= gram_error(x) ** 0.5
    assert with_self.points[0].precision == 1.0


def test_match_rejects_beyond_the_threshold() -> None:
    x, y = clusters(30, [0, 1, 2], 0)
    index = make_index(x, y)
    cal_x, cal_y = clusters(10, [0, 1, 2, 5], 1)  # class 5 is not indexed
    cal = index.calibrate(cal_x, cal_y)
    assert cal.curve.num_known == 30 and cal.curve.num_queries == 40
    best = cal.point("max_f1")
    assert best.threshold is not None and best.threshold < 3.0  # class 5 lies 9 away
    queries = torch.tensor([[0.0, 0.0], [3.0, 0.1], [30.0, 0.0], [6.0, 5.0]])
    m = index.match(queries)
    assert m.labels.tolist() == [0, 1, -1, -1] and m.threshold == best.threshold
    assert m.distances[2] == pytest.approx(
        float((queries[2] - x[y == 2]).norm(dim=1).min()), rel=1e-5
    )
    assert index.match(queries, threshold=100.0).labels.tolist() == [0, 1, 2, 2]
    assert index.match(queries, threshold="precision_0.9").labels[2] == -1
    index.add(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), ["new"])
    assert index.calibration is None  # stale thresholds are dropped


def test_unreachable_threshold_and_open_set() -> None:
    x, y = clusters(10, [0, 1], 0, spread=2.0)  # overlapping classes
    index = make_index(x, y)
    index.calibrate(*clusters(10, [0, 1], 1, spread=2.0), precisions=(1.0,))
    assert index.calibration is not None
    if not index.calibration.point("precision_1").reachable:
        with pytest.raises(SearchError, match="precision_1 was not reachable"):
            index.match(x, threshold="precision_1")
    queries, labels = clusters(5, [0, 1, 9], 2)
    rows = index.open_set(queries, labels)
    assert [r.name for r in rows][:2] == ["closed_set", "max_f1"]
    assert rows[0].num_known == 10 and rows[0].num_unseen == 5
    assert rows[0].unseen_rejected == 0.0 and rows[0].known_accepted == 1.0
