"""Learning-rate schedules (:mod:`tripletlab.training.optim`)."""

from __future__ import annotations

import itertools

import pytest
import torch
from training_helpers import digits_config

from tripletlab.training import make_schedule


def test_schedule_warmup_and_cosine() -> None:
    config = digits_config(epochs=4, warmup_epochs=1.0).resolved()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(config, opt, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(x >= y for x, y in itertools.pairwise(lrs[10:]))
