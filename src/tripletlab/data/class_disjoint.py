"""Class-disjoint splits for the unseen-class protocol (train on some classes, test on
others): :func:`class_split`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tripletlab.data.errors import DataError
from tripletlab.data.sets import ImageSet, Splits, _make_splits, concat_images


def _class_ids(ids: Sequence[int], num_classes: int, what: str) -> set[int]:
    bad = [c for c in ids if not 0 <= int(c) < num_classes]
    if bad:
        raise DataError(f"{what} has unknown class ids {bad}; valid ids are 0..{num_classes - 1}")
    return {int(c) for c in ids}


def _joined(parts: Sequence[ImageSet]) -> ImageSet:
    """The items of ``parts`` one after the other (same ``classes``; paths kept when every
    part has them)."""
    if len(parts) == 1:
        return parts[0]
    paths = [p.paths for p in parts]
    return ImageSet(
        concat_images([p.images for p in parts]),  # (N1 + N2, C, H, W)
        torch.cat([p.labels for p in parts]),
        parts[0].classes,
        None if any(p is None for p in paths) else tuple(x for p in paths if p for x in p),
    )


def class_split(
    splits: Splits,
    *,
    train_classes: Sequence[int] | None = None,
    test_classes: Sequence[int] | None = None,
    unseen_classes: int | None = None,
) -> Splits:
    """Class-disjoint splits for the unseen-class protocol: train on some classes, test on
    others.

    The train set keeps the images of ``train_classes`` in the original train split; the
    test set holds every image of ``test_classes``, from the original train split and then
    the original test split (as the benchmarks do: each of them a query against all the
    others, leave-one-out). When only one list is given the other is its complement;
    ``unseen_classes=N`` holds out the last N class ids. Labels keep their original ids and
    ``classes`` is unchanged; ``mean``/``std`` are recomputed on the new train set. The
    images of train classes in the original test split are left out (they are the "seen"
    test group, which the caller takes from the original test split).

    Raises:
        DataError: if no split is given, ``unseen_classes`` is combined with a list, the lists
            overlap, an id is unknown, or a side ends up with fewer than 2 classes with images.
    """
    num_classes = len(splits.train.classes)
    if unseen_classes is not None:
        if train_classes is not None or test_classes is not None:
            raise DataError(
                "give unseen_classes (--unseen-classes) or train_classes/test_classes "
                "(--train-classes/--test-classes), not both"
            )
        if num_classes < 4:
            raise DataError(
                f"unseen_classes (--unseen-classes) needs at least 4 classes (2 to train on, "
                f"2 held out), and the data has {num_classes}; fix: leave --unseen-classes "
                "out, or use data of more classes"
            )
        if not 2 <= unseen_classes <= num_classes - 2:
            raise DataError(
                f"unseen_classes (--unseen-classes) must be between 2 and {num_classes - 2} so "
                f"that both sides keep at least 2 of the {num_classes} classes, got "
                f"{unseen_classes}; fix: hold out between 2 and {num_classes - 2} classes"
            )
        train_ids = set(range(num_classes - unseen_classes))
        test_ids = set(range(num_classes - unseen_classes, num_classes))
    elif train_classes is None and test_classes is None:
        raise DataError("class_split needs train_classes, test_classes or unseen_classes")
    else:
        all_ids = set(range(num_classes))
        if train_classes is not None:
            train_ids = _class_ids(train_classes, num_classes, "train_classes")
            test_ids = (
                _class_ids(test_classes, num_classes, "test_classes")
                if test_classes is not None
                else all_ids - train_ids
            )
        else:
            assert test_classes is not None
            test_ids = _class_ids(test_classes, num_classes, "test_classes")
            train_ids = all_ids - test_ids
        overlap = sorted(train_ids & test_ids)
        if overlap:
            raise DataError(
                f"train_classes and test_classes overlap on {overlap}; fix: make them disjoint"
            )
    sides: list[ImageSet] = []
    for side, ids, sources in (
        ("train", train_ids, (splits.train,)),
        ("test", test_ids, (splits.train, splits.test)),
    ):
        wanted = torch.tensor(sorted(ids), dtype=torch.int64)
        subset = _joined([s.subset(torch.isin(s.labels, wanted)) for s in sources])
        present = int(torch.unique(subset.labels).numel())
        if present < 2:
            raise DataError(
                f"the {side} side has {present} class(es) with images (ids {sorted(ids)}), "
                "need at least 2; fix: give it more classes"
            )
        sides.append(subset)
    return _make_splits(splits.name, sides[0], sides[1])
