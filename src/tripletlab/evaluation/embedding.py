"""Embedding a set of images with a run's model: :func:`embed_set` (a block at a time, with
progress) and :func:`check_finite`, the one-line error for NaN or Inf embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from tripletlab.evaluation.common import Progress, Stats
from tripletlab.models import EmbeddingModel
from tripletlab.training import embed


def check_finite(embeddings: Tensor, what: str, source: str = "the model") -> None:
    """One-line ``ValueError`` when some (N, D) embedding rows hold NaN or Inf."""
    bad = int((~torch.isfinite(embeddings)).any(1).sum()) if embeddings.numel() else 0
    if bad:
        raise ValueError(
            f"{source} gives NaN or Inf embeddings for {bad} of {embeddings.shape[0]} {what} "
            "images (its weights are not finite: the run diverged); evaluate an earlier "
            "checkpoint or retrain with a lower --lr"
        )


def embed_set(
    model: EmbeddingModel,
    images: Tensor,
    stats: Stats,
    device: torch.device,
    *,
    batch_size: int = 256,
    progress: Progress | None = None,
    what: str = "test",
    flip: bool = False,
    amp: bool | None = None,
) -> Tensor:
    """:func:`tripletlab.training.embed` a block of ``8 * batch_size`` images at a time,
    reporting progress as ``("embedding <what>", images done, N)``; ``flip``, ``amp`` as there.

    Args:
        images: (N, C, H, W) uint8.

    Returns:
        (N, D) float32 on ``device``.
    """
    if progress is None:
        return embed(model, images, stats, device, batch_size, flip=flip, amp=amp)
    n, desc = images.shape[0], f"embedding {what}"
    progress(desc, 0, n)
    parts = []
    for s in range(0, n, 8 * batch_size):
        block = images[s : s + 8 * batch_size]
        parts.append(embed(model, block, stats, device, batch_size, flip=flip, amp=amp))
        progress(desc, min(n, s + 8 * batch_size), n)
    return (
        torch.cat(parts)
        if parts
        else embed(model, images, stats, device, batch_size, flip=flip, amp=amp)
    )
