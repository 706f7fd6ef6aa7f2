"""The optimizer, the length of the run and the per-step learning-rate schedule a config
names."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tripletlab.training.config import DEFAULT_PASSES, MIN_EPOCH_STEPS, MIN_STEPS, TrainConfig


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
