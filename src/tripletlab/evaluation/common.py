"""What the evaluation modules share: the device choices."""

from __future__ import annotations

from typing import get_args

from tripletlab.training import DeviceName

DEVICES: tuple[str, ...] = get_args(DeviceName)
