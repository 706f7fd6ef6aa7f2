"""Shared by the tests of :mod:`tripletlab.training` and :mod:`tripletlab.distributed`: a
short digits config, a reporter that presses Ctrl-C, an environment without a C++ compiler."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tripletlab.training import SilentReporter, StepInfo, TrainConfig, config_from_dict


def digits_config(**kw: object) -> TrainConfig:
    """Two epochs on scikit-learn's digits with a 150-item validation set, seed 0, in float32
    (amp off: ``auto`` is bfloat16 on some CPUs only); ``kw`` replaces settings by their flat
    keys (``epochs=1``, ``width=8``)."""
    base: dict[str, object] = {"dataset": "digits", "epochs": 2, "val_size": 150, "seed": 0}
    base["amp"] = "off"
    base.update(kw)
    return config_from_dict(base)


class Said(SilentReporter):
    """Keeps the messages of a run (its first lines), in order, in :attr:`messages`."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


class StopAt(SilentReporter):
    """Presses Ctrl-C (sends this process SIGINT) at a given global step, after the step's
    update (in a distributed run on every rank, after the same step)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def step(self, epoch: int, info: StepInfo) -> None:
        self.seen += 1
        if self.seen == self.at:
            signal.raise_signal(signal.SIGINT)


def no_compiler_env(tmp: Path) -> dict[str, str]:
    """The environment of a process with no C++ compiler on its PATH and no kernel cached
    from earlier runs (a process of its own: inductor remembers the compiler it found)."""
    (tmp / "bin").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC")}
    env["PATH"] = str(tmp / "bin")
    env |= {"TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}
    return env | {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
