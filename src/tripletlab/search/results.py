"""What :meth:`~tripletlab.search.EmbeddingIndex.search` and
:meth:`~tripletlab.search.EmbeddingIndex.match` return, and the (distance, row) order every
backend's neighbours are put in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SearchResult:
    """The k nearest items of each query, nearest first.

    Attributes:
        distances: (Q, k) float32.
        indices: (Q, k) int64 rows of the index; -1 where an approximate backend found fewer
            than k items (distance ``inf``, label -1, id ``""``).
        labels: (Q, k) int64 labels of those items (-1: unlabelled or missing).
        ids: Q tuples of k item ids.
    """

    distances: Tensor
    indices: Tensor
    labels: Tensor
    ids: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class MatchResult:
    """Each query's nearest item, accepted when within ``threshold``.

    Attributes:
        labels: (Q,) int64, the nearest item's label when ``distance <= threshold``, else -1
            ("unknown").
        distances: (Q,) float32 distance to the nearest item.
        indices: (Q,) int64 row of the nearest item (also when rejected).
        threshold: the distance threshold applied.
    """

    labels: Tensor
    distances: Tensor
    indices: Tensor
    threshold: float


def _sort_ties(d: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ordered by (distance, index): the same order from every backend; -1 last."""
    key = torch.where(i < 0, torch.iinfo(torch.int64).max, i)
    by_index = torch.sort(key, dim=1, stable=True).indices  # (Q, k)
    d, i = d.gather(1, by_index), i.gather(1, by_index)
    by_distance = torch.sort(d, dim=1, stable=True).indices  # (Q, k)
    return d.gather(1, by_distance), i.gather(1, by_distance)
