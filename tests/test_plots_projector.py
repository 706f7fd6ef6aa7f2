"""Projector export (tripletlab.plots.projector): the files agree with each other; large sets
are subsampled and the sprite shrunk; bad input fails with one clear line."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plots_helpers import E, Y, assert_one_clear_line, read_tsv

from tripletlab.plots import projector, write_projector


def test_projector_files_agree(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 37, 5
    e = torch.randn(n, d, generator=g)
    y = torch.arange(n) % 4
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    classes = ["zero", "one\tbad", "two", "three"]
    split = ["train"] * 30 + ["test"] * 7
    files = write_projector(
        tmp_path, e, y, images=images, classes=classes, columns={"split": split}
    )
    assert set(files) == {"tensors", "metadata", "sprite", "config"}
    tensors, meta = read_tsv(files["tensors"]), read_tsv(files["metadata"])
    assert len(tensors) == n and all(len(row) == d for row in tensors)
    np.testing.assert_allclose(np.array(tensors, dtype=float), e.numpy(), rtol=1e-5)
    assert meta[0] == ["label", "class", "split"]
    assert len(meta) == n + 1 and all(len(row) == 3 for row in meta)
    assert meta[2] == ["1", "one bad", "train"] and meta[-1][2] == "test"
    side = math.ceil(math.sqrt(n))
    with Image.open(files["sprite"]) as im:
        assert im.size == (side * 8, side * 8)
    config = files["config"].read_text()
    for name in ("tensors.tsv", "metadata.tsv", "sprite.png"):
        assert f'"{name}"' in config and (tmp_path / name).is_file()
    assert config.count("single_image_dim: 8") == 2


def test_projector_subsamples_and_shrinks_the_sprite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector, "SPRITE_MAX_SIDE", 40)
    e, y = torch.randn(50, 3), torch.arange(50) % 5
    images = torch.zeros(50, 3, 10, 10, dtype=torch.uint8)
    files = write_projector(tmp_path, e, y, images=images, max_points=20)
    assert len(read_tsv(files["tensors"])) == 20 == len(read_tsv(files["metadata"])) - 1
    with Image.open(files["sprite"]) as im:
        assert max(im.size) <= 40  # 5 x 5 tiles of 8 x 8
    assert "single_image_dim: 8" in files["config"].read_text()


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "projector column": (lambda p: write_projector(p, E, Y, columns={"split": ["a"]}), "'split'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)
