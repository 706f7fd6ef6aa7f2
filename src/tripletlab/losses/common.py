"""What every loss shares: :class:`LossStats`, the diagnostics each loss returns with its
value, and the helpers the triplet and contrastive losses are built from: gathers with a
deterministic backward, the anchor masks of distributed training (see :mod:`tripletlab.losses`)
and a division that gives 0 where there is nothing to average.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from tripletlab.miners import Pairs, Triplets


class LossStats(NamedTuple):
    """Diagnostics of one loss evaluation, each a 0-d tensor on the embeddings' device.

    Attributes:
        num_tuples: int64, the triplets (or pairs) the miner selected; for batch-all, every
            valid triplet.
        fraction_active: float, the share of those with a loss > 0 (for a soft margin:
            with ``d(a,p) >= d(a,n)``); 0 when there are none.
        pos_distance: float, mean anchor-positive distance over the selected tuples (0 if none).
        neg_distance: float, mean anchor-negative distance over the selected tuples (0 if none).
    """

    num_tuples: Tensor
    fraction_active: Tensor
    pos_distance: Tensor
    neg_distance: Tensor


def _rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0, with a deterministic backward.

    Advanced indexing backpropagates through ``index_put_(accumulate=True)``, which on a
    multi-threaded CPU adds colliding rows in a run-dependent order; ``index_select``'s
    backward (``index_add_``) does not, so runs and resumed runs are bit-identical.
    """
    return x.index_select(0, index)


def _entries(dist: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``dist[rows, cols]`` of a (B, B) matrix, with a deterministic backward (see ``_rows``)."""
    return _rows(dist.reshape(-1), rows * dist.shape[1] + cols)


def _triplets_of(triplets: Triplets, anchors: Tensor | None) -> Triplets:
    """The triplets ``(a, p, n)`` whose anchor is marked in ``anchors`` (B,); all when None."""
    if anchors is None:
        return triplets
    a, p, n = triplets
    keep = anchors[a]  # (T,)
    return a[keep], p[keep], n[keep]


def _pairs_of(pairs: Pairs, anchors: Tensor | None) -> Pairs:
    """The pairs of ``(a1, p, a2, n)`` whose first index is marked in ``anchors`` (B,)."""
    if anchors is None:
        return pairs
    a1, p, a2, n = pairs
    keep_pos, keep_neg = anchors[a1], anchors[a2]  # (P,), (N,)
    return a1[keep_pos], p[keep_pos], a2[keep_neg], n[keep_neg]


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den == 0`` (no sync, no NaN)."""
    return num / den.clamp_min(1)


def _mining_name(mining: object) -> str:
    """How a module's ``extra_repr`` names its mining: the mode string, else the callable's name."""
    return mining if isinstance(mining, str) else getattr(mining, "__name__", repr(mining))
