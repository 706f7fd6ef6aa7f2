"""What :func:`~tripletlab.training.fit` tells its caller while it runs: the
:class:`Reporter` protocol (the CLI draws progress bars and writes ``log.jsonl``) and
:class:`SilentReporter`, which does nothing."""

from __future__ import annotations

from typing import Protocol

from tripletlab.training.loop import EpochStats, StepInfo


class Reporter(Protocol):
    """What :func:`fit` tells its caller; the CLI draws progress bars and writes logs."""

    def resumed(self, epoch: int, step: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, epoch: int, info: StepInfo) -> None: ...
    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    """A :class:`Reporter` that does nothing (library use, tests)."""

    def resumed(self, epoch: int, step: int) -> None:
        pass

    def epoch_start(self, epoch: int, steps: int) -> None:
        pass

    def step(self, epoch: int, info: StepInfo) -> None:
        pass

    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass
