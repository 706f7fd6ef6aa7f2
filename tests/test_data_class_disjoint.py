"""Tests for tripletlab.data.class_disjoint: class-disjoint splits for the unseen-class
protocol.
"""

from __future__ import annotations

from typing import Any

import pytest
from data_helpers import one_line_error, toy_set

from tripletlab.data import DataError, Splits, class_split, sets


def _splits(train_labels: list[int], test_labels: list[int], classes: int = 10) -> Splits:
    return sets._make_splits("toy", toy_set(train_labels, classes), toy_set(test_labels, classes))


_TOY = _splits(list(range(10)) * 3, list(range(10)) * 2)


def test_class_split_lists_are_disjoint() -> None:
    out = class_split(_TOY, train_classes=[0, 1, 2], test_classes=[5, 6])
    assert set(out.train.labels.tolist()) == {0, 1, 2}
    assert set(out.test.labels.tolist()) == {5, 6}
    # held-out classes keep every image, of the train split (3 each) and the test split (2)
    assert len(out.train) == 9 and len(out.test) == 10
    assert out.train.classes == _TOY.train.classes and out.name == "toy"
    x = out.train.images[:].double() / 255
    assert out.mean == pytest.approx((float(x.mean()),))  # recomputed on the new train set


def test_class_split_complements() -> None:
    out = class_split(_TOY, train_classes=[0, 1, 2, 3])
    assert set(out.test.labels.tolist()) == set(range(4, 10))
    out = class_split(_TOY, test_classes=[8, 9])
    assert set(out.train.labels.tolist()) == set(range(8))
    assert set(out.test.labels.tolist()) == {8, 9}


def test_class_split_unseen_classes() -> None:
    out = class_split(_TOY, unseen_classes=3)
    assert set(out.train.labels.tolist()) == set(range(7))
    assert set(out.test.labels.tolist()) == {7, 8, 9}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"train_classes": [0, 1, 2], "test_classes": [2, 3]}, "overlap on \\[2\\]"),
        ({"train_classes": [0, 10]}, "unknown class ids \\[10\\]"),
        ({"test_classes": [-1, 3]}, "unknown class ids \\[-1\\]"),
        ({"train_classes": [0]}, "train side has 1 class"),
        ({"test_classes": [4]}, "test side has 1 class"),
        ({"unseen_classes": 1}, "between 2 and 8"),
        ({"unseen_classes": 9}, "between 2 and 8"),
        ({"unseen_classes": 2, "train_classes": [0, 1]}, "not both"),
        ({}, "needs train_classes"),
    ],
)
def test_class_split_errors(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=words) as excinfo:
        class_split(_TOY, **kwargs)
    one_line_error(excinfo)


def test_unseen_classes_of_too_few_classes_says_so() -> None:
    three = _splits([0, 1, 2] * 2, [0, 1, 2], classes=3)  # "between 2 and 1" would be no range
    with pytest.raises(DataError, match=r"needs at least 4 classes .* the data has 3; fix: ") as e:
        class_split(three, unseen_classes=2)
    one_line_error(e)


def test_class_split_counts_classes_with_images() -> None:
    sparse = _splits([0, 1, 2, 3] * 2, [0, 1, 2, 3], classes=6)  # classes 4, 5 have no images
    with pytest.raises(DataError, match="test side has 0 class"):
        class_split(sparse, train_classes=[0, 1, 2, 3])


def test_held_out_classes_keep_every_image_for_leave_one_out() -> None:
    """Classes with one test image each: the held-out side gathers their training images
    too, so every query has classmates (issue 14: 1 test image per class excluded them all)."""
    toy = _splits(list(range(10)) * 3, list(range(10)))
    out = class_split(toy, unseen_classes=4)
    counts = out.test.labels.bincount(minlength=10)
    assert counts[6:].tolist() == [4, 4, 4, 4] and int(counts[:6].sum()) == 0
    assert set(out.train.labels.tolist()) == set(range(6)) and len(out.train) == 18
