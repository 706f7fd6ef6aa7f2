"""Triplet-margin and contrastive losses, online (mined in the batch) and offline.

Triplet loss (Weinberger & Saul 2009; Schroff et al., "FaceNet", 2015) with the online
mining of Hermans et al. 2017; contrastive loss (Hadsell, Chopra, LeCun 2006).

Every loss here is defined on every input: a batch without a valid triplet or pair, a
single class, B < 2 and all-identical embeddings give a loss of 0 with finite gradients.

Statistics for logging come from the same computation as the loss, as 0-d tensors on the
embeddings' device (reading them is the caller's choice of when to sync): call
``forward_with_stats`` for ``(loss, LossStats)``; ``forward`` returns the loss alone.

``forward_with_stats`` also takes ``anchors``, a (B,) bool mask: only the triplets (pairs)
whose anchor (first index) is marked count, the others still serve as positives and
negatives. Distributed training's "local anchors, global references" mode uses it
(:mod:`tripletlab.distributed`); the union of disjoint masks covers every tuple once.

One module per family, every public name re-exported here
(``from tripletlab.losses import TripletMarginLoss``):

- :mod:`~tripletlab.losses.triplet`: the triplet losses: :func:`batch_all_triplet_loss`
  (and its counts, :func:`batch_all_counts`), :func:`triplet_hinge` of given distances and
  of mined indices (:func:`triplet_loss_from_indices`, :func:`triplet_loss_from_embeddings`),
  the :class:`TripletMarginLoss` module with its ``mining`` choices
  (:data:`TRIPLET_MININGS`), and the offline :func:`triplet_margin_loss`.
- :mod:`~tripletlab.losses.contrastive`: the contrastive losses:
  :func:`contrastive_terms_mean` of given distances, of mined pairs
  (:func:`contrastive_loss_from_pairs`, :func:`contrastive_loss_from_embeddings`) and of
  every pair (:func:`contrastive_loss_all_pairs`), the :class:`ContrastiveLoss` module with
  its ``mining`` choices (:data:`PAIR_MININGS`), and the offline :func:`contrastive_loss`.
- :mod:`~tripletlab.losses.memory`: the cross-batch memory (Wang et al. 2020) both modules
  take as ``memory_size``: :class:`EmbeddingMemory` and :func:`candidate_distances`.
- :mod:`~tripletlab.losses.common`: :class:`LossStats` and the helpers both families share
  (deterministic gathers, the ``anchors`` filters, a division that is 0 over nothing).
"""

from tripletlab.losses.common import LossStats
from tripletlab.losses.contrastive import (
    PAIR_MININGS,
    ContrastiveLoss,
    PairMining,
    contrastive_loss,
    contrastive_loss_all_pairs,
    contrastive_loss_from_embeddings,
    contrastive_loss_from_pairs,
    contrastive_terms_mean,
)
from tripletlab.losses.memory import EmbeddingMemory, candidate_distances
from tripletlab.losses.triplet import (
    TRIPLET_MININGS,
    TripletMarginLoss,
    TripletMining,
    batch_all_counts,
    batch_all_triplet_loss,
    triplet_hinge,
    triplet_loss_from_embeddings,
    triplet_loss_from_indices,
    triplet_margin_loss,
)

__all__ = [
    "PAIR_MININGS",
    "TRIPLET_MININGS",
    "ContrastiveLoss",
    "EmbeddingMemory",
    "LossStats",
    "PairMining",
    "TripletMarginLoss",
    "TripletMining",
    "batch_all_counts",
    "batch_all_triplet_loss",
    "candidate_distances",
    "contrastive_loss",
    "contrastive_loss_all_pairs",
    "contrastive_loss_from_embeddings",
    "contrastive_loss_from_pairs",
    "contrastive_terms_mean",
    "triplet_hinge",
    "triplet_loss_from_embeddings",
    "triplet_loss_from_indices",
    "triplet_margin_loss",
]
