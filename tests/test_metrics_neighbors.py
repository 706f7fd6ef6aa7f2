"""tripletlab.metrics.neighbors: the chunked neighbour search and k-NN accuracy against
brute force and scikit-learn."""

from __future__ import annotations

import pytest
import torch
from metrics_data import data
from sklearn.neighbors import KNeighborsClassifier

from tripletlab.metrics import knn_accuracy, nearest_neighbors


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
