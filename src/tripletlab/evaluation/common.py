"""What the evaluation modules share: the device choices and the one-line check of a list
of choices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from tripletlab.checks import check_choice
from tripletlab.training import DeviceName

DEVICES: tuple[str, ...] = get_args(DeviceName)


def check_choices(name: str, values: Sequence[str], valid: tuple[str, ...]) -> None:
    """:func:`tripletlab.checks.check_choice` of each value."""
    for v in values:
        check_choice(name, v, valid)
