"""Helpers shared by the tests of :mod:`tripletlab.cli` (``tests/test_cli_*.py``): the flags
of a short digits run, the metrics it must write, and :func:`run`, which calls the command."""

from __future__ import annotations

import pytest

from tripletlab.cli import main

FAST = ["--dataset", "digits", "--epochs", "2", "--val-size", "150", "--quiet", "--seed", "0"]
FAST += ["--amp", "off"]  # float32 on every CPU (auto: bfloat16 where it is native)
FAST += ["--no-report"]  # the pictures and report.html are tested once, on `trained` below
KEYS = (
    "precision_at_1",
    "r_precision",
    "map_at_r",
    "knn_accuracy",
    "pair_accuracy",
    "pair_threshold",
    "pair_floor",
    "train_seconds",
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err
