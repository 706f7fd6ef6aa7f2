"""Where a run computes and how it is embedded: the device, a run's embedding mode
(bfloat16 autocast itself is :func:`tripletlab.embedding.use_amp`)."""

from __future__ import annotations

import torch

from tripletlab.embedding import EmbedMode
from tripletlab.training.config import TrainConfig


def embedding_mode(
    config: TrainConfig, device: torch.device, batch_size: int | None = None
) -> EmbedMode:
    """How a run is embedded on ``device``: as it was trained (flip test-time augmentation
    when ``config.data.tta``, bfloat16 autocast when it trained with it), ``batch_size``
    images a pass (default the run's ``eval_batch_size``)."""
    bs = batch_size or config.run.eval_batch_size
    return EmbedMode.of_run(bool(config.data.tta), config.run.amp, device, bs)


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
