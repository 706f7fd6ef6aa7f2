"""Tests for tripletlab.data.sets: ImageSet and Splits, their subsets and validation."""

from __future__ import annotations

import pytest
import torch
from data_helpers import toy_set

from tripletlab.data import DataError, ImageSet, Splits, sets


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


class _Reads:
    """(N, C, H, W) uint8 images that remember the largest slice read from them."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.largest = images, 0

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def __getitem__(self, index: slice) -> torch.Tensor:
        part = self.images[index]
        self.largest = max(self.largest, part.shape[0])
        return part


@pytest.mark.parametrize("chunk", [10**9, 3 * 5 * 5 * 4, 7])  # whole set; 4 images; under one
def test_channel_statistics_are_read_in_chunks_of_pixels(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    images = torch.randint(0, 256, (10, 3, 5, 5), dtype=torch.uint8)
    images[:, 1] = 7  # a constant channel: std 1.0
    monkeypatch.setattr(sets, "STATS_CHUNK", chunk)
    reads = _Reads(images)
    mean, std = sets._channel_stats(reads)  # type: ignore[arg-type]
    assert reads.largest == min(10, max(1, chunk // 75))
    x = images.double() / 255.0  # the oracle: each channel's values at once
    want_mean = x.mean(dim=(0, 2, 3))
    want_std = x.transpose(0, 1).reshape(3, -1).std(dim=1, correction=0)
    want_std[1] = 1.0
    # float64 sums of 250 values in [0, 1]: agreement to ~1e-13, far below 1e-10
    assert mean == pytest.approx(want_mean.tolist(), abs=1e-10)
    assert std == pytest.approx(want_std.tolist(), abs=1e-10)
