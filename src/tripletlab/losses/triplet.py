"""Triplet-margin losses (Weinberger & Saul 2009; Schroff, Kalenichenko & Philbin, "FaceNet",
2015): batch-all without a (B, B, B) tensor, the hinge of mined triplets with the online mining
and soft margin of Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
Re-Identification" (2017), the :class:`TripletMarginLoss` module and the offline
:func:`triplet_margin_loss`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tripletlab.checks import check_choice, check_embeddings, check_labels, check_margin
from tripletlab.distances import Distance, check_distance, paired_distances, safe_sqrt
from tripletlab.losses.common import LossStats, _entries, _mining_name, _ratio, _rows, _triplets_of
from tripletlab.losses.memory import (
    EmbeddingMemory,
    anchor_distances,
    candidate_labels,
    with_memory,
)
from tripletlab.miners import (
    PositiveTable,
    TripletMiner,
    Triplets,
    anchor_chunks,
    batch_hard,
    count_true,
    hardest_negative,
    in_window,
    label_masks,
    positive_table,
    random_hard,
    semi_hard,
    semi_hard_random,
    use_direct_path,
)

TripletMining = Literal[
    "batch_all", "batch_hard", "semi_hard", "hardest_negative", "random_hard", "semi_hard_random"
]
TRIPLET_MININGS: tuple[TripletMining, ...] = get_args(TripletMining)


def batch_all_counts(
    dist: Tensor, labels: Tensor, margin: float, masks: tuple[Tensor, Tensor] | None = None
) -> tuple[PositiveTable, Tensor, Tensor]:
    """How often each distance enters an active batch-all triplet.

    Triplet ``(a, p, n)`` is active iff ``d(a, n) < d(a, p) + margin``.

    Args:
        dist: (B, N) distances (read without gradients): square, or B anchors against N
            candidates whose first B are the anchors (cross-batch memory).
        labels: (N,) integer class ids of the candidates.
        margin: >= 0.
        masks: ``label_masks(labels, B)`` when the caller has them already.

    Returns:
        ``(table, c_pos, c_neg)``: ``table`` the anchors' positives
        (:func:`tripletlab.miners.positive_table`, (B, K)); ``c_pos`` (B, K), the number of
        active triplets of each positive pair ``(a, table.indices[a, k])``; ``c_neg`` (B, N), the
        number of active triplets of each anchor-negative pair. Counts are int32 (direct
        path) or int64 (threshold path).

    Up to :data:`tripletlab.miners.DENSE_MAX_POSITIVES` positives an anchor, every positive
    pair is compared with every negative in (chunk, K, N) blocks (the direct path). Above
    it (a cross-batch memory: hundreds of positives), each anchor's K thresholds
    ``d(a,p) + margin`` are sorted and every negative placed among them by ``searchsorted``,
    O(B N log K) with no sort of the N candidates (the threshold path); both count exactly.
    """
    d = dist.detach()
    positive, negative = label_masks(labels, d.shape[0]) if masks is None else masks
    table = positive_table(labels, (positive, negative))
    b, k = table.indices.shape
    n = d.shape[1]
    d_ap = d.gather(1, table.indices)  # (B, K)
    if use_direct_path(table):
        c_pos = torch.zeros(b, k, dtype=torch.int32, device=d.device)
        c_neg = torch.zeros(b, n, dtype=torch.int32, device=d.device)
        for s in anchor_chunks(b, k, n):
            active = in_window(d_ap[s], d[s], negative[s], margin, above_positive=False)
            active &= table.valid[s][:, :, None]  # (C, K, B)
            c_pos[s] = count_true(active, 2)
            c_neg[s] = count_true(active, 1)
        return table, c_pos, c_neg
    # Sort each anchor's K thresholds d(a,p) + margin (not its N negatives): a negative is
    # active with the positives whose threshold exceeds it, the top K - bucket of them.
    thresholds = (d_ap + margin).masked_fill(~table.valid, float("-inf"))  # (B, K)
    sorted_thr, rank = thresholds.sort(1)  # (B, K), ascending; invalid slots first
    d_neg = d.masked_fill(~negative, float("inf"))  # (B, N)
    bucket = torch.searchsorted(sorted_thr, d_neg, right=True)  # (B, N): #thresholds <= d(a,n)
    c_neg = k - bucket  # (B, N); 0 on non-negatives (inf reaches every threshold)
    # The positive of rank r is active with the negatives whose bucket is <= r.
    hist = torch.zeros(b, k + 1, dtype=torch.long, device=d.device)
    hist.scatter_add_(1, bucket, torch.ones_like(bucket))  # (B, K + 1): #negatives per bucket
    c_sorted = hist.cumsum(1)[:, :k]  # (B, K): counts of the ranked positives
    c_pos = torch.zeros_like(c_sorted).scatter_(1, rank, c_sorted) * table.valid  # (B, K)
    return table, c_pos, c_neg


def batch_all_triplet_loss(
    dist: Tensor, labels: Tensor, margin: float, anchors: Tensor | None = None
) -> tuple[Tensor, LossStats]:
    """Batch-all triplet loss: mean of ``relu(d(a,p) - d(a,n) + margin)`` over active triplets.

    Over all valid triplets (``a != p``, ``y[a] == y[p] != y[n]``), averaged over those with a
    positive loss (the torchvision reference's and omoindrot's reduction; pytorch-metric-
    learning's ``AvgNonZeroReducer``). ``fraction_active`` = active / valid triplets.

    No (B, B, B) tensor is built (nor (B, N, N) with N candidates). The sum over active
    triplets is linear in the distances,

        sum = sum_(a,p) c(a,p) d(a,p) - sum_(a,n) c(a,n) d(a,n) + margin * #active,

    where ``c(a,p)`` counts the active triplets of a positive pair and ``c(a,n)`` those of
    an anchor-negative pair (:func:`batch_all_counts`, computed without gradients). So the
    value and the gradient are exact, and the autograd graph holds only (B, B) tensors.
    The two sums are accumulated in float64 on the CPU since they nearly cancel.

    Args:
        dist: (B, N) distances, differentiable: square (N = B), or the B anchors against N
            candidates whose first B are the anchors themselves (cross-batch memory); the
            leading block's diagonal must be 0 (anchor vs itself).
        labels: (N,) integer class ids of the candidates.
        margin: >= 0.
        anchors: (B,) bool, count only the triplets of these anchors (None: all).

    Returns:
        ``(loss, stats)``; ``loss`` is a 0-d tensor, 0 when no triplet is active.
    """
    positive, negative = label_masks(labels, dist.shape[0])  # (B, N), (B, N)
    table, c_pos, c_neg = batch_all_counts(dist, labels, margin, (positive, negative))
    if anchors is not None:  # the other rows' triplets count 0 times
        c_pos, c_neg = c_pos * anchors[:, None], c_neg * anchors[:, None]  # (B, K), (B, N)
    num_active = c_pos.sum(dtype=torch.long)
    acc = torch.float64 if dist.device.type == "cpu" else dist.dtype
    d_ap = dist.gather(1, table.indices)  # (B, K)
    hinge_sum = (
        (c_pos * d_ap).sum(dtype=acc) - (c_neg * dist).sum(dtype=acc) + margin * num_active
    ).to(dist.dtype)

    n_pos, n_neg = count_true(positive, 1), count_true(negative, 1)  # (B,), (B,)
    if anchors is not None:
        n_pos, n_neg = n_pos * anchors, n_neg * anchors
    num_valid = (n_pos.long() * n_neg).sum()
    d_ap = d_ap.detach() * table.valid  # (B, K)
    pos_rows = d_ap.sum(1)  # (B,): sum of each anchor's positive distances
    neg_rows = dist.detach().sum(1) - pos_rows  # (B,): the rest of the row (diagonal is 0)
    stats = LossStats(
        num_tuples=num_valid,
        fraction_active=_ratio(num_active.to(dist.dtype), num_valid),
        pos_distance=_ratio((n_neg * pos_rows).sum(), num_valid),  # d(a,p) n_neg(a) times
        neg_distance=_ratio((n_pos * neg_rows).sum(), num_valid),  # d(a,n) n_pos(a) times
    )
    return _ratio(hinge_sum, num_active), stats


def triplet_hinge(
    d_ap: Tensor, d_an: Tensor, margin: float, *, soft_margin: bool = False
) -> tuple[Tensor, LossStats]:
    """Mean triplet loss of given anchor-positive and anchor-negative distances.

    Per triplet ``relu(d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` with
    ``soft_margin`` (Hermans et al. 2017), averaged over all T triplets.

    Args:
        d_ap: (T,) anchor-positive distances.
        d_an: (T,) anchor-negative distances.
        margin: >= 0; ignored with ``soft_margin``.
        soft_margin: use the softplus form.

    Returns:
        ``(loss, stats)``; ``loss`` is 0 when T = 0.
    """
    gap = d_ap - d_an  # (T,)
    per = F.softplus(gap) if soft_margin else F.relu(gap + margin)  # (T,)
    count = torch.tensor(d_ap.shape[0], device=d_ap.device)
    active = (gap >= 0) if soft_margin else (per > 0)
    stats = LossStats(
        num_tuples=count,
        fraction_active=_ratio(active.sum().to(per.dtype), count),
        pos_distance=_ratio(d_ap.detach().sum(), count),
        neg_distance=_ratio(d_an.detach().sum(), count),
    )
    return _ratio(per.sum(), count), stats


def triplet_loss_from_indices(
    dist: Tensor,
    triplets: Triplets,
    margin: float,
    *,
    soft_margin: bool = False,
    squared: bool = False,
) -> tuple[Tensor, LossStats]:
    """:func:`triplet_hinge` of triplets given as indices into a (B, N) distance matrix.

    With ``squared``, ``dist`` holds squared Euclidean distances and the hinge is taken of
    their square roots (:func:`tripletlab.distances.safe_sqrt`), read for the 2T entries the
    triplets use only: the Euclidean loss of a matrix that also served order-only mining.

    The backward pass goes through ``dist`` (an index-add of 2T scalars into (B, N), then
    whatever built ``dist``), so its cost barely depends on T; see
    :func:`triplet_loss_from_embeddings` for the O(T D) alternative.
    """
    a, p, n = triplets
    d_ap, d_an = _entries(dist, a, p), _entries(dist, a, n)  # (T,), (T,)
    if squared:
        d_ap, d_an = safe_sqrt(d_ap), safe_sqrt(d_an)
    return triplet_hinge(d_ap, d_an, margin, soft_margin=soft_margin)


def triplet_loss_from_embeddings(
    embeddings: Tensor,
    triplets: Triplets,
    margin: float,
    distance: Distance = "euclidean",
    *,
    soft_margin: bool = False,
) -> tuple[Tensor, LossStats]:
    """:func:`triplet_hinge` of triplets given as indices into (B, D) embeddings.

    The distances of the T triplets are computed from the embeddings directly, so the
    backward pass costs O(T D) instead of going through a (B, B) matrix: mine on a distance
    matrix computed without gradients, then call this.
    """
    a, p, n = triplets
    e_a = _rows(embeddings, a)  # (T, D)
    d_ap = paired_distances(e_a, _rows(embeddings, p), distance)  # (T,)
    d_an = paired_distances(e_a, _rows(embeddings, n), distance)  # (T,)
    return triplet_hinge(d_ap, d_an, margin, soft_margin=soft_margin)


class TripletMarginLoss(nn.Module):
    """Online triplet-margin loss: mine triplets in the batch, then average their hinge.

    ``mining`` chooses the triplets and the reduction (B = batch, T = mined triplets):

    - ``"batch_all"``: every valid triplet; mean over those with loss > 0;
      ``fraction_active`` = active / valid. No (B, B, B) tensor is built (see
      :func:`batch_all_triplet_loss`).
    - ``"batch_hard"``: per anchor the farthest positive and nearest negative; mean over
      anchors that have both. ``soft_margin=True`` uses ``softplus(d_ap - d_an)``.
    - ``"semi_hard"``: FaceNet / TF-Addons: per positive pair the nearest negative farther
      than the positive, else the farthest; sum of hinges / number of positive pairs.
    - ``"hardest_negative"``, ``"random_hard"``, ``"semi_hard_random"``: one negative per
      positive pair as in :mod:`tripletlab.miners`; mean over the selected triplets.
    - a callable ``miner(dist, labels) -> (a, p, n)``: mean over its triplets.

    Every mode gives 0 (not NaN) when it selects nothing.

    With ``memory_size`` M > 0 (cross-batch memory, Wang et al. 2020; see
    :mod:`tripletlab.losses.memory`) the positives and negatives of the batch's anchors come
    from the batch and the last M embeddings of earlier calls; every mode mines on the
    (B, B + M) distance matrix with the same reduction, a callable miner gets that matrix
    and the (B + M,) labels. The batch is enqueued after its loss.

    Args:
        margin: hinge margin, finite and >= 0.
        mining: a name above or a triplet-miner callable.
        distance: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        soft_margin: softplus instead of the hinge (not with ``"batch_all"``, where every
            triplet would be active).
        seed: seeds the generator of the random miners (a CPU generator; the draws are
            moved to the embeddings' device).
        check_finite: raise ``ValueError`` on NaN/Inf embeddings (one device sync a call).
        memory_size: M, the cross-batch memory's size (0: none).
        memory_warmup_steps: calls before the memory is used and filled.

    Shapes:
        embeddings (B, D) floating, labels (B,) integer -> 0-d loss.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: TripletMining | TripletMiner = "batch_all",
        distance: Distance = "euclidean",
        soft_margin: bool = False,
        *,
        seed: int | None = None,
        check_finite: bool = True,
        memory_size: int = 0,
        memory_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        check_margin(margin)
        check_distance(distance)
        if isinstance(mining, str):
            check_choice("mining", mining, TRIPLET_MININGS)
        if soft_margin and mining == "batch_all":
            raise ValueError(
                "soft_margin=True does not go with mining='batch_all' (every triplet would be "
                "active); use mining='batch_hard'"
            )
        self.margin = float(margin)
        self.mining = mining
        self.distance: Distance = distance
        self.soft_margin = soft_margin
        self.check_finite = check_finite
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else torch.initial_seed())
        self.memory = EmbeddingMemory(memory_size, memory_warmup_steps) if memory_size > 0 else None

    def _mine(self, dist: Tensor, labels: Tensor) -> Triplets:
        mining = self.mining
        if not isinstance(mining, str):
            return mining(dist, labels)
        margin, gen = self.margin, self.generator
        miners: dict[str, TripletMiner] = {
            "batch_hard": batch_hard,
            "semi_hard": semi_hard,
            "hardest_negative": lambda d, y: hardest_negative(d, y, margin),
            "random_hard": lambda d, y: random_hard(d, y, margin, gen),
            "semi_hard_random": lambda d, y: semi_hard_random(d, y, margin, gen),
        }
        return miners[mining](dist, labels)

    def forward_with_stats(
        self, embeddings: Tensor, labels: Tensor, anchors: Tensor | None = None
    ) -> tuple[Tensor, LossStats]:
        """Loss and :class:`LossStats` of one batch: embeddings (B, D), labels (B,).

        ``anchors``: (B,) bool, keep only the triplets whose anchor is marked (mining still
        sees the whole batch; see :mod:`tripletlab.losses`). None: all.

        With a memory, the batch's anchors mine the batch and the memory, then the batch is
        enqueued (see the class docstring).
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

        def distances(distance: Distance) -> Tensor:  # (B, N)
            return anchor_distances(embeddings, held, distance)

        if self.mining == "batch_all":
            return batch_all_triplet_loss(distances(self.distance), y, self.margin, anchors)
        # Batch-hard and semi-hard depend only on the order of the distances: mine those on
        # squared Euclidean distances and skip a square root over the (B, N) matrix.
        order_only = self.mining in ("batch_hard", "semi_hard") and self.distance == "euclidean"
        if held is not None:
            return self._loss_on_matrix(embeddings, held, y, anchors, order_only)
        with torch.no_grad():
            dist = distances("sqeuclidean" if order_only else self.distance)  # (B, N)
        triplets = _triplets_of(self._mine(dist, y), anchors)
        return triplet_loss_from_embeddings(
            embeddings, triplets, self.margin, self.distance, soft_margin=self.soft_margin
        )

    def _loss_on_matrix(
        self,
        embeddings: Tensor,
        held: tuple[Tensor, Tensor],
        labels: Tensor,
        anchors: Tensor | None,
        order_only: bool,
    ) -> tuple[Tensor, LossStats]:
        """The mined loss with a memory: the triplets' distances are read from the
        differentiable (B, N) matrix the miner saw (``labels`` (N,)), not recomputed from
        gathered (T, D) rows.

        A memory multiplies the positive pairs (semi-hard: T = every positive pair, ~70,000
        at B = 256, M = 4,096 with 16 classes a batch), so the per-triplet gathers and their
        backward cost O(T D) while the matrix's backward costs one (B, N) x (N, D) product.
        Euclidean distances are kept squared and their roots taken for the 2T entries only;
        the matrix's square root is bit for bit the Euclidean matrix, so the miners see the
        same distances as without this path. The values differ from the embeddings path by
        the rounding of ``|x|^2 + |y|^2 - 2 x.y`` (see ``pairwise_distances``).
        """
        squared = self.distance == "euclidean"
        base: Distance = "sqeuclidean" if squared else self.distance
        matrix = anchor_distances(embeddings, held, base)  # (B, N), differentiable
        with torch.no_grad():
            dist = matrix.sqrt() if squared and not order_only else matrix.detach()  # (B, N)
        triplets = _triplets_of(self._mine(dist, labels), anchors)
        return triplet_loss_from_indices(
            matrix, triplets, self.margin, soft_margin=self.soft_margin, squared=squared
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of one batch: embeddings (B, D), labels (B,) -> 0-d tensor."""
        return self.forward_with_stats(embeddings, labels)[0]

    def extra_repr(self) -> str:
        mining = _mining_name(self.mining)
        return (
            f"margin={self.margin}, mining={mining!r}, distance={self.distance!r}, "
            f"soft_margin={self.soft_margin}"
        )  # the memory, a submodule, prints itself


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 0.2,
    distance: Distance = "euclidean",
    soft_margin: bool = False,
) -> Tensor:
    """Offline triplet loss on explicit triplets (rows of three tensors).

    Mean over rows of ``relu(d(a,p) - d(a,n) + margin)`` (or ``softplus(d(a,p) - d(a,n))``);
    ``torch.nn.TripletMarginLoss`` up to its ``eps=1e-6`` inside the norm.

    Args:
        anchor, positive, negative: (N, D) each.
        margin: >= 0.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        soft_margin: softplus form.

    Returns:
        0-d loss; 0 for N = 0.
    """
    check_margin(margin)
    check_embeddings(anchor, finite=False)
    d_ap = paired_distances(anchor, positive, distance)  # (N,)
    d_an = paired_distances(anchor, negative, distance)  # (N,)
    return triplet_hinge(d_ap, d_an, margin, soft_margin=soft_margin)[0]
