"""Learning-rate schedules (:mod:`tripletlab.training.optim`)."""

from __future__ import annotations

import itertools

import pytest
import torch
from training_helpers import digits_config

from tripletlab.training import make_schedule
from tripletlab.training.optim import run_length


def test_schedule_warmup_and_cosine() -> None:
    config = digits_config(epochs=4, warmup_epochs=1.0).resolved()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(config, opt, epochs=4, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(x >= y for x, y in itertools.pairwise(lrs[10:]))


@pytest.mark.parametrize(
    ("pass_steps", "epochs", "steps_per_epoch", "expected"),
    [
        (362, None, None, (13, 362)),  # a large set: 13 passes of one pass each
        (58, None, None, (30, 100)),  # a small one: at least 3000 steps, epochs of 100
        (3, None, None, (30, 100)),
        (58, 5, None, (5, 58)),  # given epochs: one pass each, as earlier versions
        (58, None, 500, (6, 500)),  # given epoch length: 3000 steps in epochs of 500
        (58, 2, 7, (2, 7)),
    ],
)
def test_run_length(
    pass_steps: int, epochs: int | None, steps_per_epoch: int | None, expected: tuple[int, int]
) -> None:
    assert run_length(pass_steps, epochs, steps_per_epoch) == expected


def test_run_length_covers_the_default_passes_and_the_minimum() -> None:
    for pass_steps in (1, 7, 99, 100, 101, 230, 231, 1000):
        epochs, steps = run_length(pass_steps, None, None)
        total = epochs * steps
        assert steps >= min(pass_steps, 100) and steps >= pass_steps
        assert total >= max(13 * pass_steps, 3000)
        assert (epochs - 1) * steps < max(13 * pass_steps, 3000)  # not one epoch more
