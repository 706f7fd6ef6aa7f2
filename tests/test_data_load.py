"""Tests for tripletlab.data.load: unknown dataset names, bad arguments, default_hflip."""

from __future__ import annotations

from pathlib import Path
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


def test_absolute_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.absolute_dataset("imagefolder:photos") == f"imagefolder:{tmp_path / 'photos'}"
    assert data.absolute_dataset(" imagefolder:a/../b ") == f"imagefolder:{tmp_path / 'b'}"
    assert data.absolute_dataset("imagefolder:~/p") == f"imagefolder:{tmp_path / 'home' / 'p'}"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert data.absolute_dataset("imagefolder:link") == f"imagefolder:{tmp_path / 'link'}"
    for spec in ("fashion-mnist", "digits", "imagefolder:"):
        assert data.absolute_dataset(spec) == spec  # nothing to resolve
