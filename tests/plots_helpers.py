"""Shared by the tests of tripletlab.plots: the digits fixture, a class-structured embedding of
images, fit-shaped history records, PNG and TSV checks, a small bad-input set and the
one-clear-line check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab.data import ImageSet, Splits, load_dataset
from tripletlab.training import EpochStats


@pytest.fixture(scope="module", name="digits")
def digits_fixture() -> Splits:
    """The digits splits, loaded once per test module (import it to use ``digits``)."""
    return load_dataset("digits")  # 8x8, 10 classes, 1,438 train / 359 test


def embed(images: torch.Tensor, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """A fixed random projection of the pixels, L2-normalised: (N, dim), class-structured."""
    w = torch.randn(images[0].numel(), dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(images.flatten(1).float() @ w, dim=1)


def history(epochs: int = 4) -> list[dict[str, Any]]:
    """Records shaped as training.fit writes them (EpochStats fields + validation metric)."""
    out = []
    for e in range(1, epochs + 1):
        stats = EpochStats(0.3 / e, 0.6 / e, 0.4, 0.6 + 0.1 * e, 10, 640, 1.0, 0.2)
        record = {"epoch": e, **asdict(stats), "val_knn_accuracy": 0.7 + 0.05 * e}
        record["samples_per_second"] = stats.samples_per_second
        out.append(record)
    return out


def assert_png(path: Path, min_side: int = 100) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side, im.size
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------- errors

E = torch.nn.functional.normalize(
    torch.randn(20, 4, generator=torch.Generator().manual_seed(0)), dim=1
)
Y = torch.arange(20) % 4
IMG = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
NAN = E.clone()
NAN[3, 1] = float("nan")
SET = ImageSet(IMG, Y, ("a", "b", "c", "d"))


def assert_one_clear_line(call: Callable[[Path], object], expected: str, tmp_path: Path) -> None:
    """``call(tmp_path)`` raises a ValueError of one line, naming the problem and then the fix,
    and writes no PNG."""
    with pytest.raises(ValueError) as err:  # noqa: PT011 - the message is checked below
        call(tmp_path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and len(message) < 220
    assert ";" in message or ":" in message  # names the problem, then the fix
    assert not list(tmp_path.glob("**/*.png")), "nothing is written for bad input"
