"""Contrastive (siamese) loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by
Learning an Invariant Mapping", CVPR 2006): over every pair of the batch, over mined pairs, the
:class:`ContrastiveLoss` module and the offline :func:`contrastive_loss` on explicit pairs.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tripletlab.checks import check_choice, check_embeddings, check_labels, check_margin
from tripletlab.distances import Distance, check_distance, paired_distances
from tripletlab.losses.common import LossStats, _entries, _mining_name, _pairs_of, _ratio, _rows
from tripletlab.losses.memory import (
    EmbeddingMemory,
    anchor_distances,
    candidate_labels,
    with_memory,
)
from tripletlab.miners import PairMiner, Pairs, count_true, hard_negative_pairs

PairMining = Literal["all", "hard_negative"]
PAIR_MININGS: tuple[PairMining, ...] = get_args(PairMining)


def _contrastive_terms(d: Tensor, positive: Tensor, pos_margin: float, neg_margin: float) -> Tensor:
    """``relu(d - pos_margin)^2`` where ``positive``, else ``relu(neg_margin - d)^2``."""
    return torch.where(positive, F.relu(d - pos_margin), F.relu(neg_margin - d)) ** 2


def contrastive_terms_mean(
    d_pos: Tensor, d_neg: Tensor, pos_margin: float, neg_margin: float
) -> tuple[Tensor, LossStats]:
    """Mean contrastive loss of given positive-pair and negative-pair distances.

    Per pair ``relu(d - pos_margin)^2`` (positive) or ``relu(neg_margin - d)^2`` (negative),
    averaged over all the pairs together (Hadsell et al. 2006).

    Args:
        d_pos: (P,) positive-pair distances.
        d_neg: (N,) negative-pair distances.
        pos_margin: positives closer than this cost nothing, >= 0.
        neg_margin: negatives farther than this cost nothing, >= 0.

    Returns:
        ``(loss, stats)``; ``loss`` is 0 when P + N = 0.
    """
    d = torch.cat([d_pos, d_neg])  # (P + N,)
    is_pos = torch.arange(d.shape[0], device=d.device) < d_pos.shape[0]
    per = _contrastive_terms(d, is_pos, pos_margin, neg_margin)
    count = torch.tensor(d.shape[0], device=d.device)
    stats = LossStats(
        num_tuples=count,
        fraction_active=_ratio((per > 0).sum().to(d.dtype), count),
        pos_distance=_ratio(d_pos.detach().sum(), torch.tensor(d_pos.shape[0], device=d.device)),
        neg_distance=_ratio(d_neg.detach().sum(), torch.tensor(d_neg.shape[0], device=d.device)),
    )
    return _ratio(per.sum(), count), stats


def contrastive_loss_from_pairs(
    dist: Tensor, pairs: Pairs, pos_margin: float, neg_margin: float
) -> tuple[Tensor, LossStats]:
    """:func:`contrastive_terms_mean` of pairs given as indices into a (B, N) distance matrix."""
    a1, p, a2, n = pairs
    return contrastive_terms_mean(
        _entries(dist, a1, p), _entries(dist, a2, n), pos_margin, neg_margin
    )


def contrastive_loss_from_embeddings(
    embeddings: Tensor,
    pairs: Pairs,
    pos_margin: float,
    neg_margin: float,
    distance: Distance = "euclidean",
) -> tuple[Tensor, LossStats]:
    """:func:`contrastive_terms_mean` of pairs given as indices into (B, D) embeddings."""
    a1, p, a2, n = pairs
    d_pos = paired_distances(_rows(embeddings, a1), _rows(embeddings, p), distance)  # (P,)
    d_neg = paired_distances(_rows(embeddings, a2), _rows(embeddings, n), distance)  # (N,)
    return contrastive_terms_mean(d_pos, d_neg, pos_margin, neg_margin)


def contrastive_loss_all_pairs(
    dist: Tensor,
    labels: Tensor,
    pos_margin: float,
    neg_margin: float,
    anchors: Tensor | None = None,
) -> tuple[Tensor, LossStats]:
    """:func:`contrastive_terms_mean` over every pair, computed on the whole matrix.

    Each unordered pair appears twice in a symmetric (B, B) matrix, which leaves the mean
    unchanged; the diagonal costs nothing (``relu(0 - pos_margin) = 0``) and is not counted.
    With ``anchors`` ((B,) bool), only the rows of the marked items count: the mean is over
    their ``rows * (B - 1)`` entries.

    A (B, N) matrix of the B anchors against N candidates whose first B are the anchors
    (cross-batch memory) averages over every ordered (anchor, candidate) pair but the
    anchor with itself, ``B (N - 1)`` entries: pairs within the batch count twice, as in the
    square case, pairs with an earlier batch's item once. ``labels`` is then (N,).
    """
    b, n = dist.shape
    same = labels[:b, None] == labels[None, :]  # (B, N), the leading diagonal included
    # relu(d - pos_margin) on positives, relu(neg_margin - d) on negatives: relu(sign d + offset).
    sign = torch.where(same, dist.new_tensor(1.0), dist.new_tensor(-1.0))  # (B, N)
    offset = torch.where(same, dist.new_tensor(-pos_margin), dist.new_tensor(neg_margin))
    hinge = F.relu(torch.addcmul(offset, sign, dist))  # (B, N)
    d = dist.detach()
    rows = b
    if anchors is not None:  # the other rows count for nothing
        hinge, d = hinge * anchors[:, None], d * anchors[:, None]  # (B, N)
        same = same & anchors[:, None]
        rows = int(count_true(anchors, 0))
    per_sum = hinge.square().sum()
    count = torch.tensor(rows * (n - 1), device=dist.device)
    n_pos = count_true(same.view(-1), 0) - rows
    pos_sum = torch.where(same, d, 0.0).sum()  # the diagonal is 0
    stats = LossStats(
        num_tuples=count // 2,
        fraction_active=_ratio(count_true(hinge.detach().view(-1) > 0, 0).to(d.dtype), count),
        pos_distance=_ratio(pos_sum, n_pos),
        neg_distance=_ratio(d.sum() - pos_sum, count - n_pos),
    )
    return _ratio(per_sum, count), stats


class ContrastiveLoss(nn.Module):
    """Online contrastive (siamese) loss over pairs mined in the batch (Hadsell et al. 2006).

    Per pair ``relu(d - pos_margin)^2`` for positives and ``relu(neg_margin - d)^2`` for
    negatives, averaged over the selected pairs (0 when none).

    ``mining``: ``"all"`` (every unordered pair), ``"hard_negative"`` (all positive pairs and
    as many closest negative pairs) or a callable ``miner(dist, labels) -> (a1, p, a2, n)``.

    Args:
        pos_margin: >= 0.
        neg_margin: >= 0.
        distance: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        mining: see above.
        check_finite: raise ``ValueError`` on NaN/Inf embeddings (one device sync a call).
        memory_size: M, a cross-batch memory (Wang et al. 2020, :mod:`tripletlab.losses.memory`)
            of the last M embeddings, paired with the batch's anchors as well (0: none):
            ``"all"`` averages over every (anchor, candidate) pair
            (:func:`contrastive_loss_all_pairs`), ``"hard_negative"`` and a callable mine the
            (B, B + M) matrix. The batch is enqueued after its loss.
        memory_warmup_steps: calls before the memory is used and filled.

    Shapes:
        embeddings (B, D) floating, labels (B,) integer -> 0-d loss.
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: Distance = "euclidean",
        mining: PairMining | PairMiner = "all",
        *,
        check_finite: bool = True,
        memory_size: int = 0,
        memory_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        check_margin(pos_margin, "pos_margin")
        check_margin(neg_margin, "neg_margin")
        check_distance(distance)
        if isinstance(mining, str):
            check_choice("mining", mining, PAIR_MININGS)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.distance: Distance = distance
        self.mining = mining
        self.check_finite = check_finite
        self.memory = EmbeddingMemory(memory_size, memory_warmup_steps) if memory_size > 0 else None

    def forward_with_stats(
        self, embeddings: Tensor, labels: Tensor, anchors: Tensor | None = None
    ) -> tuple[Tensor, LossStats]:
        """Loss and :class:`LossStats` of one batch: embeddings (B, D), labels (B,).

        ``anchors``: (B,) bool, keep only the pairs whose first index is marked (for
        ``"all"``: the rows of the marked items); None: all.
        """
        check_embeddings(embeddings, finite=self.check_finite)
        check_labels(labels, embeddings.shape[0])
        return with_memory(
            self.memory,
            embeddings,
            labels,
            lambda held: self._loss(embeddings, labels, anchors, held),
        )

    def _loss(
        self,
        embeddings: Tensor,
        labels: Tensor,
        anchors: Tensor | None,
        held: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, LossStats]:
        """The loss of the batch's anchors against the batch and ``held`` (M, D), (M,)."""
        y = candidate_labels(labels, held)  # (N,); N = B without memory

        def distances() -> Tensor:  # (B, N)
            return anchor_distances(embeddings, held, self.distance)

        if self.mining == "all":
            return contrastive_loss_all_pairs(
                distances(), y, self.pos_margin, self.neg_margin, anchors
            )
        miner: PairMiner = hard_negative_pairs if self.mining == "hard_negative" else self.mining
        if held is not None:
            # A memory multiplies the pairs (every memory entry of an anchor's class is a
            # positive): read their distances from the differentiable (B, N) matrix the miner
            # saw, whose backward is one (B, N) x (N, D) product, instead of O(P D) gathers.
            matrix = distances()  # (B, N)
            pairs = _pairs_of(miner(matrix.detach(), y), anchors)
            return contrastive_loss_from_pairs(matrix, pairs, self.pos_margin, self.neg_margin)
        with torch.no_grad():
            dist = distances()  # (B, N)
        pairs = _pairs_of(miner(dist, y), anchors)
        return contrastive_loss_from_embeddings(
            embeddings, pairs, self.pos_margin, self.neg_margin, self.distance
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of one batch: embeddings (B, D), labels (B,) -> 0-d tensor."""
        return self.forward_with_stats(embeddings, labels)[0]

    def extra_repr(self) -> str:
        mining = _mining_name(self.mining)
        return (
            f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
            f"distance={self.distance!r}, mining={mining!r}"
        )


def contrastive_loss(
    x1: Tensor,
    x2: Tensor,
    same: Tensor,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: Distance = "euclidean",
) -> Tensor:
    """Offline contrastive loss on explicit pairs (rows of ``x1`` and ``x2``).

    Args:
        x1, x2: (N, D) each.
        same: (N,) bool or 0/1, whether row i of ``x1`` and ``x2`` share a class.
        pos_margin, neg_margin: >= 0.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.

    Returns:
        0-d mean of ``relu(d - pos_margin)^2`` (same) / ``relu(neg_margin - d)^2`` (not);
        0 for N = 0.
    """
    check_margin(pos_margin, "pos_margin")
    check_margin(neg_margin, "neg_margin")
    check_embeddings(x1, finite=False)
    if same.shape != (x1.shape[0],):
        raise ValueError(
            f"same must have shape ({x1.shape[0]},) to match x1, got {tuple(same.shape)}"
        )
    d = paired_distances(x1, x2, distance)  # (N,)
    per = _contrastive_terms(d, same.bool(), pos_margin, neg_margin)
    return _ratio(per.sum(), torch.tensor(per.shape[0], device=per.device))
