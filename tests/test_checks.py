"""The shared input checks (:mod:`tripletlab.checks`)."""

from __future__ import annotations

import pytest

from tripletlab.checks import check_choice


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
