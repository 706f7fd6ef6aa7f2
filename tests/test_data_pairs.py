"""Tests for tripletlab.data.pairs: offline pairs and triplets, their invariants and
distributions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from data_helpers import gen

from tripletlab.data import DataError, pair_indices, triplet_indices

_LABEL_LAYOUTS = {
    "balanced": [c for c in range(4) for _ in range(5)],
    "unbalanced": [0] * 9 + [1] * 2 + [2] * 5 + [3] * 3,
    "singletons": [7, 7, 3, 9, 9, 9, 1, 5],  # 3, 1, 5 are alone in their class
    "sparse_ids": [100, -4, 100, -4, 2, 2, 2],
}


@pytest.mark.parametrize("layout", list(_LABEL_LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_indices_invariants(layout: str, seed: int) -> None:
    labels = torch.tensor(_LABEL_LAYOUTS[layout])
    i, j, same = pair_indices(labels, 400, generator=gen(seed))
    assert i.shape == j.shape == same.shape == (400,)
    assert i.dtype == j.dtype == torch.int64 and same.dtype == torch.bool
    for a, b, s in zip(i.tolist(), j.tolist(), same.tolist(), strict=True):
        if s:
            assert a != b and labels[a] == labels[b]
        else:
            assert labels[a] != labels[b]
    assert 120 < int(same.sum()) < 280  # Bernoulli(0.5) over 400 pairs
    # Each item is a negative pair's first item about equally often (permutation cycling).
    counts = torch.bincount(i[~same], minlength=len(labels))
    assert int(counts.max() - counts.min()) <= 1


def test_pair_indices_deterministic() -> None:
    labels = torch.tensor(_LABEL_LAYOUTS["unbalanced"])
    a = pair_indices(labels, 50, generator=gen(5))
    b = pair_indices(labels, 50, generator=gen(5))
    c = pair_indices(labels, 50, generator=gen(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_pair_negative_class_uniform_over_other_classes() -> None:
    # Class 1 holds 80% of the items, yet as in siamese-triplet a negative's class is drawn
    # uniformly among the other classes: half of class 0's negatives come from class 1.
    labels = torch.tensor([0] * 5 + [1] * 40 + [2] * 5)
    i, j, same = pair_indices(labels, 6000, generator=gen(0))
    from_zero = (~same) & (labels[i] == 0)
    share_one = float((labels[j[from_zero]] == 1).double().mean())
    assert 0.4 < share_one < 0.6


@pytest.mark.parametrize("layout", list(_LABEL_LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_indices_invariants(layout: str, seed: int) -> None:
    labels = torch.tensor(_LABEL_LAYOUTS[layout])
    a, p, n = triplet_indices(labels, 300, generator=gen(seed))
    assert a.shape == p.shape == n.shape == (300,)
    assert a.dtype == p.dtype == n.dtype == torch.int64
    assert bool((a != p).all())
    assert torch.equal(labels[a], labels[p])
    assert bool((labels[a] != labels[n]).all())
    sizes = Counter(labels.tolist())
    eligible = [k for k, y in enumerate(labels.tolist()) if sizes[y] >= 2]
    counts = torch.bincount(a, minlength=len(labels))
    assert set(torch.nonzero(counts).squeeze(1).tolist()) == set(eligible)  # singletons skipped
    assert int(counts[eligible].max() - counts[eligible].min()) <= 1


def test_positive_and_negative_choices_are_uniform() -> None:
    labels = torch.tensor([0] * 5 + [1] * 40 + [2] * 5)
    a, p, n = triplet_indices(labels, 20000, generator=gen(0))
    # The anchor's partner is uniform over the 4 other members of its class.
    counts = torch.bincount(p[a == 0], minlength=5)[:5]
    assert counts[0] == 0 and bool((counts[1:] > 0.8 * counts[1:].float().mean()).all())
    # The negative's class is uniform over the other classes (siamese-triplet), not its items.
    share_one = float((labels[n[labels[a] == 0]] == 1).double().mean())
    assert 0.45 < share_one < 0.55


def test_triplet_indices_deterministic_and_empty() -> None:
    labels = torch.tensor(_LABEL_LAYOUTS["balanced"])
    x = triplet_indices(labels, 40, generator=gen(1))
    y = triplet_indices(labels, 40, generator=gen(1))
    assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
    empty = triplet_indices(labels, 0, generator=gen(1))
    assert all(t.shape == (0,) for t in empty)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ([3, 3, 3], "at least 2 classes"),
        ([0, 1, 2], "at least 2 items"),
        ([], "at least 2 classes"),
    ],
)
@pytest.mark.parametrize("fn", [pair_indices, triplet_indices])
def test_pairs_and_triplets_errors(labels: list[int], words: str, fn: Callable[..., Any]) -> None:
    with pytest.raises(DataError, match=words):
        fn(torch.tensor(labels, dtype=torch.long), 5, generator=gen(0))


def test_pairs_and_triplets_bad_arguments() -> None:
    with pytest.raises(DataError, match="integer labels"):
        pair_indices(torch.tensor([0.0, 1.0]), 4, generator=gen(0))
    with pytest.raises(DataError, match=">= 0"):
        triplet_indices(torch.tensor([0, 0, 1]), -1, generator=gen(0))
