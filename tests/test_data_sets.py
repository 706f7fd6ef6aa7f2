"""Tests for tripletlab.data.sets: ImageSet and Splits, their subsets and validation."""

from __future__ import annotations

import pytest
import torch
from data_helpers import toy_set

from tripletlab.data import DataError, ImageSet, Splits


def test_imageset_subset_and_validation() -> None:
    s = toy_set([0, 1, 2, 1])
    assert len(s) == 4
    by_mask = s.subset(s.labels == 1)
    assert by_mask.labels.tolist() == [1, 1] and by_mask.classes == s.classes
    assert by_mask.images[:][:, 0, 0, 0].tolist() == [1, 3]
    assert s.subset(torch.tensor([3, 0])).labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="mask"):
        s.subset(torch.tensor([True, False]))
    with pytest.raises(DataError, match="index"):
        s.subset(torch.tensor([0.5]))
    with pytest.raises(DataError, match="lie in"):
        toy_set([0, 10])
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), ("a",))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageSet(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ("a",)
        )
    strided = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)[..., ::2]
    assert ImageSet(strided, torch.zeros(2, dtype=torch.long), ("a",)).images[:].is_contiguous()


def test_imageset_paths_follow_subsets() -> None:
    s = toy_set([0, 1, 2, 1])
    assert s.paths is None and s.subset(s.labels == 1).paths is None
    named = ImageSet(s.images, s.labels, s.classes, ("w", "x", "y", "z"))
    assert named.subset(named.labels == 1).paths == ("x", "z")
    assert named.subset(torch.tensor([3, 0])).paths == ("z", "w")
    assert named.subset(torch.tensor([], dtype=torch.long)).paths == ()
    with pytest.raises(DataError, match="4 images but 3 paths"):
        ImageSet(s.images, s.labels, s.classes, ("a", "b", "c"))


def test_splits_validation() -> None:
    s = toy_set([0, 1])
    with pytest.raises(DataError, match="one value per channel"):
        Splits("x", s, s, (0.5, 0.5), (1.0, 1.0))
    other = ImageSet(s.images, s.labels, tuple("abcdefghij"))
    with pytest.raises(DataError, match="same classes"):
        Splits("x", s, other, (0.5,), (1.0,))
