"""Progress bars on stderr for the library's ``progress(description, done, total)``
callbacks, unless ``--quiet``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from tripletlab.evaluation import Progress

T = TypeVar("T")


class ProgressBars:
    """Progress bars on stderr for the library's ``progress(description, done, total)``
    callbacks: a call with ``done == 0`` (or the first one) opens a bar, ``done == total``
    closes it. No bar when stderr is not a terminal."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, description: str, done: int, total: int) -> None:
        if self.bar is None or done == 0:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, desc=description, leave=False, disable=None)
        self.bar.set_description_str(description, refresh=False)
        self.bar.n = done
        self.bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(ns: argparse.Namespace) -> ProgressBars | None:
    return None if getattr(ns, "quiet", False) else ProgressBars()


def _with_bars(ns: argparse.Namespace, call: Callable[[Progress | None], T]) -> T:
    """``call(progress)`` with progress bars (unless ``--quiet``), closed however it ends."""
    bars = _progress(ns)
    try:
        return call(bars)
    finally:
        if bars is not None:
            bars.close()
