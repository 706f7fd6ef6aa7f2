"""The fixed-triplet ordering accuracy of SpikeKing's ``triplet-loss-mnist``: seeded
evaluation triplets and the fraction of them ordered right."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tripletlab.distances import Distance, check_distance, paired_distances
from tripletlab.metrics.checks import _check_label_tensor, _check_labeled


def fixed_triplets(labels: Tensor, *, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded evaluation triplets in the manner of SpikeKing's ``triplet-loss-mnist``.

    The classes with at least two members anchor ``m`` triplets each, ``m`` = (the smallest
    such class's size) - 1, so every anchor class weighs the same: with ``c_0 < c_1 < ...``
    the members of class c in index order, the triplets are ``(c_i, c_{i+1}, n_i)`` for
    ``i < m``, where ``n_i`` is a uniformly random member of a uniformly random other class
    (a ``torch.Generator`` seeded with ``seed``; the global RNG is untouched).

    Args:
        labels: (N,) integer classes.
        seed: seed of the negatives.

    Returns:
        ``(anchor, positive, negative)`` int64 index tensors of equal length on the labels'
        device; empty with fewer than two classes or no class of two.

    Example:
        Classes 0 (items 0, 2, 4) and 1 (items 1, 3) anchor min(3, 2) - 1 = 1 triplet each;
        class 2 (item 5) has no positive; the negatives are a seeded draw.

        >>> a, p, n = fixed_triplets(torch.tensor([0, 1, 0, 1, 0, 2]))
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 1], [2, 3], [3, 2])
    """
    _check_label_tensor(labels, "labels")
    empty = labels.new_zeros(0, dtype=torch.long)
    classes, cls, counts = torch.unique(labels.cpu(), return_inverse=True, return_counts=True)
    anchoring = (counts >= 2).nonzero()[:, 0]  # (A,)
    if len(classes) < 2 or len(anchoring) == 0:
        return empty, empty, empty
    m = int(counts[anchoring].min()) - 1
    members = torch.argsort(cls, stable=True)  # (N,) grouped by class, index order within
    starts = counts.cumsum(0) - counts  # (K,)
    i = torch.arange(m)
    pos_in = starts[anchoring][:, None] + i[None, :]  # (A, m)
    anchor, positive = members[pos_in].flatten(), members[pos_in + 1].flatten()  # (A m,)
    g = torch.Generator().manual_seed(seed)
    k = len(classes)
    other = (anchoring.repeat_interleave(m) + torch.randint(1, k, (len(anchor),), generator=g)) % k
    pick = (torch.rand(len(anchor), generator=g, dtype=torch.float64) * counts[other]).long()
    negative = members[starts[other] + pick.clamp_max(counts[other] - 1)]
    device = labels.device
    return anchor.to(device), positive.to(device), negative.to(device)


@dataclass(frozen=True)
class TripletAccuracy:
    """Fraction of triplets ordered right, ``d(a, p) < d(a, n)``.

    Attributes:
        accuracy: over all triplets.
        per_class: anchor class -> accuracy over the triplets it anchors.
        num_triplets: triplets scored.
    """

    accuracy: float
    per_class: dict[int, float]
    num_triplets: int


def triplet_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    triplets: tuple[Tensor, Tensor, Tensor],
    *,
    distance: Distance = "euclidean",
) -> TripletAccuracy:
    """SpikeKing's ordering accuracy: the fraction of triplets with ``d(a, p) < d(a, n)``.

    Strictly less: a tie counts as wrong (a collapsed embedding scores 0). The order of
    ``"euclidean"`` and ``"sqeuclidean"`` distances is the same (SpikeKing used squared).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        triplets: ``(anchor, positive, negative)`` (T,) int64 indices with
            ``y[a] == y[p] != y[n]``, e.g. from :func:`fixed_triplets`.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.

    Returns:
        :class:`TripletAccuracy`; 0 and no classes for no triplet.

    Example:
        >>> x, y = torch.tensor([[0.0], [1.0], [3.0], [0.5]]), torch.tensor([0, 0, 1, 2])
        >>> t = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 3]))
        >>> triplet_accuracy(x, y, t)
        TripletAccuracy(accuracy=0.5, per_class={0: 0.5}, num_triplets=2)
    """
    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    a, p, n = (t.to(embeddings.device).long() for t in triplets)
    if not (a.dim() == p.dim() == n.dim() == 1 and a.shape == p.shape == n.shape):
        raise ValueError("triplets must be three 1-D index tensors of equal length (a, p, n)")
    if a.numel() == 0:
        return TripletAccuracy(0.0, {}, 0)
    size = embeddings.shape[0]
    if int(torch.stack([a, p, n]).min()) < 0 or int(torch.stack([a, p, n]).max()) >= size:
        raise ValueError(f"triplet indices must be within [0, {size}); check the triplets")
    y = labels.to(embeddings.device)
    if not bool(((y[a] == y[p]) & (y[a] != y[n])).all()):
        raise ValueError("every triplet needs y[a] == y[p] != y[n]; build them from the labels")
    x = embeddings.detach()
    right = paired_distances(x[a], x[p], distance) < paired_distances(x[a], x[n], distance)
    classes, cls = torch.unique(y[a], return_inverse=True)
    hits = torch.zeros(len(classes), dtype=torch.float64, device=x.device)
    hits.index_add_(0, cls, right.double())
    counts = torch.bincount(cls, minlength=len(classes)).double()
    per_class = dict(zip(classes.tolist(), (hits / counts).tolist(), strict=True))
    return TripletAccuracy(float(right.double().mean()), per_class, int(a.numel()))
