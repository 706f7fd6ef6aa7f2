"""Learning-rate schedules, parameter groups (the backbone's own rate) and what trains in an
epoch (a frozen backbone, frozen BatchNorm statistics): :mod:`tripletlab.training.optim`."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from training_helpers import digits_config

from tripletlab.models import EmbeddingModel
from tripletlab.training import TrainConfig, make_optimizer, make_schedule
from tripletlab.training.network import run_network
from tripletlab.training.optim import param_groups, run_length, set_train_mode


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


def _resnet(**kw: object) -> tuple[EmbeddingModel, TrainConfig]:
    config = digits_config(model="resnet18", pretrained="imagenet", **kw).resolved()
    torch.manual_seed(0)
    model = run_network(config, in_channels=3, image_size=8, num_classes=None)
    return model, config


def test_one_parameter_group_unless_the_backbone_has_its_own_rate() -> None:
    model, config = _resnet()
    (group,) = make_optimizer(config, param_groups(model, config)).param_groups
    assert len(group["params"]) == len(list(model.parameters()))
    assert group["lr"] == config.optim.lr


def test_the_backbone_learning_rate_is_scaled_through_the_schedule() -> None:
    model, config = _resnet(backbone_lr_scale=0.1, warmup_epochs=0.0)
    opt = make_optimizer(config, param_groups(model, config))
    head, backbone = opt.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in model.projection.parameters()}
    assert (head["lr"], backbone["lr"]) == (1e-3, pytest.approx(1e-4))
    sched = make_schedule(config, opt, epochs=2, steps_per_epoch=5)
    for _ in range(5):
        opt.step()
        sched.step()
    assert head["lr"] == pytest.approx(5e-4) and backbone["lr"] == pytest.approx(5e-5)


def _batchnorms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_a_frozen_backbone_keeps_its_weights_and_statistics_while_the_head_trains() -> None:
    model, config = _resnet(freeze_backbone_epochs=1)
    opt = make_optimizer(config, param_groups(model, config))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_train_mode(model, config, epoch=0)
    assert not model.backbone.training and model.projection.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("backbone."))
    assert not torch.equal(after["projection.weight"], before["projection.weight"])
    assert all(p.grad is None for p in model.backbone.parameters())
    set_train_mode(model, config, epoch=1)  # the frozen epochs are over
    assert model.backbone.training and all(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_keeps_the_statistics_but_trains_scale_and_shift() -> None:
    model, config = _resnet(freeze_batchnorm=True)
    bns = _batchnorms(model.backbone)
    stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]  # type: ignore[union-attr]
    set_train_mode(model, config, epoch=0)
    assert model.backbone.training and not any(bn.training for bn in bns)
    opt = make_optimizer(config, param_groups(model, config))
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    weight = bns[0].weight.clone()
    opt.step()
    assert all(
        torch.equal(bn.running_mean, m) and torch.equal(bn.running_var, v)  # type: ignore[arg-type]
        for bn, (m, v) in zip(bns, stats, strict=True)
    )
    assert not torch.equal(bns[0].weight, weight)
    unfrozen = digits_config(model="resnet18", pretrained="imagenet").resolved()
    set_train_mode(model, unfrozen, epoch=0)
    assert all(bn.training for bn in bns)
