"""Retrieval and verification metrics, computed in chunks: never an N x N matrix in memory.

The retrieval metrics follow Musgrave, Belongie, Lim, "A Metric Learning Reality Check",
ECCV 2020: precision@1, R-precision and MAP@R, each query against every other item of the
same set (the query itself excluded). The pair accuracy is the torchvision similarity
reference's: all pairs ``i < j`` called "same" when their distance is at most a threshold,
the best threshold picked on the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from tripletlab.distances import Distance, pairwise_distances

#: Queries per chunk: a chunk holds a (chunk, N) distance block.
CHUNK = 1024


def _chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def nearest_neighbors(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    *,
    distance: Distance = "euclidean",
    exclude_self: bool = False,
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery items of every query, in chunks of queries.

    Args:
        queries: (Q, D) embeddings.
        gallery: (N, D) embeddings.
        k: neighbours per query, ``k <= N`` (``N - 1`` with ``exclude_self``).
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        exclude_self: queries are the gallery (same rows, same order); item i is not its
            own neighbour.
        chunk: queries per chunk; memory is O(chunk * N + Q * k).

    Returns:
        ``(distances, indices)``, both (Q, k), nearest first.
    """
    limit = gallery.shape[0] - (1 if exclude_self else 0)
    if k > limit:
        raise ValueError(f"k={k} is larger than the gallery ({limit} items to choose from)")
    dists, idx = [], []
    for s in _chunks(queries.shape[0], chunk):
        d = pairwise_distances(queries[s], gallery, distance)  # (C, N)
        if exclude_self:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + s.start] = float("inf")
        top = d.topk(k, dim=1, largest=False)  # (C, k)
        dists.append(top.values)
        idx.append(top.indices)
    if not dists:
        empty = queries.new_zeros(0, k)
        return empty, empty.long()
    return torch.cat(dists), torch.cat(idx)


@dataclass(frozen=True)
class RetrievalScores:
    """Musgrave et al.'s retrieval metrics of a set of embeddings, averaged over queries.

    Attributes:
        precision_at_1: fraction of queries whose nearest other item shares their class.
        r_precision: mean over queries of (relevant items among the first R) / R, with R the
            number of other items of the query's class.
        map_at_r: mean over queries of ``(1/R) sum_{i<=R} P(i) rel(i)``, with ``P(i)`` the
            precision of the first i results and ``rel(i)`` whether result i is relevant.
        num_queries: queries scored.
        num_excluded: queries left out because their class has no other member.
    """

    precision_at_1: float
    r_precision: float
    map_at_r: float
    num_queries: int
    num_excluded: int


def retrieval_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    distance: Distance = "euclidean",
    chunk: int = CHUNK,
) -> RetrievalScores:
    """Precision@1, R-precision and MAP@R of every item as a query against all the others.

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: queries per chunk; memory is O(chunk * N).

    Returns:
        :class:`RetrievalScores`. Self-matches are excluded; queries whose class has no other
        member are excluded and counted in ``num_excluded``; with no scorable query at all,
        every score is 0.

    Corner cases:
        Ties in distance are broken by ``topk``'s order (effectively arbitrary).

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.2], [5.0]])
        >>> s = retrieval_scores(x, torch.tensor([0, 0, 1, 0, 2]))
        >>> round(s.precision_at_1, 4), s.r_precision, round(s.map_at_r, 4), s.num_excluded
        (0.6667, 0.5, 0.4167, 2)
    """
    n = embeddings.shape[0]
    counts = torch.bincount(labels - labels.min()) if n else labels.new_zeros(1)
    r_all = counts[labels - labels.min()] - 1 if n else labels  # (N,) relevant per query
    r_max = int(r_all.max()) if n else 0
    sums = torch.zeros(3, dtype=torch.float64)
    scored = int((r_all > 0).sum()) if n else 0
    if r_max > 0:
        for s in _chunks(n, chunk):
            d = pairwise_distances(embeddings[s], embeddings, distance)  # (C, N)
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + s.start] = float("inf")
            idx = d.topk(r_max, dim=1, largest=False).indices  # (C, R_max)
            r = r_all[s][:, None]  # (C, 1)
            ranks = torch.arange(1, r_max + 1, device=d.device)[None, :]  # (1, R_max)
            rel = (labels[idx] == labels[s][:, None]) & (ranks <= r)  # (C, R_max)
            keep = r[:, 0] > 0
            rf = r[:, 0].clamp_min(1).double()
            hits = rel.cumsum(1).double()  # (C, R_max)
            p1 = rel[:, 0].double()
            rp = hits[:, -1] / rf
            mapr = (hits / ranks * rel).sum(1) / rf
            sums += torch.stack([v[keep].sum() for v in (p1, rp, mapr)]).cpu()
    means = (sums / max(scored, 1)).tolist()
    return RetrievalScores(means[0], means[1], means[2], scored, n - scored)


