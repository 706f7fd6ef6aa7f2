"""Datasets: :class:`ImageSet` (uint8 images, in memory or rows of the decoded-image cache
read on demand, int64 labels, class names, image paths) and :class:`Splits` (a train and a test
set with the train set's per-channel statistics), with the helpers every loader builds them
with: the statistics and a seeded stratified split; :func:`concat_images`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor

from tripletlab.data.errors import DataError
from tripletlab.data.imagecache import DiskImages

#: (N, C, H, W) uint8 images: a tensor in memory, or rows of the decoded-image cache
#: (:class:`~tripletlab.data.imagecache.DiskImages`) that indexing reads into one.
Images: TypeAlias = Tensor | DiskImages


def concat_images(parts: list[Images]) -> Images:
    """The images of ``parts`` one after the other: rows of the same cache file stay on disk;
    otherwise (N1 + N2 + ..., C, H, W) uint8 in memory."""
    first = parts[0]
    if isinstance(first, DiskImages) and all(
        isinstance(p, DiskImages) and p.file is first.file and p.channels == first.channels
        for p in parts
    ):
        rows = torch.cat([p.rows for p in parts if isinstance(p, DiskImages)])  # (N1 + N2,)
        return DiskImages(first.file, rows, first.channels)
    return torch.cat([p[:] for p in parts])  # (N1 + N2, C, H, W)


@dataclass(frozen=True)
class ImageSet:
    """Images and their labels.

    Attributes:
        images: (N, C, H, W) uint8 on the CPU: a contiguous tensor, or rows of the
            decoded-image cache (:class:`~tripletlab.data.imagecache.DiskImages`: image
            folders, csv tables and the benchmarks) that indexing reads.
        labels: (N,) int64, each an index into ``classes``.
        classes: class names; a class may have no images (after :func:`class_split`).
        paths: for image folders, each image's file path relative to the folder given as
            ``imagefolder:PATH`` (POSIX form, e.g. ``"cat/1.png"``); for the benchmarks
            relative to their PATH (``"images/001.Black_footed_Albatross/x.jpg"``); for csv
            tables as the table writes them; ``None`` for the IDX datasets and ``digits``.

    Raises:
        DataError: on construction, if the shapes, dtypes, label values or paths do not fit.
    """

    images: Images
    labels: Tensor
    classes: tuple[str, ...]
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, Tensor) and (
            self.images.dim() != 4 or self.images.dtype != torch.uint8
        ):
            raise DataError(
                f"ImageSet images must be uint8 of shape (N, C, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise DataError(
                f"ImageSet labels must be int64 of shape (N,), got {self.labels.dtype} of "
                f"shape {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ImageSet has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"ImageSet labels must lie in [0, {len(self.classes)}) to index its "
                f"{len(self.classes)} classes, got values in "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        if self.paths is not None and len(self.paths) != self.labels.shape[0]:
            raise DataError(
                f"ImageSet has {self.labels.shape[0]} images but {len(self.paths)} paths"
            )
        if isinstance(self.images, Tensor) and not self.images.is_contiguous():
            object.__setattr__(self, "images", self.images.contiguous())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask_or_index: Tensor) -> ImageSet:
        """The items picked by a (N,) bool mask or a (M,) integer index; same ``classes``.

        Raises:
            DataError: if a mask does not have shape (N,) or an index is not 1-D.
        """
        if mask_or_index.dtype == torch.bool:
            if mask_or_index.shape != self.labels.shape:
                raise DataError(
                    f"subset mask must have shape ({len(self)},), got {tuple(mask_or_index.shape)}"
                )
        elif mask_or_index.dim() != 1 or mask_or_index.dtype.is_floating_point:
            raise DataError(
                f"subset takes a (N,) bool mask or a 1-D integer index, got "
                f"{mask_or_index.dtype} of shape {tuple(mask_or_index.shape)}"
            )
        pick = mask_or_index.cpu()
        paths = None
        if self.paths is not None:
            rows = pick.nonzero().squeeze(1) if pick.dtype == torch.bool else pick
            paths = tuple(self.paths[i] for i in rows.tolist())
        images = (
            self.images.take(pick)
            if isinstance(self.images, DiskImages)
            else self.images[pick].contiguous()
        )
        return ImageSet(images, self.labels[pick], self.classes, paths)


@dataclass(frozen=True)
class Splits:
    """A dataset's train and test sets and the train set's per-channel statistics.

    Attributes:
        name: the spec it was loaded from, e.g. ``"fashion-mnist"`` or ``"imagefolder:/data"``.
        train, test: the two sets; they share ``classes`` and the image shape (C, H, W).
        mean, std: per-channel mean and (population) standard deviation of the train images
            scaled to [0, 1], each of length C, for :func:`normalize`. A channel with no
            variance gets std 1.0 so that normalising never divides by zero.
        gallery: for query/gallery datasets (``inshop:PATH``, a csv table with ``is_query``
            and ``is_gallery`` columns), the gallery searched, with ``test`` holding the
            queries; same ``classes`` and image shape. ``None`` (every other dataset): the test
            set is searched against itself, each item leaving itself out.
    """

    name: str
    train: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    std: tuple[float, ...]
    gallery: ImageSet | None = None

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise DataError(f"{self.name}: train and test sets must share the same classes")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train.images.shape[1:])} but test "
                f"images are {tuple(self.test.images.shape[1:])}"
            )
        if self.gallery is not None and self.gallery.classes != self.train.classes:
            raise DataError(f"{self.name}: the gallery must share the train set's classes")
        if self.gallery is not None and self.gallery.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"{self.name}: test images are {tuple(self.test.images.shape[1:])} but gallery "
                f"images are {tuple(self.gallery.images.shape[1:])}"
            )
        channels = self.train.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: mean and std need one value per channel ({channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )


#: Images on disk whose per-channel statistics are computed from an evenly spaced sample
#: of this many: reading every row of a large cache at each load (training, ``evaluate``,
#: ``embed``, ``serve``) would cost more than the decoding saved, and the sample's mean and
#: std differ from the whole set's by about 1e-3.
STATS_SAMPLE = 8192

#: Pixel values per chunk of :func:`_channel_stats` (2**24 float64 values: 128 MiB), so
#: that its memory does not grow with the image size.
STATS_CHUNK = 2**24


def _channel_stats(images: Images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of (N, C, H, W) uint8 images scaled to [0, 1].

    Accumulated in float64 over chunks of :data:`STATS_CHUNK` values to bound memory
    (whole images per chunk, at least one). Images on disk
    (:class:`~tripletlab.data.imagecache.DiskImages`) of more than :data:`STATS_SAMPLE` rows
    are measured on that many rows spaced evenly over the set (the same rows at every load);
    in-memory images are measured whole. Empty input or a channel with zero variance gives
    std 1.0 (and mean 0.0 for empty input).
    """
    if isinstance(images, DiskImages) and len(images) > STATS_SAMPLE:
        rows = torch.linspace(0, len(images) - 1, STATS_SAMPLE).round().long()  # (S,)
        images = images.take(rows)
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    per_image = max(1, channels * images.shape[2] * images.shape[3])
    chunk = max(1, STATS_CHUNK // per_image)  # 7,133 RGB images at 28 px, 111 at 224
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)  # (n, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square_().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        return (0.0,) * channels, (1.0,) * channels
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _make_splits(
    name: str, train: ImageSet, test: ImageSet, gallery: ImageSet | None = None
) -> Splits:
    mean, std = _channel_stats(train.images)
    return Splits(name=name, train=train, test=test, mean=mean, std=std, gallery=gallery)


def _stratified_split(
    labels: Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Seeded stratified split of item indices into (train, test), each sorted.

    Each class with n >= 2 items puts ``clamp(floor(n * f + 0.5), 1, n - 1)`` of them in test;
    a class with a single item stays in train.
    """
    n = labels.shape[0]
    keys = torch.rand(n, generator=generator)  # (N,) random tie-breakers
    by_key = torch.argsort(keys)
    order = by_key[torch.argsort(labels[by_key], stable=True)]  # by class, random within class
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts  # (K,) first position of each class in `order`
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n)
    rank -= starts[inverse]  # (N,) position of each item within its class
    n_test = torch.floor(counts.double() * test_fraction + 0.5).long()
    n_test = torch.minimum(n_test.clamp_min(1), counts - 1)  # (K,) 0 for single-item classes
    is_test = rank < n_test[inverse]
    return torch.nonzero(~is_test).squeeze(1), torch.nonzero(is_test).squeeze(1)
