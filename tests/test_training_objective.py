"""An objective's batches (:mod:`tripletlab.training.objective`): epoch length, seeding."""

from __future__ import annotations

import pytest
import torch

from tripletlab.training import Objective, ObjectiveConfig, ObjectiveFn, OptimConfig, TrainConfig


@pytest.mark.parametrize(
    "objective", ["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
)
def test_steps_per_epoch_matches_the_batches(objective: Objective) -> None:
    o = ObjectiveConfig(name=objective, labels_per_batch=4, samples_per_label=8)
    config = TrainConfig(objective=o).resolved()
    labels = torch.arange(10).repeat_interleave(50)
    fn = ObjectiveFn(config, labels)
    assert fn.steps_per_epoch() == len(fn.batches(0)) == len(fn.batches(1))


@pytest.mark.parametrize(
    "objective", ["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
)
@pytest.mark.parametrize("steps", [3, 40])  # less than one pass (15 batches), more than two
def test_steps_per_epoch_fixes_the_epoch_length(objective: Objective, steps: int) -> None:
    config = TrainConfig(
        objective=ObjectiveConfig(name=objective, labels_per_batch=4, samples_per_label=8),
        optim=OptimConfig(steps_per_epoch=steps),
    ).resolved()
    labels = torch.arange(10).repeat_interleave(50)
    fn = ObjectiveFn(config, labels)
    batches = fn.batches(0)
    assert fn.steps_per_epoch() == len(batches) == steps
    assert all(b.shape[0] == 32 for b in batches)  # full batches throughout
    again = fn.batches(0)
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))  # seeded
    if objective in ("triplet", "contrastive"):  # every P x K batch: 4 labels x 8 each
        for b in batches:
            assert sorted(torch.bincount(labels[b]).tolist())[-4:] == [8] * 4
    if steps > 15:  # the later passes are new draws, not copies of the first
        assert not torch.equal(batches[0], batches[15])
