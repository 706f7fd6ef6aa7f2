"""tripletlab.metrics.retrieval against brute force, pytorch-metric-learning, scikit-learn
and its faiss backend."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest
import reference
import torch
from conftest import needs_faiss
from metrics_data import data
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.metrics import average_precision_score
from tolerances import (
    assert_distances_close,
    assert_same_neighbours,
    gram_error,
    order_keys,
    relevance_margin,
)

from tripletlab.metrics import (
    RetrievalMetrics,
    blocks,
    nearest_neighbors,
    pair_accuracy,
    retrieval_metrics,
    retrieval_scores,
    verification_scores,
)


def assert_rankings_kernel_proof(
    q: torch.Tensor,
    yq: torch.Tensor,
    g: torch.Tensor | None = None,
    yg: torch.Tensor | None = None,
    *,
    distance: str = "euclidean",
) -> None:
    """No relevant item of a query is within the float32 rounding error of an irrelevant one
    (test data checked, not a property of the code): two float32 computations (torch, faiss,
    pytorch-metric-learning) then rank the relevant items alike on every CPU, and rank-based
    metrics from them must agree exactly."""
    keys = order_keys(q, g, distance)
    relevant = yq[:, None] == (yq if yg is None else yg)[None, :]
    error = gram_error(q, *([] if g is None else [g]), distance=distance)
    assert relevance_margin(keys, relevant) > error, "near-ties: choose other test data"


def assert_metrics_close(got: RetrievalMetrics, want: RetrievalMetrics, tol: float) -> None:
    """Every score within ``tol`` (overall and per class), the counts equal."""
    for name in ("precision_at_1", "r_precision", "map_at_r"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=tol), name
    for name in ("mean_average_precision", "mean_reciprocal_rank"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None) and (a is None or a == pytest.approx(b, abs=tol))
    assert got.recall_at_k == pytest.approx(want.recall_at_k, abs=tol)
    assert (got.num_queries, got.num_excluded) == (want.num_queries, want.num_excluded)
    assert sorted(got.per_class) == sorted(want.per_class)
    for c, mine in got.per_class.items():
        assert_metrics_close(mine, want.per_class[c], tol)


def brute_retrieval(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, int]:
    p1 = rp = mapr = 0.0
    scored = 0
    for q in range(len(y)):
        others = [j for j in range(len(y)) if j != q]
        others.sort(key=lambda j: float(np.linalg.norm(x[q] - x[j])))
        r = sum(1 for j in others if y[j] == y[q])
        if r == 0:
            continue
        scored += 1
        rel = [y[j] == y[q] for j in others[:r]]
        p1 += rel[0]
        rp += sum(rel) / r
        hits, ap = 0, 0.0
        for i, is_rel in enumerate(rel, 1):
            if is_rel:
                hits += 1
                ap += hits / i
        mapr += ap / r
    return p1 / scored, rp / scored, mapr / scored, scored


@pytest.mark.parametrize(("n", "classes", "seed"), [(30, 3, 0), (57, 7, 1), (40, 20, 2)])
def test_retrieval_matches_brute_force_and_pml(n: int, classes: int, seed: int) -> None:
    x, y = data(n, classes, seed)
    got = retrieval_scores(x, y, chunk=7)
    p1, rp, mapr, scored = brute_retrieval(x.numpy(), y.numpy())
    assert got.num_queries == scored
    assert got.num_excluded == n - scored
    assert got.precision_at_1 == pytest.approx(p1)
    assert got.r_precision == pytest.approx(rp)
    assert got.map_at_r == pytest.approx(mapr)
    pytest.importorskip("faiss")  # pytorch-metric-learning searches with faiss, in float32
    assert_rankings_kernel_proof(x.float(), y)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
    )
    pml = calc.get_accuracy(x.float(), y, ref_includes_query=True)
    assert got.precision_at_1 == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert got.r_precision == pytest.approx(pml["r_precision"], abs=1e-6)
    assert got.map_at_r == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def test_retrieval_edge_cases() -> None:
    empty = retrieval_scores(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert math.isnan(empty.precision_at_1) and empty.num_queries == 0  # missing, not 0
    singletons = retrieval_scores(torch.randn(4, 2), torch.arange(4))
    assert singletons.num_excluded == 4
    assert math.isnan(singletons.map_at_r)


# ------------------------------------------------------------------ retrieval_metrics


def grid_data(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small integer coordinates: many exactly tied distances (exact in float32 and faiss)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, 2), generator=g).double(), torch.randint(
        0, classes, (n,), generator=g
    )


KEYS = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "map_at_r",
    "map": "mean_average_precision",
    "mrr": "mean_reciprocal_rank",
}


def assert_matches(
    got: RetrievalMetrics, want: dict[str, float], ks: list[int], full: bool
) -> None:
    for ref_key, attr in KEYS.items():
        if ref_key in ("map", "mrr") and not full:
            assert getattr(got, attr) is None
            continue
        # nothing scored (the reference has no mean): not computable, NaN
        expected = want.get(ref_key, math.nan)
        assert getattr(got, attr) == pytest.approx(expected, abs=1e-12, nan_ok=True), attr
    for k in ks:
        expected = want.get(f"recall@{k}", math.nan)
        assert got.recall_at_k[k] == pytest.approx(expected, abs=1e-12, nan_ok=True)


def check_against_reference(
    got: RetrievalMetrics,
    d: np.ndarray,
    yq: list[int],
    yg: list[int],
    same_set: bool,
    ks: list[int],
    full: bool,
) -> None:
    per_query = reference.retrieval_per_query(d, yq, yg, same_set, ks)
    overall, per_class, scored = reference.mean_scores(per_query, yq)
    assert (got.num_queries, got.num_excluded) == (scored, len(yq) - scored)
    assert_matches(got, overall, ks, full)
    assert sorted(got.per_class) == sorted(set(yq))
    for c, want in per_class.items():
        mine = got.per_class[c]
        assert mine.num_queries + mine.num_excluded == yq.count(c)
        assert_matches(mine, want, ks, full)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(
    ("n", "classes", "seed", "distance", "ties"),
    [
        (30, 3, 0, "euclidean", False),
        (45, 7, 1, "cosine", False),
        (25, 12, 2, "sqeuclidean", False),
        (40, 3, 3, "euclidean", True),
        (33, 2, 4, "sqeuclidean", True),
    ],
)
def test_retrieval_metrics_same_set_match_brute_force(
    n: int, classes: int, seed: int, distance: Any, ties: bool, full: bool
) -> None:
    x, y = grid_data(n, classes, seed) if ties else data(n, classes, seed)
    ks = [1, 3, 10]
    got = retrieval_metrics(x, y, recall_ks=ks, full_ranking=full, distance=distance, chunk=4)
    d = reference.distances(x.numpy(), distance)
    check_against_reference(got, d, y.tolist(), y.tolist(), True, ks, full)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(("nq", "ng", "seed", "ties"), [(20, 35, 5, False), (17, 30, 6, True)])
def test_retrieval_metrics_separate_gallery_match_brute_force(
    nq: int, ng: int, seed: int, ties: bool, full: bool
) -> None:
    make = grid_data if ties else data
    q, yq = make(nq, 5, seed)
    g, yg = make(ng, 4, seed + 100)  # class 4 of the queries is not in the gallery
    ks = [1, 2, 5]
    got = retrieval_metrics(q, yq, g, yg, recall_ks=ks, full_ranking=full, chunk=3)
    d = reference.cross_distances(q.numpy(), g.numpy(), "euclidean")
    check_against_reference(got, d, yq.tolist(), yg.tolist(), False, ks, full)


def test_retrieval_metrics_default_chunks_and_tiny_blocks_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = grid_data(50, 4, 7)
    want = retrieval_metrics(x, y, full_ranking=True)
    monkeypatch.setattr(blocks, "BLOCK", 60)  # about one query per chunk
    assert retrieval_metrics(x, y, full_ranking=True) == want
    assert retrieval_metrics(x, y) == retrieval_metrics(x, y, chunk=50)


def test_retrieval_metrics_collapsed_embeddings_score_their_worst() -> None:
    """All distances tie: no order of the labels can make a collapsed embedding look good."""
    y = torch.arange(4).repeat_interleave(5)  # class-sorted, the order that flatters index ties
    for full in (False, True):
        m = retrieval_metrics(torch.zeros(20, 3), y, recall_ks=(1, 15), full_ranking=full)
        assert (m.precision_at_1, m.r_precision, m.map_at_r) == (0.0, 0.0, 0.0)
        assert m.recall_at_k == {1: 0.0, 15: 0.0}
    m = retrieval_metrics(torch.zeros(20, 3), y, recall_ks=(16,), full_ranking=True)
    assert m.recall_at_k[16] == 1.0  # the first relevant item comes after all 15 others
    assert m.mean_reciprocal_rank == pytest.approx(1 / 16)
    assert m.mean_average_precision == pytest.approx(sum(i / (15 + i) for i in range(1, 5)) / 4)


def test_retrieval_metrics_match_pml_and_sklearn() -> None:
    pytest.importorskip("faiss")  # pytorch-metric-learning searches with faiss
    x, y = data(60, 5, 9)
    x = x.float()
    assert_rankings_kernel_proof(x, y)
    got = retrieval_metrics(x, y, full_ranking=True)
    at_r = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
    ).get_accuracy(x, y)
    full = AccuracyCalculator(
        include=("mean_average_precision", "mean_reciprocal_rank"), k=None
    ).get_accuracy(x, y)
    assert got.precision_at_1 == pytest.approx(at_r["precision_at_1"], abs=1e-6)
    assert got.r_precision == pytest.approx(at_r["r_precision"], abs=1e-6)
    assert got.map_at_r == pytest.approx(at_r["mean_average_precision_at_r"], abs=1e-6)
    assert got.mean_average_precision == pytest.approx(full["mean_average_precision"], abs=1e-6)
    assert got.mean_reciprocal_rank == pytest.approx(full["mean_reciprocal_rank"], abs=1e-6)
    # Per class, and mAP per query with scikit-learn's average precision.
    per_class = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        return_per_class=True,
    ).get_accuracy(x, y)
    classes = sorted(c for c, m in got.per_class.items() if m.num_queries)
    for name in ("precision_at_1", "r_precision"):
        assert [getattr(got.per_class[c], name) for c in classes] == pytest.approx(per_class[name])
    assert [got.per_class[c].map_at_r for c in classes] == pytest.approx(
        per_class["mean_average_precision_at_r"]
    )
    d = torch.cdist(x.double(), x.double()).numpy()
    aps = [
        average_precision_score(np.delete(y.numpy() == y[q].item(), q), -np.delete(d[q], q))
        for q in range(60)
    ]
    assert got.mean_average_precision == pytest.approx(float(np.mean(aps)), abs=1e-6)


def test_retrieval_metrics_separate_gallery_match_pml() -> None:
    pytest.importorskip("faiss")  # pytorch-metric-learning searches with faiss
    q, yq = data(40, 5, 9)
    g, yg = data(70, 4, 10)
    assert_rankings_kernel_proof(q.float(), yq, g.float(), yg)
    got = retrieval_metrics(q.float(), yq, g.float(), yg)
    pml = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
    ).get_accuracy(q.float(), yq, g.float(), yg, ref_includes_query=False)
    assert got.num_excluded == int((yq == 4).sum())
    assert got.precision_at_1 == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert got.r_precision == pytest.approx(pml["r_precision"], abs=1e-6)
    assert got.map_at_r == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


@needs_faiss
@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_faiss_backend_agrees_with_torch(distance: Any) -> None:
    x, y = data(80, 4, 15, dim=8)
    x = x.float()
    d_t, i_t = nearest_neighbors(x, x, 5, distance=distance, exclude_self=True, chunk=7)
    d_f, i_f = nearest_neighbors(x, x, 5, distance=distance, exclude_self=True, backend="faiss")
    error = gram_error(x, distance=distance)  # faiss's float32 kernel against torch's
    assert_same_neighbours(i_f, i_t, order_keys(x, None, distance), error)
    assert_distances_close(d_f, d_t, distance, error)
    q, yq = data(30, 4, 16, dim=8)
    for gallery in [None, (x, y)]:
        args = () if gallery is None else gallery
        assert_rankings_kernel_proof(q.float(), yq, *args, distance=distance)
        want = retrieval_metrics(q.float(), yq, *args, distance=distance)
        got = retrieval_metrics(q.float(), yq, *args, distance=distance, backend="faiss")
        assert_metrics_close(got, want, 1e-12)  # the same ranks, summed in another order


@needs_faiss
@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_backend_resolves_ties_like_torch(seed: int) -> None:
    x, y = grid_data(60, 3, seed)  # integer coordinates: the same exact ties in faiss
    ks = [1, 4]
    for gallery in [None, grid_data(40, 3, seed + 10)]:
        args = () if gallery is None else gallery
        want = retrieval_metrics(x.float(), y, *args, recall_ks=ks, chunk=9)
        got = retrieval_metrics(x.float(), y, *args, recall_ks=ks, chunk=9, backend="faiss")
        assert_metrics_close(got, want, 1e-12)
    d = reference.distances(x.numpy(), "euclidean")
    got = retrieval_metrics(x.float(), y, recall_ks=ks, backend="faiss")
    check_against_reference(got, d, y.tolist(), y.tolist(), True, ks, False)


def test_faiss_missing_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    x, y = data(10, 2, 0)
    with pytest.raises(ImportError, match=r"pip install 'tripletlab\[faiss\]' \(or use the torch"):
        retrieval_metrics(x, y, recall_ks=(1,), backend="faiss")


def test_retrieval_bad_input_names_the_problem() -> None:
    x, y = data(10, 2, 0)
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        retrieval_metrics(x, y, distance="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend 'annoy'"):
        retrieval_metrics(x, y, backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recall_ks entry=10 is larger than the gallery"):
        retrieval_metrics(x, y, recall_ks=(1, 10))
    with pytest.raises(ValueError, match="k=11 is larger than the gallery"):
        nearest_neighbors(x, x, 11)
    with pytest.raises(ValueError, match="NaN or Inf in 1 of 10 rows"):
        retrieval_metrics(x.index_fill(0, torch.tensor([3]), float("nan")), y)
    with pytest.raises(ValueError, match="gallery contain NaN"):
        retrieval_metrics(x, y, x.index_fill(0, torch.tensor([3]), float("nan")), y)
    with pytest.raises(ValueError, match="query_labels has 9 entries but queries has 10 rows"):
        retrieval_metrics(x, y[:9])
    with pytest.raises(ValueError, match="pass gallery and gallery_labels together"):
        retrieval_metrics(x, y, x)
    with pytest.raises(ValueError, match="queries have dimension 4 but the gallery has 3"):
        retrieval_metrics(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="faiss returns only the nearest k"):
        retrieval_metrics(x, y, full_ranking=True, backend="faiss")
    with pytest.raises(ValueError, match="1-D integer tensor"):
        retrieval_metrics(x, y.float())
    with pytest.raises(ValueError, match="NaN or Inf"):
        pair_accuracy(x.index_fill(0, torch.tensor([0]), float("inf")), y)
    with pytest.raises(ValueError, match="labels has 9 entries"):
        verification_scores(x, y[:9])


def test_retrieval_metrics_edge_cases() -> None:
    empty = retrieval_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), recall_ks=())
    assert math.isnan(empty.precision_at_1) and (empty.num_queries, empty.per_class) == (0, {})
    alone = retrieval_metrics(torch.randn(4, 2), torch.arange(4), recall_ks=(3,), full_ranking=True)
    assert alone.num_excluded == 4  # no query has a classmate: nothing is computable
    assert math.isnan(alone.recall_at_k[3])
    assert alone.mean_average_precision is not None and math.isnan(alone.mean_average_precision)
    assert alone.per_class[2].num_excluded == 1
