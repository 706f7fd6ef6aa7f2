"""A run's data: the dataset its config names, the class-disjoint split and validation
hold-out applied to it, and the :class:`~tripletlab.training.InferenceSpec` its checkpoints
store."""

from __future__ import annotations

from pathlib import Path

import torch

from tripletlab.data import ImageSet, Splits, class_split, load_dataset
from tripletlab.training.checkpoints import InferenceSpec
from tripletlab.training.config import TrainConfig


def load_config_dataset(config: TrainConfig) -> Splits:
    """The dataset ``config`` names, as :func:`tripletlab.data.load_dataset` loads it (its own
    train/test split, before any class split or validation hold-out)."""
    return load_dataset(
        config.data.dataset,
        data_dir=Path(config.data.data_dir) if config.data.data_dir else None,
        image_size=config.data.image_size,
        strict=config.data.strict,
        seed=config.run.seed,
    )


def has_class_split(config: TrainConfig) -> bool:
    """Whether the run trains on a subset of the classes (its test classes unseen)."""
    d = config.data
    return bool(d.train_classes or d.test_classes or d.unseen_classes)


def prepare_data(config: TrainConfig) -> tuple[Splits, ImageSet | None]:
    """Load the dataset, apply a class-disjoint split, and hold out a validation set.

    Returns the splits (train without the validation items) and the validation set (or
    ``None`` with ``val_size = 0``). The validation items are a seeded random subset of the
    training split; they pick the best checkpoint, so the test split is never looked at
    before the end of the run.
    """
    splits = load_config_dataset(config)
    if has_class_split(config):
        splits = class_split(
            splits,
            train_classes=config.data.train_classes,
            test_classes=config.data.test_classes,
            unseen_classes=config.data.unseen_classes,
        )
    n = len(splits.train)
    val_size = min(config.data.val_size, n // 5)
    if val_size <= 0:
        return splits, None
    g = torch.Generator().manual_seed(config.run.seed + 17)
    perm = torch.randperm(n, generator=g)
    val = splits.train.subset(perm[:val_size])
    train = splits.train.subset(perm[val_size:].sort().values)
    return Splits(splits.name, train, splits.test, splits.mean, splits.std), val


def inference_spec(config: TrainConfig, splits: Splits) -> InferenceSpec:
    """What a checkpoint of this run stores for inference: the training images' shape, their
    normalisation and class names, the embedding and how to compute it."""
    images = splits.train.images  # (N, C, H, W) uint8
    return InferenceSpec(
        channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
        mean=tuple(splits.mean),
        std=tuple(splits.std),
        classes=tuple(splits.train.classes),
        embedding_dim=config.model.embedding_dim,
        normalized=config.model.normalize_embeddings,
        distance=config.objective.distance,
        tta=bool(config.data.tta),
        amp=config.run.amp,
    )
