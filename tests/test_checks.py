"""The shared input checks (:mod:`tripletlab.checks`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tripletlab.checks import check_choice, check_not_an_input, same_file


class CustomError(ValueError):
    pass


def test_check_choice_returns_the_choice_or_lists_the_valid_ones() -> None:
    valid = ("euclidean", "cosine")
    assert check_choice("distance", "cosine", valid) == "cosine"
    with pytest.raises(
        ValueError, match=r"^unknown distance 'l1'; choose one of: euclidean, cosine$"
    ):
        check_choice("distance", "l1", valid)
    with pytest.raises(ValueError, match=r"^unknown distance 3; choose one of"):
        check_choice("distance", 3, valid)  # a value of another type is just unknown
    with pytest.raises(CustomError, match="unknown backend 'annoy'"):
        check_choice("backend", "annoy", ("exact", "faiss"), error=CustomError)


def test_same_file(tmp_path: Path) -> None:
    a = tmp_path / "a.npz"
    a.write_bytes(b"x")
    assert same_file(a, tmp_path / "sub" / ".." / "a.npz")  # resolved
    assert same_file(tmp_path / "new.npz", tmp_path / "new.npz")  # neither exists
    assert not same_file(a, tmp_path / "b.npz")
    os.link(a, tmp_path / "hard.npz")
    assert same_file(tmp_path / "hard.npz", a)  # another name of the same file
    (tmp_path / "soft.npz").symlink_to(a)
    assert same_file(tmp_path / "soft.npz", a)


def test_check_not_an_input(tmp_path: Path) -> None:
    inputs = {"the --embeddings file": tmp_path / "e.npz", "the run's config.json": None}
    check_not_an_input(tmp_path / "i.npz", "--out", inputs)
    with pytest.raises(ValueError, match="which must not be overwritten") as excinfo:
        check_not_an_input(tmp_path / "." / "e.npz", "--out", inputs)
    assert str(excinfo.value) == (
        f"--out {tmp_path / '.' / 'e.npz'} is the --embeddings file, which must not be "
        "overwritten; choose another --out"
    )
