"""Scores of an embedded set (:mod:`tripletlab.scores`): the metrics against
closed forms and loops, the k-NN vote, the argument checks and the seeded subsamples."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tripletlab import scores
from tripletlab.report import format_value, metric_notes
from tripletlab.scores import evaluate_embeddings, to_json


def clusters(n_per: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight, well separated clusters: every metric at its best."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per)
    centres = torch.eye(classes, 4) * 10.0
    return centres[y] + 0.001 * torch.randn(len(y), 4, generator=g), y


def test_separated_clusters_score_perfectly() -> None:
    x, y = clusters()
    m = evaluate_embeddings(x, y, gallery=clusters(seed=1), held_out=clusters(seed=2))
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_8", "knn_accuracy"):
        assert m[key] == 1.0, key
    assert m["roc_auc"] == 1.0 and m["tar_at_far_1e-3"] == 1.0
    assert m["nmi"] == pytest.approx(1.0) and m["ami"] == pytest.approx(1.0)
    # pairs at distance ~0.001 (same) or ~14 (different): the grid 0.00, 0.01, ... splits
    # them, on the test pairs and on the held-out ones alike
    assert m["pair_accuracy"] == 1.0 and m["held_out_pair_accuracy"] == 1.0
    assert m["pair_floor"] == pytest.approx(108 / 153)  # 3 classes of 6: 153 pairs, 45 same
    assert m["knn_gallery"] == "train" and m["num_test"] == 18
    assert m["held_out_pairs_from"] == "validation (18 items)"


def test_collapsed_embedding_scores_its_worst() -> None:
    y = torch.arange(3).repeat_interleave(4)
    m = evaluate_embeddings(torch.zeros(12, 3), y, metrics=["retrieval", "verification"])
    assert m["precision_at_1"] == 0.0 and m["map_at_r"] == 0.0
    assert m["roc_auc"] == 0.5 and m["tar_at_far_1e-3"] == 0.0


def test_groups_select_keys() -> None:
    x, y = clusters()
    m = evaluate_embeddings(x, y, metrics=["knn"])
    assert set(m) == {"knn_accuracy", "knn_gallery", "knn_k", "num_test"}
    assert m["knn_gallery"] == "leave-one-out"
    m = evaluate_embeddings(x, y, metrics=["pairs"])  # no held-out set: no held-out keys
    assert "held_out_pair_accuracy" not in m and "pair_threshold" in m


def brute_knn(
    x: torch.Tensor, y: torch.Tensor, k: int, gallery: tuple[torch.Tensor, torch.Tensor] | None
) -> float:
    """k-NN accuracy with float64 loops: leave-one-out without a gallery; the most frequent
    label of the k nearest (nearer first, then lower index), ties to the earliest vote."""
    gx, gy = (x, y) if gallery is None else gallery
    right = 0
    for i in range(len(x)):
        d = sorted(
            (float((x[i].double() - gx[j].double()).norm()), j)
            for j in range(len(gx))
            if gallery is not None or j != i
        )
        votes = [int(gy[j]) for _, j in d[:k]]
        best = max(votes, key=lambda c: (votes.count(c), -votes.index(c)))
        right += best == int(y[i])
    return right / len(x)


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_knn_matches_a_loop(k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    got = evaluate_embeddings(x, y, k=k, metrics=["knn"])["knn_accuracy"]
    assert got == pytest.approx(brute_knn(x, y, k, None))
    gallery = torch.randn(25, 3, generator=g), torch.randint(0, 4, (25,), generator=g)
    got = evaluate_embeddings(x, y, gallery=gallery, k=k, metrics=["knn"])["knn_accuracy"]
    assert got == pytest.approx(brute_knn(x, y, k, gallery))


def test_knn_leaves_out_the_query_among_duplicates() -> None:
    # Items 0 and 1 coincide: each must find the other, not itself.
    x = torch.tensor([[0.0], [0.0], [5.0], [5.1]])
    m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]), metrics=["knn"])
    assert m["knn_accuracy"] == 1.0


def test_knn_progress_reports_chunks() -> None:
    x, y = clusters(n_per=700)  # 2,100 queries: chunks of 1,024
    calls: list[tuple[str, int, int]] = []
    evaluate_embeddings(x, y, metrics=["knn"], progress=lambda *a: calls.append(a))
    knn = [c for c in calls if "NN" in c[0]]
    assert [c[1] for c in knn] == [0, 1024, 2048, 2100] and knn[0][2] == 2100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ["knn", "speed"]}, "unknown metric group 'speed'; choose one of"),
        ({"k": 18}, "k=18 neighbours asked for but the rest of the test set has 17 items"),
        ({"k": 0}, "pass 1 <= k <= 17"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    x, y = clusters()
    with pytest.raises(ValueError, match=message):
        evaluate_embeddings(x, y, **kwargs)  # type: ignore[arg-type]


def test_nan_embeddings_are_refused() -> None:
    x, y = clusters()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf embeddings for 1 of 18 test images"):
        evaluate_embeddings(x, y)


def test_large_sets_are_subsampled_with_a_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scores, "CLUSTERING_MAX_ITEMS", 10)
    monkeypatch.setattr(scores, "VERIFICATION_MAX_ITEMS", 12)
    x, y = clusters(n_per=10)
    a = evaluate_embeddings(x, y, metrics=["clustering", "verification"], seed=3)
    b = evaluate_embeddings(x, y, metrics=["clustering", "verification"], seed=3)
    assert a == b and a["clustering_items"] == 10 and a["verification_items"] == 12


# ------------------------------------------------------------------ scores that cannot be computed


def test_singleton_classes_give_none_with_notes_never_0_or_1() -> None:
    """Every class with one test item: no retrieval query, no positive pair, clustering of
    singletons; each score is None (printed "-"), with a note saying why."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    m = evaluate_embeddings(x, torch.arange(6), k=1)
    for key in ("precision_at_1", "map_at_r", "r_precision", "recall_at_1", "knn_accuracy"):
        assert m[key] is None, key
    for key in ("pair_accuracy", "pair_threshold", "roc_auc", "nmi", "ami"):
        assert m[key] is None, key
    assert m["num_excluded_queries"] == 6 and m["pair_floor"] == 1.0
    notes = m["notes"]
    assert isinstance(notes, list) and len(notes) >= 4
    assert any("single test image" in n for n in notes)
    assert format_value(m["precision_at_1"]) == "-"
    assert set(notes) <= set(metric_notes(m))


def test_computable_scores_have_no_notes() -> None:
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
    m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]))
    assert "notes" not in m and m["precision_at_1"] == 1.0 and m["nmi"] is not None


def test_to_json_writes_nan_and_inf_as_null_at_any_depth() -> None:
    text = to_json({"a": math.nan, "g": {"b": [1.0, math.inf]}, "n": None})
    assert json.loads(text) == {"a": None, "g": {"b": [1.0, None]}, "n": None}