def knn_accuracy(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    *,
    k: int = 1,
    distance: Distance = "euclidean",
    chunk: int = CHUNK,
) -> float:
    """k-nearest-neighbour classification accuracy of queries against a labelled gallery.

    Each query takes the most frequent label among its ``k`` nearest gallery items (ties go
    to the label of the nearer item); accuracy is the fraction of queries labelled right.
    Queries and gallery are different sets (no self-match to exclude). 0 for no query.

    Example:
        >>> g, gl = torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])
        >>> knn_accuracy(torch.tensor([[0.2], [0.9], [0.4]]), torch.tensor([0, 1, 1]), g, gl)
        0.6666666666666666
    """
    if queries.shape[0] == 0:
        return 0.0
    _, idx = nearest_neighbors(queries, gallery, k, distance=distance, chunk=chunk)
    votes = gallery_labels[idx]  # (Q, k)
    if k == 1:
        predicted = votes[:, 0]
    else:
        # Most frequent label; among equals, the one whose first vote comes earliest.
        same = votes[:, :, None] == votes[:, None, :]  # (Q, k, k)
        count = same.sum(2)  # (Q, k): how often each vote's label occurs
        earliest = same.int().argmax(2)  # (Q, k): first position of each vote's label
        score = count * (k + 1) - earliest  # more votes first, then earlier
        predicted = votes.gather(1, score.argmax(1, keepdim=True))[:, 0]
    return float((predicted == query_labels).double().mean())


@dataclass(frozen=True)
class PairAccuracy:
    """torchvision's pair accuracy: the best threshold's accuracy over all pairs ``i < j``.

    Attributes:
        accuracy: fraction of pairs classified right at ``threshold``.
        threshold: the distance threshold (pairs with distance <= threshold are "same").
        floor: the accuracy of answering "different" for every pair.
        num_pairs: N (N - 1) / 2.
    """

    accuracy: float
    threshold: float
    floor: float
    num_pairs: int


def pair_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    *,
    thresholds: Tensor | None = None,
    distance: Distance = "euclidean",
    chunk: int = CHUNK,
) -> PairAccuracy:
    """Best-threshold verification accuracy over all pairs, as the torchvision reference.

    Every pair ``i < j`` is called "same" when ``d(i, j) <= t``; the accuracy is computed for
    each ``t`` in ``thresholds`` (default 0.00, 0.01, ..., 1.50) and the best is reported with
    its threshold (the smallest such ``t`` on ties). Note that the threshold is tuned on the
    pairs it is scored on, and that the "always different" floor is high when there are many
    classes (90% with 10 balanced classes).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        thresholds: (T,) increasing thresholds.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk; memory is O(chunk * N).

    Example:
        >>> r = pair_accuracy(torch.tensor([[0.0], [0.25], [1.0]]), torch.tensor([0, 0, 1]))
        >>> r.accuracy, r.threshold, round(r.floor, 4)
        (1.0, 0.25, 0.6667)
    """
    t = torch.arange(151, dtype=torch.float64) / 100 if thresholds is None else thresholds
    t = t.to(embeddings.device, torch.float64)
    n = embeddings.shape[0]
    hist_same = torch.zeros(t.shape[0] + 1, dtype=torch.long, device=embeddings.device)
    hist_diff = torch.zeros_like(hist_same)
    for s in _chunks(n, chunk):
        d = pairwise_distances(embeddings[s], embeddings, distance).double()  # (C, N)
        rows = torch.arange(s.start, s.stop, device=d.device)[:, None]  # (C, 1)
        upper = torch.arange(n, device=d.device)[None, :] > rows  # (C, N): j > i
        same = labels[s][:, None] == labels[None, :]  # (C, N)
        # First threshold >= d: the pair is "same" for that threshold and every later one.
        bucket = torch.searchsorted(t, d.contiguous())  # (C, N) in [0, T]
        hist_same += torch.bincount(bucket[upper & same], minlength=t.shape[0] + 1)
        hist_diff += torch.bincount(bucket[upper & ~same], minlength=t.shape[0] + 1)
    n_same, n_diff = int(hist_same.sum()), int(hist_diff.sum())
    total = max(n_same + n_diff, 1)
    same_le = hist_same.cumsum(0)[:-1]  # (T,) same pairs with d <= t
    diff_gt = n_diff - hist_diff.cumsum(0)[:-1]  # (T,) different pairs with d > t
    acc = (same_le + diff_gt).double() / total  # (T,)
    best = int(acc.argmax())
    return PairAccuracy(float(acc[best]), float(t[best]), n_diff / total, n_same + n_diff)
