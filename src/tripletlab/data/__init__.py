"""Datasets as uint8 images (in memory, or read on demand from the decoded-image cache):
IDX files (Fashion-MNIST, MNIST), scikit-learn's digits
and image folders; class-disjoint splits; offline pairs and triplets; batch augmentation.

Datasets:

- ``fashion-mnist`` (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
  Benchmarking Machine Learning Algorithms", 2017, arXiv:1708.07747) and ``mnist`` (LeCun,
  Bottou, Bengio and Haffner, "Gradient-based learning applied to document recognition", 1998):
  the official 60,000/10,000 split, read from IDX files found by :func:`locate_files` and
  verified by SHA-256.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), a tiny real dataset.
- ``imagefolder:PATH``: one sub-folder of images per class (PNG, JPEG, GIF, WEBP, TIFF, BMP:
  :data:`IMAGE_SUFFIXES`).
- ``csv:FILE``: a table of ``path,label[,split]`` rows (open-metric-learning's ``df.csv`` too).
- ``cub200:PATH``, ``cars196:PATH``, ``sop:PATH``, ``inshop:PATH``: CUB-200-2011, Cars196,
  Stanford Online Products and In-Shop read from their extracted archives, with the
  class-disjoint splits of deep metric learning (In-Shop: train, query and gallery).

Pairs and triplets follow the offline datasets of siamese-triplet (SiameseMNIST, TripletMNIST):
draw fresh ones every epoch for training and one fixed seeded set for testing::

    splits = load_dataset("fashion-mnist")
    test_triplets = triplet_indices(splits.test.labels, 10_000,
                                    generator=torch.Generator().manual_seed(0))  # fixed
    g = torch.Generator().manual_seed(1)
    for epoch in range(num_epochs):
        a, p, n = triplet_indices(splits.train.labels, len(splits.train), generator=g)  # fresh
        for batch in torch.arange(len(a)).split(128):
            items = torch.cat([a[batch], p[batch], n[batch]])  # (3 * 128,)
            x = normalize(augment(splits.train.images[items], crop_padding=2,
                                  hflip=default_hflip(splits.name), generator=g),
                          splits.mean, splits.std)  # (384, C, H, W) float32
            ...

Every problem with the data raises :class:`DataError`, a ``ValueError`` with a one-line message
that names the problem and its fix. Files are only ever written through a temporary file in the
same folder and ``os.replace``, so nothing already there is damaged by a failed write.

One module per concept, all re-exported here:

- :mod:`~tripletlab.data.errors`: :class:`DataError`.
- :mod:`~tripletlab.data.sets`: :class:`ImageSet`, :class:`Splits` and their statistics.
- :mod:`~tripletlab.data.idx`: reading IDX files.
- :mod:`~tripletlab.data.idx_datasets`: ``fashion-mnist`` and ``mnist``: checksums, locating,
  loading (downloads go through :func:`tripletlab.download.download_file`).
- :mod:`~tripletlab.data.digits`: scikit-learn's digits.
- :mod:`~tripletlab.data.decode`: decoding one image file (:func:`decode_image`,
  :func:`read_image_file`).
- :mod:`~tripletlab.data.imagecache`: the decoded-image cache and :class:`DiskImages`.
- :mod:`~tripletlab.data.imagefolder`: ``imagefolder:PATH`` and the files a list names.
- :mod:`~tripletlab.data.csvtable`: ``csv:FILE``.
- :mod:`~tripletlab.data.benchmarks`: the retrieval benchmarks and where to get them.
- :mod:`~tripletlab.data.load`: :func:`load_dataset`, :func:`absolute_dataset` and
  :func:`default_hflip`.
- :mod:`~tripletlab.data.class_disjoint`: :func:`class_split`.
- :mod:`~tripletlab.data.pairs`: :func:`pair_indices`, :func:`triplet_indices`.
- :mod:`~tripletlab.data.transforms`: :func:`augment`, :func:`normalize`,
  :func:`default_augmentation`.
- :mod:`~tripletlab.data.photo`: :func:`photo_augment` (random resized crop, flip, colour
  jitter, greyscale; torchvision's semantics, batched) and its parts.
"""

from __future__ import annotations

from tripletlab.data.benchmarks import BENCHMARKS, Benchmark
from tripletlab.data.class_disjoint import class_split
from tripletlab.data.csvtable import CSV_SPLITS
from tripletlab.data.decode import IMAGE_SUFFIXES, decode_image, read_image_file
from tripletlab.data.errors import DataError
from tripletlab.data.idx import read_idx, read_idx_pair
from tripletlab.data.idx_datasets import (
    IDX_DATASETS,
    IDX_PARTS,
    SYSTEM_DATA_ROOTS,
    IdxDataset,
    IdxFile,
    IdxPart,
    locate_files,
)
from tripletlab.data.imagecache import (
    CacheSettings,
    DiskImages,
    Progress,
    decode_files,
    default_image_cache,
    default_workers,
)
from tripletlab.data.imagefolder import read_listed_images
from tripletlab.data.load import (
    CSV_PREFIX,
    DATASET_FORMS,
    DATASETS,
    IMAGEFOLDER_PREFIX,
    PATH_FORMS,
    DatasetName,
    absolute_dataset,
    default_hflip,
    default_image_size,
    load_dataset,
)
from tripletlab.data.pairs import pair_indices, triplet_indices
from tripletlab.data.photo import photo_augment
from tripletlab.data.sets import Images, ImageSet, Splits, concat_images
from tripletlab.data.transforms import (
    AUGMENTATIONS,
    Augmentation,
    augment,
    default_augmentation,
    normalize,
)
from tripletlab.io import cache_dir

__all__ = [
    "AUGMENTATIONS",
    "BENCHMARKS",
    "CSV_PREFIX",
    "CSV_SPLITS",
    "DATASETS",
    "DATASET_FORMS",
    "IDX_DATASETS",
    "IDX_PARTS",
    "IMAGEFOLDER_PREFIX",
    "IMAGE_SUFFIXES",
    "PATH_FORMS",
    "SYSTEM_DATA_ROOTS",
    "Augmentation",
    "Benchmark",
    "CacheSettings",
    "DataError",
    "DatasetName",
    "DiskImages",
    "IdxDataset",
    "IdxFile",
    "IdxPart",
    "ImageSet",
    "Images",
    "Progress",
    "Splits",
    "absolute_dataset",
    "augment",
    "cache_dir",
    "class_split",
    "concat_images",
    "decode_files",
    "decode_image",
    "default_augmentation",
    "default_hflip",
    "default_image_cache",
    "default_image_size",
    "default_workers",
    "load_dataset",
    "locate_files",
    "normalize",
    "pair_indices",
    "photo_augment",
    "read_idx",
    "read_idx_pair",
    "read_image_file",
    "read_listed_images",
    "triplet_indices",
]
