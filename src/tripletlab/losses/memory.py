"""Cross-batch memory (Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding Learning",
CVPR 2020): a FIFO queue of the last ``size`` detached embeddings with their labels, mined
against as extra positives and negatives of the current batch's anchors.

The anchors are the current batch; the candidates are the batch followed by the memory, so
mining sees a (B, B + M) distance matrix (:func:`candidate_distances`) and never a
(B, B + M, B + M) tensor. An anchor is never its own positive; a memory entry may be an
earlier view of the same image (allowed, as in pytorch-metric-learning's
``CrossBatchMemory``). The batch is enqueued after its loss is computed, and gradients flow
only through the current batch.

The queue is a buffer (it follows ``.to(device)``) left out of ``state_dict``: it is a cache
of stale embeddings, refilled within ``size / B`` steps, and its width is only known at the
first batch. A resumed run starts with an empty memory and counts its warm-up again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from tripletlab.distances import Distance, pairwise_distances


class EmbeddingMemory(nn.Module):
    """FIFO queue of the last ``size`` embeddings (M, D) and labels (M,), oldest first.

    Args:
        size: M, the most entries kept, >= 1.
        warmup_steps: the first ``warmup_steps`` calls of :meth:`push` neither use nor fill
            the memory (the paper starts it once the embeddings drift slowly), >= 0.

    Attributes:
        embeddings: (M', D) detached embeddings, M' <= M, oldest first, on the device and
            in the dtype of the last batch pushed (or of the last ``.to``).
        labels: (M',) int64.
        steps: how many batches :meth:`push` has seen (warm-up included).
    """

    def __init__(self, size: int, warmup_steps: int = 0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        if warmup_steps < 0:
            raise ValueError(f"memory warm-up steps must be >= 0, got {warmup_steps}")
        self.size = int(size)
        self.warmup_steps = int(warmup_steps)
        self.steps = 0
        self.embeddings: Tensor
        self.labels: Tensor
        self.register_buffer("embeddings", torch.zeros(0, 0), persistent=False)
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long), persistent=False)

    @property
    def active(self) -> bool:
        """Whether the warm-up is over (the memory is used and filled)."""
        return self.steps >= self.warmup_steps

    def contents(self) -> tuple[Tensor, Tensor] | None:
        """``(embeddings (M', D), labels (M',))`` to mine against, None while warming up or
        empty."""
        if not self.active or self.labels.shape[0] == 0:
            return None
        return self.embeddings, self.labels

    def push(self, embeddings: Tensor, labels: Tensor) -> None:
        """Count one step and, past the warm-up, enqueue a batch (B, D), (B,), detached,
        dropping the oldest entries beyond ``size``."""
        if self.active:
            e, y = embeddings.detach(), labels.detach().long()
            if self.labels.shape[0]:
                e = torch.cat([self.embeddings.to(e.device, e.dtype), e])  # (M' + B, D)
                y = torch.cat([self.labels.to(y.device), y])  # (M' + B,)
            self.embeddings, self.labels = e[-self.size :], y[-self.size :]
        self.steps += 1

    def clear(self) -> None:
        """Empty the queue and restart the warm-up."""
        self.embeddings = self.embeddings.new_zeros(0, 0)
        self.labels = self.labels.new_zeros(0)
        self.steps = 0

    def extra_repr(self) -> str:
        return f"size={self.size}, warmup_steps={self.warmup_steps}"


R = TypeVar("R")


def with_memory(
    memory: EmbeddingMemory | None,
    embeddings: Tensor,
    labels: Tensor,
    loss: Callable[[tuple[Tensor, Tensor] | None], R],
) -> R:
    """``loss(held)`` with what ``memory`` holds before this batch (None without a memory or
    during its warm-up), then the batch (B, D), (B,) enqueued: the order every loss with a
    cross-batch memory follows, so that an item is never its own candidate."""
    held = memory.contents() if memory is not None else None
    result = loss(held)
    if memory is not None:
        memory.push(embeddings, labels)
    return result


def candidate_distances(
    embeddings: Tensor, memory: Tensor, distance: Distance = "euclidean"
) -> Tensor:
    """Distances of the B anchors to the candidates: the batch, then the memory.

    Args:
        embeddings: (B, D) the current batch (differentiable).
        memory: (M, D) the memory (detached).
        distance: as in :func:`tripletlab.distances.pairwise_distances`.

    Returns:
        (B, B + M); the leading (B, B) block is ``pairwise_distances(embeddings)``, with its
        diagonal exactly 0.
    """
    within = pairwise_distances(embeddings, distance=distance)  # (B, B)
    across = pairwise_distances(embeddings, memory.to(embeddings.dtype), distance)  # (B, M)
    return torch.cat([within, across], 1)  # (B, B + M)


def candidate_labels(labels: Tensor, held: tuple[Tensor, Tensor] | None) -> Tensor:
    """The labels of a batch's candidates: the batch's (B,), then the memory's ``held``
    (M,) when there is one: (B + M,)."""
    if held is None:
        return labels
    return torch.cat([labels, held[1].to(labels.device)])  # (B + M,)


def anchor_distances(
    embeddings: Tensor, held: tuple[Tensor, Tensor] | None, distance: Distance
) -> Tensor:
    """(B, N) distances of the anchors to their candidates: ``pairwise_distances`` of the
    batch without a memory, :func:`candidate_distances` with one."""
    if held is None:
        return pairwise_distances(embeddings, distance=distance)
    return candidate_distances(embeddings, held[0], distance)
