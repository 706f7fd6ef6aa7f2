"""Learning curves (tripletlab.plots.curves): drawn from fit-shaped records, gaps and one epoch
included; bad input fails with one clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from plots_helpers import assert_one_clear_line, assert_png, history

from tripletlab.plots import plot_learning_curves


def test_learning_curves_from_fit_records(tmp_path: Path) -> None:
    assert_png(plot_learning_curves(history(), tmp_path / "c.png"), 300)
    gaps = history(3)
    gaps[1]["loss"] = float("nan")
    del gaps[0]["val_knn_accuracy"]
    assert_png(plot_learning_curves(gaps, tmp_path / "g.png"))
    assert_png(plot_learning_curves(history(1), tmp_path / "one.png"))


BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "empty history": (lambda p: plot_learning_curves([], p / "x.png"), "history is empty"),
    "history without curves": (
        lambda p: plot_learning_curves([{"epoch": 1}], p / "x.png"),
        "no curve",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    call, expected = BAD[case]
    assert_one_clear_line(call, expected, tmp_path)
