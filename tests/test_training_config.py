"""Config resolution (:mod:`tripletlab.training.config`): defaults and errors."""

from __future__ import annotations

import pytest

from tripletlab.training import TrainConfig


def test_resolved_defaults_and_errors() -> None:
    with pytest.raises(ValueError, match="--steps-per-epoch must be >= 1"):
        TrainConfig(steps_per_epoch=0).resolved()
    c = TrainConfig(dataset="mnist").resolved()
    assert (c.mining, c.margin, c.hflip, c.crop_padding, c.tta) == (
        "semi_hard",
        0.2,
        False,
        0,
        False,
    )
    c = TrainConfig(objective="contrastive").resolved()
    assert (c.mining, c.margin, c.hflip, c.tta) == ("hard_negative", 1.0, True, True)
    c = TrainConfig(dataset="imagefolder:x", hflip=False, tta=True).resolved()
    assert (c.crop_padding, c.hflip, c.tta) == (2, False, True)
    with pytest.raises(ValueError, match="unknown mining"):
        TrainConfig(objective="contrastive", mining="batch_hard").resolved()
    with pytest.raises(ValueError, match="--margin must be"):
        TrainConfig(margin=-1.0).resolved()
