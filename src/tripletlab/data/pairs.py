"""Offline pairs and triplets of item indices, as siamese-triplet's SiameseMNIST and
TripletMNIST draw them: :func:`pair_indices`, :func:`triplet_indices`. Fresh ones each epoch
for training, one fixed seeded set for testing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tripletlab.data.errors import DataError


@dataclass(frozen=True)
class _ClassIndex:
    """Items grouped by class: ``order`` lists item ids by class; class c occupies positions
    ``starts[c] : starts[c] + counts[c]``; ``cls[i]`` is item i's compact class and ``rank[i]``
    its position within the class."""

    order: Tensor  # (N,)
    starts: Tensor  # (K,)
    counts: Tensor  # (K,)
    cls: Tensor  # (N,)
    rank: Tensor  # (N,)


def _class_index(labels: Tensor, what: str) -> _ClassIndex:
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(
            f"{what} needs (N,) integer labels, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.detach().cpu().long()
    _, cls, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if counts.numel() < 2:
        raise DataError(f"{what} needs at least 2 classes, got {counts.numel()}")
    if int(counts.max()) < 2:
        raise DataError(f"{what} needs a class with at least 2 items, every class has 1")
    order = torch.argsort(cls, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return _ClassIndex(order, starts, counts, cls, rank - starts[cls])


def _cycled(pool: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` items of ``pool`` from back-to-back random permutations of it, so each item
    appears floor(count / len(pool)) or one more times."""
    reps = -(-count // max(pool.numel(), 1))
    perms = [pool[torch.randperm(pool.numel(), generator=generator)] for _ in range(reps)]
    return torch.cat([*perms, pool.new_empty(0)])[:count]


def _uniform_below(bound: Tensor, generator: torch.Generator) -> Tensor:
    """One uniform integer in [0, bound[i]) per entry of an int64 tensor with bound >= 1."""
    u = torch.rand(bound.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * bound).long(), bound - 1)


def _positives(idx: _ClassIndex, anchors: Tensor, generator: torch.Generator) -> Tensor:
    """For anchors in classes of >= 2 items: another item of the same class, uniformly."""
    c = idx.cls[anchors]
    k = _uniform_below(idx.counts[c] - 1, generator)  # skip the anchor's own position
    k = k + (k >= idx.rank[anchors]).long()
    return idx.order[idx.starts[c] + k]


def _negatives(idx: _ClassIndex, anchors: Tensor, generator: torch.Generator) -> Tensor:
    """An item of another class: the class uniformly among the others, then the item."""
    c = idx.cls[anchors]
    k = _uniform_below(torch.full_like(c, idx.counts.numel() - 1), generator)
    other = k + (k >= c).long()
    item = _uniform_below(idx.counts[other], generator)
    return idx.order[idx.starts[other] + item]


def _check_count(count: int, what: str) -> None:
    if count < 0:
        raise DataError(f"{what} must be >= 0, got {count}")


def pair_indices(
    labels: Tensor, num_pairs: int, *, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Random pairs as in siamese-triplet's SiameseMNIST.

    ``same ~ Bernoulli(0.5)`` per pair; a positive pair takes a first item ``i`` from the
    classes with >= 2 items and ``j != i`` of the same class; a negative pair takes ``i`` from
    all items, a class other than i's uniformly, then ``j`` uniformly within it. The first items
    run through back-to-back random permutations, so each appears about equally often. Call it
    again each epoch for fresh training pairs; a generator seeded once gives fixed test pairs.

    Args:
        labels: (N,) integer class ids (any values), on any device.
        num_pairs: how many pairs, >= 0.
        generator: a CPU ``torch.Generator``; the only source of randomness.

    Returns:
        (i, j, same): (num_pairs,) int64 item indices and a (num_pairs,) bool, on labels'
        device.

    Raises:
        DataError: if labels are not 1-D integers, have fewer than 2 classes or no class with 2
            items, or ``num_pairs < 0``.
    """
    _check_count(num_pairs, "num_pairs")
    idx = _class_index(labels, "pair_indices")
    same = torch.rand(num_pairs, generator=generator) < 0.5  # (P,)
    n_pos = int(same.sum())
    eligible = torch.nonzero(idx.counts[idx.cls] >= 2).squeeze(1)
    everyone = torch.arange(idx.cls.numel())
    i = torch.empty(num_pairs, dtype=torch.int64)
    i[same] = _cycled(eligible, n_pos, generator)
    i[~same] = _cycled(everyone, num_pairs - n_pos, generator)
    j = torch.empty_like(i)
    j[same] = _positives(idx, i[same], generator)
    j[~same] = _negatives(idx, i[~same], generator)
    return i.to(labels.device), j.to(labels.device), same.to(labels.device)


def triplet_indices(
    labels: Tensor, num_triplets: int, *, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Random triplets as in siamese-triplet's TripletMNIST.

    Anchors run through back-to-back random permutations of the items whose class has >= 2
    items (items alone in their class cannot be anchors and are skipped); the positive is
    another item of the anchor's class, uniformly; the negative's class is drawn uniformly among
    the other classes, then the item uniformly within it. Call it again each epoch for fresh
    training triplets; a generator seeded once gives fixed test triplets.

    Args:
        labels: (N,) integer class ids (any values), on any device.
        num_triplets: how many triplets, >= 0.
        generator: a CPU ``torch.Generator``; the only source of randomness.

    Returns:
        (a, p, n): each (num_triplets,) int64 on labels' device, with ``p != a``,
        ``labels[p] == labels[a]`` and ``labels[n] != labels[a]``.

    Raises:
        DataError: if labels are not 1-D integers, have fewer than 2 classes or no class with 2
            items, or ``num_triplets < 0``.
    """
    _check_count(num_triplets, "num_triplets")
    idx = _class_index(labels, "triplet_indices")
    eligible = torch.nonzero(idx.counts[idx.cls] >= 2).squeeze(1)
    a = _cycled(eligible, num_triplets, generator)
    p = _positives(idx, a, generator)
    n = _negatives(idx, a, generator)
    return a.to(labels.device), p.to(labels.device), n.to(labels.device)
