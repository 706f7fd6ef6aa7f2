"""Shared by the tests of :mod:`tripletlab.training` and :mod:`tripletlab.distributed`: a
short digits config and a reporter that presses Ctrl-C."""

from __future__ import annotations

from tripletlab.training import SilentReporter, StepInfo, TrainConfig


def digits_config(**kw: object) -> TrainConfig:
    """Two epochs on scikit-learn's digits with a 150-item validation set, seed 0, in float32
    (amp off: ``auto`` is bfloat16 on some CPUs only)."""
    base = {"dataset": "digits", "epochs": 2, "val_size": 150, "seed": 0, "amp": "off"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


class StopAt(SilentReporter):
    """Presses Ctrl-C at a given global step (in a distributed run on every rank, after the
    same step)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def step(self, epoch: int, info: StepInfo) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt
