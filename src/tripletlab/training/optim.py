"""The optimizer and the per-step learning-rate schedule a config names."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tripletlab.training.config import TrainConfig


def make_optimizer(config: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optim
    table: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            params, lr=o.lr, momentum=0.9, nesterov=True, weight_decay=o.weight_decay
        ),
    }
    return table[o.optimizer]()


def make_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then cosine / step / constant."""
    total = max(1, config.optim.epochs * steps_per_epoch)
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
