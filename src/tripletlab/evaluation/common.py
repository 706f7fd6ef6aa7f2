"""What the evaluation modules share: the progress callback, the normalisation statistics
and device choices, and a seeded subset."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
from torch import Tensor

from tripletlab.training import DeviceName

#: ``progress(description, done, total)``: a call with ``done == 0`` starts a task, one with
#: ``done == total`` ends it (the CLI draws one progress bar per task). The same callback as
#: :data:`tripletlab.plots.Progress`.
Progress = Callable[[str, int, int], None]
Stats = tuple[tuple[float, ...], tuple[float, ...]]

DEVICES: tuple[str, ...] = get_args(DeviceName)


def _seeded_subset(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values
