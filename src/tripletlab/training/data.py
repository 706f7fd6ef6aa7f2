"""A run's data: the dataset its config names (as a pretrained backbone takes it), the
class-disjoint split and validation hold-out applied to it, and the
:class:`~tripletlab.training.InferenceSpec` its checkpoints store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tripletlab.checks import counted, printable
from tripletlab.data import (
    CacheSettings,
    DataError,
    DiskImages,
    ImageSet,
    Progress,
    Splits,
    class_split,
    default_image_cache,
    default_workers,
    load_dataset,
)
from tripletlab.models import IMAGENET_MEAN, IMAGENET_STD
from tripletlab.training.checkpoints import InferenceSpec
from tripletlab.training.config import DEFAULT_VAL_CLASSES, TrainConfig


def cache_folder(config: TrainConfig) -> Path:
    """The run's cache folder: ``--cache-dir``, else
    :func:`~tripletlab.data.default_image_cache`. Decoded images are cached there, and a
    frozen backbone's features under its ``features/``."""
    d = config.data
    return Path(d.cache_dir).expanduser() if d.cache_dir else default_image_cache()


def load_config_dataset(config: TrainConfig, progress: Progress | None = None) -> Splits:
    """The dataset ``config`` names, as :func:`tripletlab.data.load_dataset` loads it (its own
    train/test split, before any class split or validation hold-out); images decoded into
    the config's cache folder by its workers, reported to ``progress``; with a pretrained
    backbone (``config.model.pretrained``) as :func:`pretrained_input` makes them."""
    d = config.data
    cache = CacheSettings(cache_folder(config), d.workers or default_workers(), progress)
    splits = load_dataset(
        d.dataset,
        data_dir=Path(d.data_dir) if d.data_dir else None,
        image_size=d.image_size,
        strict=d.strict,
        seed=config.run.seed,
        cache=cache,
    )
    return splits if config.model.pretrained is None else pretrained_input(splits)


def _rgb(images: ImageSet) -> ImageSet:
    x = images.images
    if x.shape[1] == 3:
        return images
    if x.shape[1] != 1:
        raise DataError(
            f"a pretrained backbone takes grey or RGB images, not {x.shape[1]} channels"
        )
    rgb = (
        x.with_channels(3)  # the cache holds 3 channels, grey ones equal
        if isinstance(x, DiskImages)
        else x.expand(-1, 3, -1, -1).contiguous()  # (N, 3, H, W)
    )
    return ImageSet(rgb, images.labels, images.classes, images.paths)


