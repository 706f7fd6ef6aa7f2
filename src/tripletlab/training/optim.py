"""The optimizer (with the backbone's own learning rate), the length of the run, the
per-step learning-rate schedule a config names, and which part of the network trains in an
epoch (a frozen backbone, frozen BatchNorm statistics)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from tripletlab.models import EmbeddingModel
from tripletlab.training.config import DEFAULT_PASSES, MIN_EPOCH_STEPS, MIN_STEPS, TrainConfig

#: The parameter group key holding a group's learning rate as a multiple of ``--lr``.
LR_SCALE = "lr_scale"


def param_groups(model: EmbeddingModel, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one group of every parameter when
    ``backbone_lr_scale`` is 1 (as in earlier versions), else the head (projection and any
    classifier) at ``lr`` first and the backbone at ``lr * backbone_lr_scale``; each group
    records its factor under :data:`LR_SCALE`."""
    scale = config.optim.backbone_lr_scale
    if scale == 1:
        return [{"params": list(model.parameters()), LR_SCALE: 1.0}]
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return [
        {"params": head, "lr": config.optim.lr, LR_SCALE: 1.0},
        {"params": backbone, "lr": config.optim.lr * scale, LR_SCALE: scale},
    ]


def make_optimizer(
    config: TrainConfig, params: Iterable[nn.Parameter] | list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over ``params`` (parameters or
    :func:`param_groups`)."""
    o = config.optim
    table: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            params, lr=o.lr, momentum=0.9, nesterov=True, weight_decay=o.weight_decay
        ),
    }
    return table[o.optimizer]()


def set_train_mode(model: EmbeddingModel, config: TrainConfig, epoch: int) -> None:
    """Training mode for epoch ``epoch`` (0-based), what the config freezes excepted.

    - ``frozen_backbone``, or ``epoch < freeze_backbone_epochs``: the backbone's parameters
      do not require gradients (the optimizer skips them: no step, no weight decay, no
      moment updates) and the backbone is in eval mode (its BatchNorm statistics are kept);
      the head trains.
    - else with ``freeze_batchnorm``: the backbone's BatchNorm layers are in eval mode, so
      they normalise with their running statistics and do not update them; their scale and
      shift still train.

    Decided from the epoch and the config alone, so a resumed run continues in the same mode.
    """
    model.train()
    frozen = config.optim.frozen_backbone or epoch < config.optim.freeze_backbone_epochs
    model.backbone.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()
    elif config.optim.freeze_batchnorm:
        for m in model.backbone.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                m.eval()


def run_length(pass_steps: int, epochs: int | None, steps_per_epoch: int | None) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)`` of a run, the ones given as None derived from the
    data's ``pass_steps`` (batches in one pass over the training set).

    - Given epochs, an epoch is one pass unless ``steps_per_epoch`` is given (the behaviour
      of earlier versions, and what every saved config resolves to).
    - Without epochs (the default), the run is :data:`DEFAULT_PASSES` passes over the
      training set, at least :data:`MIN_STEPS` steps, in epochs of one pass but at least
      :data:`MIN_EPOCH_STEPS` steps: a large set keeps its 13 passes, a small one trains
      long enough to learn (early stopping ends it sooner when validation stops improving).

    Example:
        >>> run_length(362, None, None)  # Fashion-MNIST: 13 passes
        (13, 362)
        >>> run_length(58, None, None)  # 7,400 images in batches of 128
        (30, 100)
        >>> run_length(58, 5, None), run_length(58, None, 500)
        ((5, 58), (6, 500))
    """
    if steps_per_epoch is None:
        steps_per_epoch = pass_steps if epochs is not None else max(pass_steps, MIN_EPOCH_STEPS)
    if epochs is None:
        total = max(DEFAULT_PASSES * pass_steps, MIN_STEPS)
        epochs = max(1, -(-total // steps_per_epoch))
    return epochs, steps_per_epoch


def make_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor over ``epochs * steps_per_epoch`` steps: linear
    warm-up, then cosine / step / constant."""
    total = max(1, epochs * steps_per_epoch)
    warm = int(config.optim.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if config.optim.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.optim.schedule == "step":
            return 0.1 ** int(progress * 3)  # x0.1 at 1/3 and 2/3 of the run
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
