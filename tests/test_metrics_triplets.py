"""tripletlab.metrics.triplets: fixed triplets' invariants and the ordering accuracy against
brute force."""

from __future__ import annotations

from typing import Any

import pytest
import reference
import torch
from metrics_data import data

from tripletlab.metrics import fixed_triplets, triplet_accuracy


@pytest.mark.parametrize("layout", ["balanced", "unbalanced", "singletons", "one_class", "pair"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_triplets_invariants(layout: str, seed: int) -> None:
    from conftest import make_labels

    y = make_labels(layout, seed)
    a, p, n = fixed_triplets(y, seed=seed)
    assert a.dtype == p.dtype == n.dtype == torch.long
    assert list(zip(a.tolist(), p.tolist(), strict=True)) == reference.fixed_anchor_positive(
        y.tolist()
    )
    if a.numel():
        assert bool(((y[a] == y[p]) & (y[a] != y[n])).all())
        _, counts = torch.unique(y[a], return_counts=True)
        assert len(set(counts.tolist())) == 1  # every anchor class weighs the same
    again = fixed_triplets(y, seed=seed)
    assert all(torch.equal(u, v) for u, v in zip((a, p, n), again, strict=True))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_accuracy_matches_brute_force(distance: Any) -> None:
    x, y = data(70, 5, 3)
    t = fixed_triplets(y, seed=4)
    got = triplet_accuracy(x, y, t, distance=distance)
    triplets = list(zip(*(v.tolist() for v in t), strict=True))
    acc, per_class = reference.triplet_accuracy(
        reference.distances(x.numpy(), distance), y.tolist(), triplets
    )
    assert got.accuracy == pytest.approx(acc)
    assert got.per_class == pytest.approx(per_class)
    assert got.num_triplets == len(triplets)
    collapsed = triplet_accuracy(torch.zeros(70, 3), y, t)
    assert collapsed.accuracy == 0.0  # ties count as wrong
    with pytest.raises(ValueError, match=r"y\[a\] == y\[p\] != y\[n\]"):
        triplet_accuracy(x, y, (t[0], t[2], t[1]))
