"""Scores of an embedded set (:mod:`tripletlab.scores`): the metrics against
closed forms and loops, the k-NN vote, the argument checks and the seeded subsamples."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tripletlab import scores
from tripletlab.data import ImageSet
from tripletlab.models import build_model
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
    # a threshold fitted on held-out pairs that has no test pair to score is missing too
    held = (torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 2)
    m = evaluate_embeddings(x, torch.arange(6), k=1, held_out=held)
    assert m["held_out_pair_accuracy"] is None and m["held_out_pair_threshold"] is None


def test_computable_scores_have_no_notes() -> None:
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
    m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]))
    assert "notes" not in m and m["precision_at_1"] == 1.0 and m["nmi"] is not None


def test_to_json_writes_nan_and_inf_as_null_at_any_depth() -> None:
    text = to_json({"a": math.nan, "g": {"b": [1.0, math.inf]}, "n": None})
    assert json.loads(text) == {"a": None, "g": {"b": [1.0, None]}, "n": None}


# ------------------------------------------------------------------------- query and gallery


def brute_query_gallery(
    q: torch.Tensor, qy: torch.Tensor, g: torch.Tensor, gy: torch.Tensor, ks: tuple[int, ...]
) -> dict[str, float]:
    """Precision@1, R-precision, MAP@R and Recall@K of each query against the gallery, with
    float64 loops (distinct distances: no ties), averaged over the queries whose class has
    gallery items; and the 1-NN accuracy over every query."""
    sums = dict.fromkeys(("precision_at_1", "r_precision", "map_at_r"), 0.0)
    sums.update({f"recall_at_{k}": 0.0 for k in ks})
    scored = hits = 0
    for i in range(len(q)):
        d = [float((q[i].double() - g[j].double()).norm()) for j in range(len(g))]
        ranked = [int(gy[j]) == int(qy[i]) for j in sorted(range(len(g)), key=d.__getitem__)]
        hits += ranked[0]
        r = sum(ranked)
        if r == 0:
            continue
        scored += 1
        sums["precision_at_1"] += ranked[0]
        sums["r_precision"] += sum(ranked[:r]) / r
        sums["map_at_r"] += sum(sum(ranked[: i + 1]) / (i + 1) for i in range(r) if ranked[i]) / r
        for k in ks:
            sums[f"recall_at_{k}"] += any(ranked[:k])
    out = {key: v / scored for key, v in sums.items()}
    out["knn_accuracy"] = hits / len(q)
    out["num_excluded_queries"] = len(q) - scored
    return out


def test_query_gallery_by_hand() -> None:
    """Queries 0.0 (class 0), 3.0 (class 1), 7.0 (class 2) against a gallery 1.0 (0), 2.5
    (1), 4.0 (1), 10.0 (0): query 0 ranks 0, 1, 1, 0 (P@1 1, R-precision 1/2, MAP@R 1/2);
    query 3 ranks 1, 1, 0, 0 (all 1); class 2 has no gallery item: excluded. 1-NN: 2 of 3."""
    q, g = torch.tensor([[0.0], [3.0], [7.0]]), torch.tensor([[1.0], [2.5], [4.0], [10.0]])
    m = evaluate_embeddings(
        q,
        torch.tensor([0, 1, 2]),
        query_gallery=(g, torch.tensor([0, 1, 1, 0])),
        metrics=["retrieval", "knn"],
    )
    assert (m["precision_at_1"], m["r_precision"], m["map_at_r"]) == (1.0, 0.75, 0.75)
    assert m["recall_at_1"] == 1.0 and m["recall_at_4"] == 1.0 and "recall_at_8" not in m
    assert m["knn_accuracy"] == pytest.approx(2 / 3)
    assert m["num_excluded_queries"] == 1 and m["num_test"] == 3 and m["num_gallery"] == 4
    assert m["retrieval_gallery"] == "gallery" and m["knn_gallery"] == "gallery"


@pytest.mark.parametrize(("nq", "ng"), [(5, 9), (30, 20), (40, 60)])
@pytest.mark.parametrize("seed", [0, 1])
def test_query_gallery_matches_a_loop(nq: int, ng: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q, qy = torch.randn(nq, 3, generator=g), torch.randint(0, 5, (nq,), generator=g)
    x, xy = torch.randn(ng, 3, generator=g), torch.randint(0, 4, (ng,), generator=g)
    train = torch.randn(10, 3, generator=g), torch.arange(10) % 5  # not used for k-NN
    m = evaluate_embeddings(
        q, qy, gallery=train, query_gallery=(x, xy), metrics=["retrieval", "knn"]
    )
    want = brute_query_gallery(q, qy, x, xy, tuple(k for k in (1, 2, 4, 8) if k <= ng))
    for key, value in want.items():
        assert m[key] == pytest.approx(value), key


def test_query_gallery_without_a_relevant_item_is_none_with_a_note() -> None:
    q, g = torch.randn(3, 2), torch.randn(4, 2)
    m = evaluate_embeddings(
        q, torch.zeros(3, dtype=torch.long), query_gallery=(g, torch.ones(4, dtype=torch.long))
    )
    assert m["precision_at_1"] is None and m["map_at_r"] is None and m["recall_at_4"] is None
    assert m["num_excluded_queries"] == 3 and m["knn_accuracy"] == 0.0
    notes = m["notes"]
    assert isinstance(notes, list) and any("no query has an item of its class" in n for n in notes)
    with pytest.raises(ValueError, match="k=5 neighbours asked for but the test gallery has 4"):
        evaluate_embeddings(q, torch.zeros(3, dtype=torch.long), query_gallery=(g, g[:, 0]), k=5)


def test_baselines_score_queries_against_the_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    queries = ImageSet(
        torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=g),
        torch.tensor([0, 0, 1, 1, 2, 2]),
        ("a", "b", "c"),
    )
    gallery = ImageSet(
        torch.randint(0, 256, (9, 1, 4, 4), dtype=torch.uint8, generator=g),
        torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]),
        ("a", "b", "c"),
    )
    net = build_model("small", in_channels=1, image_size=4, embedding_dim=4, width=4)
    cpu = torch.device("cpu")
    b = scores.baseline_scores(queries, net, ((0.5,), (0.25,)), cpu, gallery=gallery)
    raw = evaluate_embeddings(
        queries.images[:].flatten(1).float() / 255,
        queries.labels,
        query_gallery=(gallery.images[:].flatten(1).float() / 255, gallery.labels),
        distance="cosine",
        metrics=["retrieval"],
    )
    assert b["raw_pixels"] == {"precision_at_1": raw["precision_at_1"], "map_at_r": raw["map_at_r"]}
    assert b["items"] == 6 and b["gallery_items"] == 9 and "notes" not in b
    monkeypatch.setattr(scores, "BASELINE_MAX_ITEMS", 5)  # both sides capped, seeded
    b = scores.baseline_scores(queries, net, ((0.5,), (0.25,)), cpu, gallery=gallery)
    assert b["items"] == 5 and b["gallery_items"] == 5
    assert any("5 of the 9 gallery items" in n for n in b["notes"])


def test_queries_that_are_also_gallery_images_get_a_note() -> None:
    """A csv table's rows flagged both query and gallery sit in both sets under one path:
    the query may find itself, which the notes say."""
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 4, 4).contiguous()
    labels, classes = torch.tensor([0, 0, 1, 1]), ("a", "b")
    queries = ImageSet(images[:2], labels[:2], classes, ("q.png", "both.png"))
    gallery = ImageSet(images[1:], labels[1:], classes, ("both.png", "g1.png", "g2.png"))
    net = build_model("small", in_channels=1, image_size=4, embedding_dim=4, width=4).eval()
    stats, cpu = ((0.5,), (0.25,)), torch.device("cpu")
    m = scores.evaluate_images(net, queries, stats, cpu, query_gallery=gallery, metrics=["knn"])
    notes = m["notes"]
    assert isinstance(notes, list) and "1 of the 2 queries are also gallery images" in notes[-1]
    alone = ImageSet(images[2:], labels[2:], classes, ("g1.png", "g2.png"))
    m = scores.evaluate_images(net, queries, stats, cpu, query_gallery=alone, metrics=["knn"])
    assert m["knn_gallery"] == "gallery" and m["num_gallery"] == 2 and "notes" not in m


def test_knn_against_the_training_set_leaves_out_the_classes_it_lacks() -> None:
    """A small class whose every training image went to validation: its test items have no
    class-mate in the gallery; they are left out of the k-NN accuracy (counted), the rest are
    scored against the training set, not the whole set leave-one-out."""
    x = torch.tensor([[0.0], [0.1], [1.0], [1.1], [5.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    gallery = (torch.tensor([[0.05], [0.12], [1.0], [5.1]]), torch.tensor([0, 1, 1, 3]))
    m = evaluate_embeddings(x, y, gallery=gallery, metrics=["knn"])
    # 0.0 -> 0.05 (class 0), 1.0 and 1.1 -> 1.0 (class 1): right; 0.1 -> 0.12 (class 1):
    # wrong; 5.0 (class 2, not in the gallery): left out
    assert m["knn_accuracy"] == 0.75 and m["knn_excluded_queries"] == 1
    assert m["knn_gallery"] == "train"
    notes = m["notes"]
    assert isinstance(notes, list)
    assert any("k-NN accuracy of the 4 test images whose class" in n for n in notes)
    full = evaluate_embeddings(x[:4], y[:4], gallery=gallery, metrics=["knn"])
    assert "knn_excluded_queries" not in full and full["knn_accuracy"] == 0.75
    none = evaluate_embeddings(x[4:], y[4:], gallery=gallery, metrics=["knn"])  # class 2 only
    assert none["knn_accuracy"] is None and none["knn_excluded_queries"] == 1
    assert none["notes"] == ["test: no k-NN accuracy: no test image's class has training images"]
