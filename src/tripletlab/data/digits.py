"""scikit-learn's bundled 8x8 digits (1,797 images), a tiny real dataset, as
:class:`~tripletlab.data.Splits` split per class by seed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tripletlab.data.sets import ImageSet, Splits, _make_splits, _stratified_split


def _split_set(
    images: Tensor, labels: Tensor, classes: tuple[str, ...], test_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    full = ImageSet(images, labels, classes)
    train_idx, test_idx = _stratified_split(
        labels, test_fraction, torch.Generator().manual_seed(seed)
    )
    return full.subset(train_idx), full.subset(test_idx)


def _load_digits(test_fraction: float, seed: int) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    images = torch.from_numpy(np.floor(pixels * 255.0 / 16.0 + 0.5).astype(np.uint8))
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    classes = tuple(str(d) for d in range(10))
    train, test = _split_set(images.unsqueeze(1), labels, classes, test_fraction, seed)
    return _make_splits("digits", train, test)
