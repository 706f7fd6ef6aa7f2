"""Ctrl-C during training: deferred to the end of the running step, so that the state
saved after it resumes exactly (:func:`~tripletlab.training.fit`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def deferred_interrupt(enabled: bool) -> Iterator[Callable[[], bool]]:
    """While active, a first SIGINT (Ctrl-C) only sets a flag, read by the returned
    ``pressed()``; a second one raises ``KeyboardInterrupt`` at once. Outside the main
    thread, or not ``enabled``, SIGINT keeps its usual handler and ``pressed()`` is False."""
    flag = {"pressed": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag["pressed"]:
            raise KeyboardInterrupt
        flag["pressed"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["pressed"]
    finally:
        signal.signal(signal.SIGINT, previous)
