"""Threshold pictures (tripletlab.plots.thresholds): the distance histogram and the calibration
plot write valid PNGs, deterministically; bad input fails with one clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from plots_helpers import (
    E,
    assert_one_clear_line,
    assert_png,
    digits_fixture,  # noqa: F401 - the digits fixture
    embed,
)

from tripletlab import plots
from tripletlab.data import Splits
from tripletlab.plots import plot_distance_histogram


def test_distance_histogram(digits: Splits, tmp_path: Path) -> None:
    t = digits.test
    assert_png(
        plot_distance_histogram(embed(t.images[:]), t.labels, tmp_path / "d.png", threshold=0.5)
    )
    assert_png(
        plot_distance_histogram(embed(t.images[:]), t.labels, tmp_path / "e.png", num_pairs=50)
    )


def test_calibration_plot(tmp_path: Path) -> None:
    from tripletlab.calibration import calibrate_matches

    cal = calibrate_matches(
        torch.tensor([0.1, 0.2, 0.3, 0.5, float("inf")]),  # inf: a query with no neighbour
        torch.tensor([0, 1, 0, 1, -1]),
        torch.tensor([0, 1, 1, 2, 0]),
        torch.tensor([True, True, True, False, True]),
        (0.9, 0.999),
    )
    path = plots.plot_calibration(cal, tmp_path / "pr.png", distance="cosine")
    assert path == tmp_path / "pr.png"
    assert_png(path, 300)
    again = plots.plot_calibration(cal, tmp_path / "again.png", distance="cosine")
    assert again.read_bytes() == path.read_bytes()  # deterministic


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "histogram of one class": (
        lambda p: plot_distance_histogram(E, torch.zeros(20, dtype=torch.long), p / "x.png"),
        "2 classes",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)
