"""Shared by the tests of :mod:`tripletlab.training` and :mod:`tripletlab.distributed`: a
short digits config and a reporter that presses Ctrl-C."""

from __future__ import annotations

import signal

from tripletlab.training import SilentReporter, StepInfo, TrainConfig, config_from_dict


def digits_config(**kw: object) -> TrainConfig:
    """Two epochs on scikit-learn's digits with a 150-item validation set, seed 0, in float32
    (amp off: ``auto`` is bfloat16 on some CPUs only); ``kw`` replaces settings by their flat
    keys (``epochs=1``, ``width=8``)."""
    base: dict[str, object] = {"dataset": "digits", "epochs": 2, "val_size": 150, "seed": 0}
    base["amp"] = "off"
    base.update(kw)
    return config_from_dict(base)


class StopAt(SilentReporter):
    """Presses Ctrl-C (sends this process SIGINT) at a given global step, after the step's
    update (in a distributed run on every rank, after the same step)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def step(self, epoch: int, info: StepInfo) -> None:
        self.seen += 1
        if self.seen == self.at:
            signal.raise_signal(signal.SIGINT)