def pretrained_input(splits: Splits) -> Splits:
    """``splits`` as ImageNet-pretrained weights take them: 3 channels (grey images repeated:
    three times the memory for images held in memory, none for those of the image cache)
    normalised with ImageNet's mean and std instead of the training set's own.

    Raises:
        DataError: images of a channel count other than 1 or 3.
    """
    gallery = None if splits.gallery is None else _rgb(splits.gallery)
    return replace(
        splits,
        train=_rgb(splits.train),
        test=_rgb(splits.test),
        gallery=gallery,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def has_class_split(config: TrainConfig) -> bool:
    """Whether the run trains on a subset of the classes (its test classes unseen)."""
    d = config.data
    return bool(d.train_classes or d.test_classes or d.unseen_classes)


def unseen_test_classes(config: TrainConfig, splits: Splits) -> bool:
    """Whether the run's test classes are apart from its training classes: a class split
    (:func:`has_class_split`) or a dataset whose own test split holds other classes (the
    benchmarks' splits, image folders and tables with such train and test parts)."""
    if has_class_split(config):
        return True
    test = torch.unique(splits.test.labels)
    return bool(test.numel()) and not bool(torch.isin(test, splits.train.labels).any())


def val_class_count(config: TrainConfig, train_classes: int, unseen_test: bool) -> int:
    """How many of ``train_classes`` training classes validate the run (0: same-class
    validation, ``val_size``): ``val_classes`` as a count or a fraction (rounded, at least
    2); by default :data:`~tripletlab.training.config.DEFAULT_VAL_CLASSES` of them when the
    test classes are unseen (``unseen_test``, :func:`unseen_test_classes`) and that leaves at
    least 2 to train on, else 0.

    Raises:
        DataError: an explicit ``val_classes`` that leaves fewer than 2 classes to train on,
            or one for a run whose test classes are training classes.
    """
    v = config.data.val_classes
    given = v is not None
    if v is None:
        v = DEFAULT_VAL_CLASSES if unseen_test else 0.0
    if v == 0:
        return 0
    if not unseen_test:
        raise DataError(
            f"--val-classes {v:g} needs classes held out of training (--unseen-classes, "
            "--train-classes or --test-classes, or a dataset whose test classes are not "
            "training classes): here every test class is a training class; use --val-size "
            "for same-class validation"
        )
    count = int(v) if v >= 1 else max(2, round(v * train_classes))
    if count > train_classes - 2:
        if not given:
            return 0
        raise DataError(
            f"--val-classes {v:g} asks for {count} validation classes but the run has "
            f"{train_classes} training classes and must keep at least 2 to train on; give at "
            f"most {train_classes - 2} (or 0 for same-class validation, --val-size)"
        )
    return count


def prepare_data(
    config: TrainConfig, progress: Progress | None = None
) -> tuple[Splits, ImageSet | None]:
    """Load the dataset, apply a class-disjoint split, and hold out a validation set.

    Returns the splits (train without the validation items) and the validation set (or
    ``None`` without one). The validation set picks the best checkpoint, so the test split
    is never looked at before the end of the run. It is class-disjoint when
    :func:`val_class_count` is positive: a seeded random choice of that many training
    classes with all their training images, which then leave the training set; otherwise
    ``val_size`` seeded random training images (at most a fifth). A query/gallery split
    (:attr:`~tripletlab.data.Splits.gallery`) is kept as it is, except under a class split,
    whose test set is every image of the held-out classes, scored leave-one-out. Images
    decoded into the cache are reported to ``progress``.
    """
    splits = load_config_dataset(config, progress)
    if has_class_split(config):
        splits = class_split(
            splits,
            train_classes=config.data.train_classes,
            test_classes=config.data.test_classes,
            unseen_classes=config.data.unseen_classes,
        )
    n = len(splits.train)
    g = torch.Generator().manual_seed(config.run.seed + 17)
    classes = torch.unique(splits.train.labels)  # (C,) sorted
    count = val_class_count(config, int(classes.numel()), unseen_test_classes(config, splits))
    if count > 0:
        picked = classes[torch.randperm(len(classes), generator=g)[:count]]
        in_val = torch.isin(splits.train.labels, picked)
        val, train = splits.train.subset(in_val), splits.train.subset(~in_val)
        return replace(splits, train=train), val
    val_size = min(config.data.val_size, n // 5)
    if val_size <= 0:
        return splits, None
    perm = torch.randperm(n, generator=g)
    val = splits.train.subset(perm[:val_size])
    train = splits.train.subset(perm[val_size:].sort().values)
    return replace(splits, train=train), val  # the test set and any gallery as they are


def class_disjoint_validation(splits: Splits, val: ImageSet | None) -> bool:
    """Whether ``val`` (of :func:`prepare_data`) holds classes apart from the training ones."""
    if val is None:
        return False
    return not bool(torch.isin(torch.unique(val.labels), torch.unique(splits.train.labels)).any())


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


def seen_test_set(config: TrainConfig, splits: Splits) -> ImageSet:
    """The test images of a class-split run's training classes (the ``seen`` group), which
    :func:`prepare_data`'s class split dropped: the dataset's test split loaded again and
    restricted to the labels of ``splits.train``."""
    raw = load_config_dataset(config)
    return raw.test.subset(torch.isin(raw.test.labels, torch.unique(splits.train.labels)))


def describe_data(splits: Splits, val: ImageSet | None) -> str:
    """What a run trains, validates and tests on, in one line for its first lines: the
    images and classes of each part, and whether the validation and test classes are the
    training classes, others, or (test) some of each.

    Example:
        >>> from tripletlab.data import ImageSet
        >>> def part(*labels: int) -> ImageSet:
        ...     y = torch.tensor(labels)
        ...     return ImageSet(torch.zeros(len(y), 1, 2, 2, dtype=torch.uint8), y, ("a", "b", "c"))
        >>> line = describe_data(Splits("d", part(0, 0), part(0, 2, 2), (0.5,), (0.5,)), part(1))
        >>> for part in line.split("; "):
        ...     print(part)
        data: train 2 images of 1 class
        validate 1 image of 1 other class
        test 3 images of 2 classes, 1 of them never trained on
    """
    train = torch.unique(splits.train.labels)

    def of(images: ImageSet) -> str:
        classes = torch.unique(images.labels)
        new = int((~torch.isin(classes, train)).sum())
        n, c = counted(len(images), "image"), classes.numel()
        if c == 0:
            return "no images"
        if new == 0:
            return f"{n} of {counted(c, 'training class')}"
        if new == c:
            return f"{n} of {counted(c, 'other class')}"
        return f"{n} of {counted(c, 'class')}, {new:,} of them never trained on"

    images, classes = counted(len(splits.train), "image"), counted(train.numel(), "class")
    parts = [f"train {images} of {classes}"]
    if val is not None:
        parts.append(f"validate {of(val)}")
    if splits.gallery is None:
        parts.append(f"test {of(splits.test)}")
    else:
        parts.append(f"test queries {of(splits.test)}; gallery {of(splits.gallery)}")
    return "data: " + "; ".join(parts)


def class_names(splits: Splits, val: ImageSet | None) -> dict[str, list[str]]:
    """The names of the classes of each part of a run, in label order: ``train``,
    ``validate`` (when there is a validation set), ``test``, and the ``gallery`` of a
    query/gallery split (what a run folder's ``classes.json`` holds).

    Example:
        >>> from tripletlab.data import ImageSet
        >>> def part(*labels: int) -> ImageSet:
        ...     y = torch.tensor(labels)
        ...     return ImageSet(torch.zeros(len(y), 1, 2, 2, dtype=torch.uint8), y, ("a", "b", "c"))
        >>> class_names(Splits("d", part(0, 0), part(2, 0, 2), (0.5,), (0.5,)), part(1))
        {'train': ['a'], 'validate': ['b'], 'test': ['a', 'c']}
    """
    parts = {"train": splits.train, "validate": val, "test": splits.test, "gallery": splits.gallery}
    return {
        name: [images.classes[int(c)] for c in torch.unique(images.labels)]
        for name, images in parts.items()
        if images is not None
    }


def describe_held_out(names: dict[str, list[str]], where: Path, shown: int = 3) -> str | None:
    """One line naming the classes held out of training (those of the validation and test
    parts that are not training classes), the first ``shown`` of each, and the file that
    lists them all; ``None`` when every class was trained on.

    Example:
        >>> names = {"train": ["a", "b"], "validate": ["c"], "test": ["d", "e", "f", "g"]}
        >>> for part in describe_held_out(names, Path("runs/x/classes.json"), 2).split("; "):
        ...     print(part)
        held out of training: validate 1 class (c)
        test 4 classes (d, e, ...)
        every part's classes in runs/x/classes.json
    """
    trained = set(names["train"])
    parts = []
    for part in ("validate", "test", "gallery"):
        new = [n for n in names.get(part, []) if n not in trained]
        if new:
            listed = ", ".join(map(printable, new[:shown])) + (", ..." if len(new) > shown else "")
            parts.append(f"{part} {counted(len(new), 'class')} ({listed})")
    if not parts:
        return None
    return f"held out of training: {'; '.join(parts)}; every part's classes in {where}"
