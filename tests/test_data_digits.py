"""Tests for tripletlab.data.digits: scikit-learn's digits and its seeded stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from tripletlab.data import load_dataset


def _expected_test_size(labels: torch.Tensor, fraction: float) -> int:
    counts = Counter(labels.tolist())
    return sum(min(max(int(np.floor(n * fraction + 0.5)), 1), n - 1) for n in counts.values())


def test_digits() -> None:
    splits = load_dataset("digits", seed=3)
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 1797
    assert train.images[:].shape[1:] == (1, 8, 8) and train.images[:].dtype == torch.uint8
    assert train.images[:].is_contiguous() and test.images[:].is_contiguous()
    assert train.labels.dtype == torch.int64
    assert train.classes == tuple(str(d) for d in range(10)) == test.classes
    assert int(train.images[:].max()) == 255 and int(train.images[:].min()) == 0
    all_labels = torch.cat([train.labels, test.labels])
    assert len(test) == _expected_test_size(all_labels, 0.2)
    # Stratified: each class's share of test within one item of its share of the whole.
    for c in range(10):
        n_c = int((all_labels == c).sum())
        assert abs(int((test.labels == c).sum()) - 0.2 * n_c) <= 1
    # Pixel values are the sklearn values x * 255 / 16, rounded.
    assert set(torch.unique(train.images).tolist()) <= {
        int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)
    }
    assert splits.name == "digits" and len(splits.mean) == 1


def test_digits_deterministic_per_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train.images[:], b.train.images[:]) and torch.equal(
        a.test.labels, b.test.labels
    )
    assert not torch.equal(a.test.images[:], c.test.images[:])
    small = load_dataset("digits", test_fraction=0.5)
    all_labels = torch.cat([small.train.labels, small.test.labels])
    assert len(small.test) == _expected_test_size(all_labels, 0.5)
