from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.neighbors import KNeighborsClassifier

from tripletlab.metrics import (
    knn_accuracy,
    nearest_neighbors,
    pair_accuracy,
    retrieval_scores,
)


def data(n: int, classes: int, seed: int, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) + y[:, None].double() * 0.7
    return x, y


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
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
    )
    pml = calc.get_accuracy(x.float(), y, ref_includes_query=True)
    assert got.precision_at_1 == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert got.r_precision == pytest.approx(pml["r_precision"], abs=1e-6)
    assert got.map_at_r == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)


def test_retrieval_edge_cases() -> None:
    empty = retrieval_scores(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert (empty.precision_at_1, empty.num_queries) == (0.0, 0)
    singletons = retrieval_scores(torch.randn(4, 2), torch.arange(4))
    assert singletons.num_excluded == 4
    assert singletons.map_at_r == 0.0


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_accuracy_matches_brute_force_and_sklearn(k: int) -> None:
    g, gl = data(80, 4, 3)
    q, ql = data(50, 4, 4)
    ours = knn_accuracy(q, ql, g, gl, k=k, chunk=16)
    correct = 0
    for qi in range(50):
        order = torch.argsort(torch.cdist(q[qi : qi + 1], g)[0])[:k].tolist()
        votes = [int(gl[j]) for j in order]
        # most votes; among equals, the label met first (the nearer item)
        best = max(votes, key=lambda lab: (votes.count(lab), -votes.index(lab)))
        correct += best == int(ql[qi])
    assert ours == pytest.approx(correct / 50)
    if k == 1:  # sklearn breaks voting ties differently (smallest label); same for k = 1
        clf = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(g.numpy(), gl.numpy())
        assert ours == pytest.approx(float((clf.predict(q.numpy()) == ql.numpy()).mean()))


def test_nearest_neighbors_chunked_and_self_excluded() -> None:
    x, _ = data(33, 3, 5)
    d, i = nearest_neighbors(x, x, 4, exclude_self=True, chunk=5)
    full = torch.cdist(x, x)
    full.fill_diagonal_(float("inf"))
    want = full.topk(4, largest=False)
    torch.testing.assert_close(d, want.values)
    assert torch.all(i != torch.arange(33)[:, None])
    with pytest.raises(ValueError, match="k=33 is larger than the gallery"):
        nearest_neighbors(x, x, 33, exclude_self=True)


def brute_pair_accuracy(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    pairs = [
        (float(np.linalg.norm(x[i] - x[j])), y[i] == y[j])
        for i in range(len(y))
        for j in range(i + 1, len(y))
    ]
    best, best_t = -1.0, 0.0
    for k in range(151):
        t = k / 100
        acc = sum((d <= t) == same for d, same in pairs) / len(pairs)
        if acc > best:
            best, best_t = acc, t
    return best, best_t, sum(not s for _, s in pairs) / len(pairs)


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_accuracy_matches_brute_force(seed: int) -> None:
    x, y = data(40, 4, seed, dim=2)
    x = torch.nn.functional.normalize(x, dim=1)  # distances within [0, 2] like real use
    got = pair_accuracy(x, y, chunk=9)
    acc, t, floor = brute_pair_accuracy(x.numpy(), y.numpy())
    assert got.accuracy == pytest.approx(acc)
    assert got.threshold == pytest.approx(t)
    assert got.floor == pytest.approx(floor)
    assert got.num_pairs == 40 * 39 // 2
