"""Online miners: pure functions of a distance matrix and labels returning index tensors.

A triplet miner returns ``(anchor, positive, negative)``, three int64 tensors of one length
on the device of its inputs, with ``labels[a] == labels[p] != labels[n]`` and ``a != p``.
A pair miner returns ``(a1, p, a2, n)``: positive pairs ``(a1[i], p[i])`` and negative pairs
``(a2[j], n[j])``, each unordered pair once (``a1 < p``, ``a2 < n``). Losses consume these
tuples, so any miner composes with any loss.

**Rectangular inputs (cross-batch memory).** Every miner also takes a (B, N) matrix of B
anchors against N >= B candidates whose first B are the anchors themselves (the current batch
followed by earlier batches' embeddings, :class:`tripletlab.losses.EmbeddingMemory`), with
``labels`` (N,) for the candidates. Anchor ``i`` is candidate ``i``, so "never its own
positive" excludes the leading (B, B) block's diagonal; the square matrix is the case N = B.
Returned indices index the candidates (anchors are < B).

Miners read the distances without gradients; they never loop over the batch in Python and
never call ``.item()`` on a distance. Building a tuple whose length depends on the data
(``nonzero``) is the one read-back from the device they make.

The per-pair miners lay each anchor's positives out as a (B, K) table
(:func:`positive_table`, K = most positives of an anchor). For small K (P x K batches) they
compare every positive pair with every negative in (chunk, K, B) blocks, O(B^2 K) time and
bounded memory; for large K they sort each anchor's negatives once and choose by
``searchsorted``, O(B^2 log B). Neither builds a (B, B, B) tensor.

References:
    Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015 (semi-hard negatives).
    Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
    2017 (batch-all, batch-hard).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from tripletlab.checks import check_distance_matrix, check_labels, check_margin

Triplets = tuple[Tensor, Tensor, Tensor]
Pairs = tuple[Tensor, Tensor, Tensor, Tensor]
TripletMiner = Callable[[Tensor, Tensor], Triplets]
PairMiner = Callable[[Tensor, Tensor], Pairs]


#: Up to this many positives per anchor, the miners compare every positive pair with every
#: negative directly in (chunk, K, B) blocks: O(B^2 K) time, no sort. Above it they sort each
#: anchor's negatives once, O(B^2 log B). The crossover measured on a 2-core CPU at B = 1024
#: lies between K = 6 and K = 8; P x K batches (K = 4) take the direct path.
DENSE_MAX_POSITIVES = 6
#: Elements in one (chunk, K, B) block of the direct path (bounds its memory to ~100 MB).
CHUNK_ELEMENTS = 1 << 22


class NegativeOrder(NamedTuple):
    """Each anchor's negatives sorted by distance, nearest first.

    Attributes:
        values: (B, N) sorted distances; the slots past ``num[a]`` hold ``inf``.
        indices: (B, N) int64 candidate index of each sorted distance.
        num: (B,) int64 number of negatives of each anchor.
    """

    values: Tensor
    indices: Tensor
    num: Tensor


class PositiveTable(NamedTuple):
    """Each anchor's positives as a padded table (K = the largest number of positives).

    Attributes:
        indices: (B, K) int64 positive indices in ascending order; padding slots hold any index.
        valid: (B, K) bool, true on real positives of anchors that also have a negative.
    """

    indices: Tensor
    valid: Tensor


def label_masks(labels: Tensor, num_anchors: int | None = None) -> tuple[Tensor, Tensor]:
    """Boolean masks of positive and negative pairs.

    Args:
        labels: (N,) integer class ids of the candidates.
        num_anchors: B, the anchors are the first B candidates (None: B = N, square).

    Returns:
        ``(positive, negative)``, both (B, N) bool: ``positive[i, j]`` is
        ``labels[i] == labels[j] and i != j``; ``negative[i, j]`` is ``labels[i] != labels[j]``.
    """
    n = labels.shape[0]
    b = n if num_anchors is None else num_anchors
    same = labels[:b, None] == labels[None, :]  # (B, N)
    eye = torch.eye(b, n, dtype=torch.bool, device=labels.device)  # (B, N): anchor i is cand. i
    return same & ~eye, ~same


def negative_order(dist: Tensor, labels: Tensor) -> NegativeOrder:
    """Sort each row's negatives by distance (see :class:`NegativeOrder`).

    Args:
        dist: (B, N) distances (N = B: square).
        labels: (N,) integer class ids.
    """
    _, negative = label_masks(labels, dist.shape[0])
    values, indices = dist.masked_fill(~negative, float("inf")).sort(dim=1)  # (B, N)
    return NegativeOrder(values, indices, negative.sum(1))


def positive_table(labels: Tensor, masks: tuple[Tensor, Tensor] | None = None) -> PositiveTable:
    """Each anchor's positives as a (B, K) table; see :class:`PositiveTable`.

    Args:
        labels: (N,) integer class ids of the candidates.
        masks: ``label_masks(labels, B)`` for B < N anchors (None: square, B = N).

    Reads K back from the device (one sync).
    """
    n = labels.shape[0]
    positive, negative = label_masks(labels) if masks is None else masks
    b = positive.shape[0]
    k = int(positive.sum(1).max()) if b else 0
    score = positive * torch.arange(n, 0, -1, device=labels.device)  # (B, N): N - j on positives
    top = score.topk(k, dim=1)  # (B, K): positives first, lowest index first
    return PositiveTable(top.indices, (top.values > 0) & negative.any(1)[:, None])


def count_true(mask: Tensor, dim: int) -> Tensor:
    """``mask.sum(dim)`` for a bool tensor, as int32, without an int64 copy of ``mask``."""
    return mask.view(torch.uint8).sum(dim, dtype=torch.int32)


def use_direct_path(table: PositiveTable) -> bool:
    """Whether to compare pairs with negatives directly rather than sort the negatives."""
    return table.indices.shape[1] <= DENSE_MAX_POSITIVES


def anchor_chunks(b: int, k: int, n: int | None = None) -> list[slice]:
    """Slices of B anchors whose (chunk, K, N) blocks hold at most :data:`CHUNK_ELEMENTS`
    (N candidates; None: N = B)."""
    step = max(1, CHUNK_ELEMENTS // max(1, k * (b if n is None else n)))
    return [slice(s, min(b, s + step)) for s in range(0, b, step)]


def in_window(
    d_ap: Tensor, d_an: Tensor, negative: Tensor, margin: float, above_positive: bool
) -> Tensor:
    """Which negatives lie in each positive pair's window.

    Args:
        d_ap: (C, K) anchor-positive distances.
        d_an: (C, N) the same anchors' distances to every candidate.
        negative: (C, N) bool, which of those are negatives.
        margin: the window ends below ``d(a,p) + margin``.
        above_positive: the window also starts above ``d(a,p)`` (semi-hard).

    Returns:
        (C, K, N) bool.
    """
    ap, an = d_ap[:, :, None], d_an[:, None, :]  # (C, K, 1), (C, 1, N)
    win = (an < ap + margin) & negative[:, None, :]  # (C, K, N)
    return win & (an > ap) if above_positive else win


def _slots_to_triplets(table: PositiveTable, chosen: Tensor, keep: Tensor) -> Triplets:
    """Flatten the kept (B, K) slots to ``(a, p, n)`` in anchor, then positive, order."""
    keep = keep & table.valid
    anchors = torch.arange(chosen.shape[0], device=chosen.device)[:, None].expand_as(chosen)
    return anchors[keep], table.indices[keep], chosen[keep]


def _no_triplets(device: torch.device) -> Triplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty, empty


def all_triplets(labels: Tensor) -> Triplets:
    """Every valid triplet: ``a != p``, ``labels[a] == labels[p] != labels[n]``.

    Both orders of each positive pair appear. Sorted by anchor, then positive, then negative.
    The count is ``sum_c n_c (n_c - 1) (B - n_c)``; at B = 4096 with 4 samples a class that is
    50 million triplets (1.2 GB of indices), so the batch-all loss never materialises them
    (see :func:`tripletlab.losses.batch_all_triplet_loss`).

    Args:
        labels: (B,) integer class ids.

    Returns:
        ``(a, p, n)``, each (T,) int64.

    Corner cases:
        A single class, singletons only, or B < 2 give empty tensors.
    """
    check_labels(labels)
    positive, negative = label_masks(labels)
    # Each anchor's negatives first, in index order (stable sort of "is not negative").
    neg_list = torch.sort((~negative).to(torch.uint8), dim=1, stable=True).indices  # (B, B)
    n_neg = negative.sum(1)  # (B,)
    a, p = positive.nonzero(as_tuple=True)  # (P,)
    reps = n_neg[a]  # (P,)
    a_t = a.repeat_interleave(reps)  # (T,)
    p_t = p.repeat_interleave(reps)  # (T,)
    starts = torch.cumsum(reps, 0) - reps  # (P,)
    offset = torch.arange(a_t.shape[0], device=labels.device) - starts.repeat_interleave(reps)
    return a_t, p_t, neg_list[a_t, offset]


def batch_hard(dist: Tensor, labels: Tensor) -> Triplets:
    """Batch-hard mining: per anchor, the farthest positive and the nearest negative.

    Args:
        dist: (B, N) distances (N = B: square; see the module docstring).
        labels: (N,) integer class ids.

    Returns:
        ``(a, p, n)``, one triplet for each anchor that has both a positive and a negative,
        in anchor order. Ties go to the lowest index. Only the order of the distances
        matters, so any increasing function of them (squared distances) mines the same.

    Corner cases:
        Anchors whose class has no other member, or whose batch holds no other class, are
        skipped; a single class or B < 2 gives empty tensors.
    """
    check_distance_matrix(dist, labels)
    if labels.shape[0] == 0:
        return _no_triplets(labels.device)
    d = dist.detach()
    same = labels[: d.shape[0], None] == labels[None, :]  # (B, N)
    inf = d.new_tensor(float("inf"))
    d_pos = torch.where(same, d, -inf)  # (B, N)
    d_pos.diagonal().fill_(float("-inf"))  # an anchor (candidate i < B) is not its own positive
    far_p = d_pos.max(1)  # (B,), (B,)
    near_n = torch.where(same, inf, d).min(1)  # (B,), (B,)
    (a,) = ((far_p.values > float("-inf")) & (near_n.values < float("inf"))).nonzero(as_tuple=True)
    return a, far_p.indices[a], near_n.indices[a]


def semi_hard(dist: Tensor, labels: Tensor) -> Triplets:
    """Semi-hard mining as FaceNet and TF-Addons' ``triplet_semihard_loss`` define it.

    For every ordered positive pair ``(a, p)``: the nearest negative farther than the
    positive, ``argmin {d(a, n) : d(a, n) > d(a, p)}``; when no negative is that far, the
    farthest negative. (pytorch-metric-learning's ``TripletMarginMiner("semihard")`` is a
    different rule: all negatives within the margin; see :func:`semi_hard_random`.)

    Args:
        dist: (B, N) distances (N = B: square; see the module docstring).
        labels: (N,) integer class ids.

    Returns:
        ``(a, p, n)``, one triplet per positive pair whose anchor has a negative, ordered by
        anchor then positive.

    Corner cases:
        Positive pairs whose anchor has no negative (a single class) are skipped.
    """
    check_distance_matrix(dist, labels)
    d = dist.detach()
    masks = label_masks(labels, d.shape[0])
    table = positive_table(labels, masks)
    if not table.valid.any():
        return _no_triplets(labels.device)
    _, negative = masks
    d_ap = d.gather(1, table.indices)  # (B, K)
    farthest = d.masked_fill(~negative, float("-inf")).argmax(1)  # (B,)
    chosen = farthest[:, None].expand_as(table.indices).clone()  # (B, K)
    if use_direct_path(table):
        for s in anchor_chunks(d.shape[0], table.indices.shape[1], d.shape[1]):
            win = in_window(d_ap[s], d[s], negative[s], float("inf"), above_positive=True)
            near = d[s][:, None, :].masked_fill(~win, float("inf")).min(2)  # (C, K)
            chosen[s] = torch.where(win.any(2), near.indices, chosen[s])
    else:
        order = negative_order(d, labels)
        j = torch.searchsorted(order.values, d_ap, right=True)  # (B, K): #neg <= d(a, p)
        j = torch.minimum(j, (order.num - 1).clamp_min(0)[:, None])  # none farther: the farthest
        chosen = order.indices.gather(1, j)
    return _slots_to_triplets(table, chosen, table.valid)


def hardest_negative(dist: Tensor, labels: Tensor, margin: float) -> Triplets:
    """For every positive pair, the negative with the largest ``d(a,p) - d(a,n) + margin``.

    That is the anchor's nearest negative; the triplet is kept only when its loss is > 0
    (siamese-triplet's ``HardestNegativeTripletSelector``).

    Args:
        dist: (B, N) distances (N = B: square; see the module docstring).
        labels: (N,) integer class ids.
        margin: the triplet margin, >= 0.

    Returns:
        ``(a, p, n)``, at most one triplet per ordered positive pair.
    """
    check_distance_matrix(dist, labels)
    check_margin(margin)
    if labels.shape[0] == 0:
        return _no_triplets(labels.device)
    d = dist.detach()
    masks = label_masks(labels, d.shape[0])
    table = positive_table(labels, masks)
    _, negative = masks
    nearest = d.masked_fill(~negative, float("inf")).min(1)  # (B,), (B,)
    d_ap = d.gather(1, table.indices)  # (B, K)
    keep = d_ap - nearest.values[:, None] + margin > 0  # (B, K)
    return _slots_to_triplets(table, nearest.indices[:, None].expand_as(d_ap), keep)


def _random_in_window(
    dist: Tensor,
    labels: Tensor,
    margin: float,
    above_positive: bool,
    generator: torch.Generator | None,
) -> Triplets:
    """For each positive pair, a uniform negative inside its window (see :func:`in_window`)."""
    d = dist.detach()
    masks = label_masks(labels, d.shape[0])
    table = positive_table(labels, masks)
    if not table.valid.any():
        return _no_triplets(labels.device)
    _, negative = masks
    d_ap = d.gather(1, table.indices)  # (B, K)
    device = generator.device if generator is not None else d.device
    u = torch.rand(d_ap.shape, generator=generator, device=device).to(d.device)  # (B, K)
    chosen = torch.zeros_like(table.indices)  # (B, K)
    count = torch.zeros_like(table.indices)  # (B, K)
    if use_direct_path(table):
        for s in anchor_chunks(d.shape[0], table.indices.shape[1], d.shape[1]):
            win = in_window(d_ap[s], d[s], negative[s], margin, above_positive)  # (C, K, N)
            count[s] = count_true(win, 2)
            r = (u[s] * count[s]).long().clamp_max(count[s] - 1)  # (C, K): r-th candidate
            chosen[s] = (win.cumsum(2) > r[:, :, None]).int().argmax(2)
    else:
        order = negative_order(d, labels)
        hi = torch.searchsorted(order.values, d_ap + margin)  # (B, K): #neg < d(a,p) + m
        lo = (
            torch.searchsorted(order.values, d_ap, right=True)
            if above_positive
            else torch.zeros_like(hi)
        )
        count = hi - lo
        r = lo + (u * count).long().clamp_max(count - 1).clamp_min(0)
        chosen = order.indices.gather(1, r.clamp_max(d.shape[1] - 1))
    return _slots_to_triplets(table, chosen, count > 0)


def random_hard(
    dist: Tensor, labels: Tensor, margin: float, generator: torch.Generator | None = None
) -> Triplets:
    """For every positive pair, a uniformly random negative among those with loss > 0.

    The candidates are ``{n : d(a, n) < d(a, p) + margin}`` (siamese-triplet's
    ``RandomNegativeTripletSelector``).

    Args:
        dist: (B, N) distances (N = B: square; see the module docstring).
        labels: (N,) integer class ids.
        margin: the triplet margin, >= 0.
        generator: the source of randomness (any device; the draws are moved to ``dist``'s).

    Returns:
        ``(a, p, n)``, one triplet per ordered positive pair that has a candidate.
    """
    check_distance_matrix(dist, labels)
    check_margin(margin)
    return _random_in_window(dist, labels, margin, False, generator)


def semi_hard_random(
    dist: Tensor, labels: Tensor, margin: float, generator: torch.Generator | None = None
) -> Triplets:
    """For every positive pair, a uniformly random semi-hard negative.

    The candidates are ``{n : d(a, p) < d(a, n) < d(a, p) + margin}``: farther than the
    positive but inside the margin (siamese-triplet's ``SemihardNegativeTripletSelector``;
    the same set as pytorch-metric-learning's ``TripletMarginMiner("semihard")``).

    Args:
        dist: (B, N) distances (N = B: square; see the module docstring).
        labels: (N,) integer class ids.
        margin: the triplet margin, >= 0.
        generator: the source of randomness.

    Returns:
        ``(a, p, n)``, one triplet per ordered positive pair that has a candidate.
    """
    check_distance_matrix(dist, labels)
    check_margin(margin)
    return _random_in_window(dist, labels, margin, True, generator)


def all_pairs(labels: Tensor) -> Pairs:
    """Every unordered pair ``i < j``, split into positive and negative pairs.

    Args:
        labels: (B,) integer class ids.

    Returns:
        ``(a1, p, a2, n)``: positive pairs ``(a1, p)`` and negative pairs ``(a2, n)``, int64.
    """
    check_labels(labels)
    i, j = torch.triu_indices(labels.shape[0], labels.shape[0], 1, device=labels.device)
    same = labels[i] == labels[j]
    return i[same], j[same], i[~same], j[~same]


def hard_negative_pairs(dist: Tensor, labels: Tensor) -> Pairs:
    """All positive pairs plus as many of the closest negative pairs.

    siamese-triplet's ``HardNegativePairSelector``: the negatives are the
    ``min(#positive pairs, #negative pairs)`` unordered negative pairs of smallest distance.
    With N > B candidates the pairs are ``(i, j)`` with ``i < B`` and ``i < j < N``: each
    unordered pair of the batch once, and every anchor with every later candidate.

    Args:
        dist: (B, N) distances (N = B: square).
        labels: (N,) integer class ids.

    Returns:
        ``(a1, p, a2, n)`` as in :func:`all_pairs`; negative pairs nearest first.

    Corner cases:
        A batch without a positive pair selects no negative pair either (nothing to balance).
    """
    check_distance_matrix(dist, labels)
    b, n = dist.shape
    i, j = torch.triu_indices(b, n, 1, device=labels.device)
    same = labels[i] == labels[j]
    neg_d = dist.detach()[i, j].masked_fill(same, float("inf"))  # (B(B-1)/2,)
    n_hard = min(int(same.sum()), int((~same).sum()))
    hard = neg_d.topk(n_hard, largest=False).indices
    return i[same], j[same], i[hard], j[hard]
