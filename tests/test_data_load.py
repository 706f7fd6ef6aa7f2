"""Tests for tripletlab.data.load: unknown dataset names, bad arguments, default_hflip."""

from __future__ import annotations

from typing import Any

import pytest
from data_helpers import one_line_error

from tripletlab import data
from tripletlab.data import DataError, load_dataset


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar-10")
    message = one_line_error(excinfo)
    assert "cifar-10" in message
    for name in [*data.DATASETS, "imagefolder:PATH"]:
        assert name in message


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"image_size": 0}, "image_size"), ({"test_fraction": 1.0}, "test_fraction")],
)
def test_bad_arguments(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_dataset("digits", **kwargs)


def test_default_hflip() -> None:
    assert data.default_hflip("fashion-mnist")
    assert not data.default_hflip("mnist") and not data.default_hflip("digits")
    assert data.default_hflip("imagefolder:/x")
