"""Retrieval metrics, from one chunked neighbour search (torch, or faiss for the top-k ones).

Precision@1, R-precision and MAP@R of Musgrave, Belongie, Lim, "A Metric Learning Reality
Check", ECCV 2020; Recall@K as metric learning reports it, a hit rate (Song et al., "Deep
Metric Learning via Lifted Structured Feature Embedding", CVPR 2016); mAP over the whole
ranking and the mean reciprocal rank. Overall and per class, for a set against itself or for
queries against a separate gallery.

Conventions of every retrieval metric:

- Same-set mode (no gallery given): each item is a query against all the *other* items; its
  self-match is excluded. With a separate gallery nothing is excluded.
- The relevant items of a query are the gallery items of its class, R of them. Queries with
  R = 0 are excluded from every mean and counted in ``num_excluded``; with no scorable query
  at all, every score is NaN (it cannot be computed; callers report it as missing).
- Ties are resolved against the query: an irrelevant item at exactly the same distance as a
  relevant one is ranked before it. The rank of the i-th nearest relevant item is therefore
  ``i + #{irrelevant items at distance <= its distance}``, every score is the worst over the
  orders of tied items, and a collapsed embedding (all distances equal) scores its worst
  instead of whatever the index order happens to give.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tripletlab.distances import Distance, check_distance
from tripletlab.faiss_adapter import flat_index
from tripletlab.metrics.blocks import _block, _chunks, _prepare, _Prepared, _rows_per_chunk
from tripletlab.metrics.checks import _check_gallery, _check_k, _check_labeled
from tripletlab.metrics.cutoffs import cutoff_values, sample_columns
from tripletlab.metrics.neighbors import Backend, _check_backend, _faiss_search


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


@dataclass(frozen=True)
class RetrievalMetrics:
    """Retrieval metrics, means over the scored queries (see the module's conventions).

    Attributes:
        precision_at_1: fraction of queries whose nearest item is relevant.
        r_precision: mean of (relevant items among the first R) / R.
        map_at_r: mean of ``(1/R) sum_{i<=R} P(i) rel(i)`` (MAP@R).
        recall_at_k: K -> fraction of queries with a relevant item among their K nearest
            (the hit rate metric-learning papers call Recall@K, not the IR recall).
        mean_average_precision: mean of ``(1/R) sum_{i<=N} P(i) rel(i)`` over the whole
            ranking (mAP); ``None`` unless computed with ``full_ranking=True``.
        mean_reciprocal_rank: mean of 1 / (rank of the nearest relevant item); ``None``
            unless computed with ``full_ranking=True``.
        num_queries: queries scored.
        num_excluded: queries left out because no gallery item (other than themselves) has
            their class.
        per_class: query class -> the same metrics over that class's queries (whose own
            ``per_class`` is empty). Means of these weigh every class alike; the attributes
            above weigh every query alike.
    """

    precision_at_1: float
    r_precision: float
    map_at_r: float
    recall_at_k: dict[int, float]
    mean_average_precision: float | None
    mean_reciprocal_rank: float | None
    num_queries: int
    num_excluded: int
    per_class: dict[int, RetrievalMetrics] = field(default_factory=dict)


def _list_ranks(vals: Tensor, rel: Tensor) -> tuple[Tensor, Tensor]:
    """Order among the relevant items and worst-case rank of each entry of a sorted list.

    Args:
        vals: (C, L) distances, ascending along each row.
        rel: (C, L) whether each listed item is relevant.

    Returns:
        ``(order, rank)``, (C, L) int64, meaningful where ``rel``: ``order`` counts the
        relevant items up to this one, ``rank = order + #{irrelevant listed items at distance
        <= this one's}``.
    """
    order = rel.cumsum(1)  # (C, L)
    irrelevant = (~rel).cumsum(1)  # (C, L)
    upto = torch.searchsorted(vals.contiguous(), vals.contiguous(), right=True)  # (C, L)
    return order, order + irrelevant.gather(1, upto - 1)


def _top_ranks(
    qc: Tensor,
    qc_ids: Tensor,
    gallery: Callable[[], _Prepared],
    g_ids: Tensor,
    depth: int,
    own: Tensor | None,
    distance: Distance,
    index: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    """Worst-case ranks of the relevant items among the ``depth`` nearest of each query (faiss).

    A relevant item tied with the last listed distance may have more irrelevant items at the
    same distance beyond the list; those rows are searched again with torch (so that every
    distance of the row comes from one place) and their ties counted over the whole gallery.
    The callers' cut-offs (R, K) are below ``depth``, so items beyond the list do not matter.
    """
    vals, idx = _faiss_search(index, qc, depth, distance, own)  # (C, depth)
    rel = g_ids[idx] == qc_ids[:, None]  # (C, depth)
    edge_rows = (rel & (vals == vals[:, -1:])).any(1).nonzero()[:, 0]
    extra = None
    if depth < len(g_ids) - (own is not None) and edge_rows.numel():
        own_rows = None if own is None else own[edge_rows]
        d_rows = _block(qc[edge_rows], gallery(), own_rows)  # (E, N)
        top = d_rows.topk(depth, dim=1, largest=False)
        vals = vals.to(d_rows.dtype)
        vals[edge_rows], rel[edge_rows] = top.values, g_ids[top.indices] == qc_ids[edge_rows, None]
        last = vals[edge_rows, -1:]  # (E, 1)
        beyond = (d_rows <= last) & (g_ids[None, :] != qc_ids[edge_rows, None])  # (E, N)
        extra = beyond.sum(1) - (~rel[edge_rows]).sum(1)  # (E,) irrelevant ties past the list
    order, rank = _list_ranks(vals, rel)
    if extra is not None:
        at_edge = rel[edge_rows] & (vals[edge_rows] == vals[edge_rows, -1:])  # (E, depth)
        rank[edge_rows] += extra[:, None] * at_edge
    return order, rank, rel


def _sort_rows(x: Tensor) -> Tensor:
    """Values of each row ascending (numpy's vectorised sort is ~3x torch's on CPU)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return x.sort(dim=1).values


def _full_ranks(d: Tensor, rel: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Worst-case ranks of every relevant item over the whole gallery.

    Args:
        d: (C, N) distances, the query's own entry (if any) already ``inf``.
        rel: (C, N) relevance, the query's own entry (if any) ``False``.
        r: (C,) relevant items per query, at least 1 somewhere.

    Returns:
        ``(order, rank, valid)``, (C, R_max): the i-th nearest relevant item has order i and
        rank ``i + #{irrelevant items at distance <= its distance}``; ``valid = i <= R``.
    """
    inf = d.new_tensor(float("inf"))
    r_max = int(r.max())
    near = torch.where(rel, d, inf).topk(r_max, dim=1, largest=False).values  # (C, R_max)
    others = _sort_rows(torch.where(rel, inf, d))  # (C, N) irrelevant distances, inf last
    below = torch.searchsorted(others, near.contiguous(), right=True)  # (C, R_max)
    order = torch.arange(1, r_max + 1, device=d.device).expand_as(below)  # (C, R_max)
    return order, order + below, order <= r[:, None]


def _query_values(
    order: Tensor, rank: Tensor, valid: Tensor, r: Tensor, ks: Sequence[int], full: bool
) -> Tensor:
    """(C, 3 + len(ks) [+ 2]) per-query P@1, R-precision, MAP@R, Recall@K [, AP, RR]."""
    rf = r.clamp_min(1).double()  # (C,)
    never = torch.iinfo(torch.long).max
    first = torch.where(valid, rank, never).amin(1)  # (C,) rank of the nearest relevant item
    within = valid & (rank <= r[:, None])  # (C, L): relevant and among the first R
    precision = order.double() / rank.double()  # (C, L): P(rank) at each relevant item
    cols = [
        (first == 1).double(),
        within.sum(1).double() / rf,
        (precision * within).sum(1) / rf,
        *[(first <= k).double() for k in ks],
    ]
    if full:
        cols += [
            (precision * valid).sum(1) / rf,
            torch.where(first < never, 1.0 / first.double(), 0.0),
        ]
    return torch.stack(cols, 1)


def _summary(
    sums: list[float], scored: int, total: int, ks: Sequence[int], full: bool
) -> RetrievalMetrics:
    m = [v / scored if scored else math.nan for v in sums]  # nothing scored: not computable
    n = 3 + len(ks)
    return RetrievalMetrics(
        precision_at_1=m[0],
        r_precision=m[1],
        map_at_r=m[2],
        recall_at_k=dict(zip(ks, m[3:n], strict=True)),
        mean_average_precision=m[n] if full else None,
        mean_reciprocal_rank=m[n + 1] if full else None,
        num_queries=scored,
        num_excluded=total - scored,
    )


def retrieval_metrics(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor | None = None,
    gallery_labels: Tensor | None = None,
    *,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    full_ranking: bool = False,
    distance: Distance = "euclidean",
    backend: Backend = "torch",
    chunk: int | None = None,
) -> RetrievalMetrics:
    """Precision@1, R-precision, MAP@R, Recall@K [, mAP, MRR], overall and per class.

    For a query with R relevant items ranked (worst case on ties, see the module) with
    relevance ``rel(i)`` at rank i and ``P(i) = (1/i) sum_{j<=i} rel(j)``:

    - precision@1 = rel(1); Recall@K = 1 if ``rel(i)`` for some ``i <= K`` (hit rate);
    - R-precision = ``(1/R) sum_{i<=R} rel(i)``; MAP@R = ``(1/R) sum_{i<=R} P(i) rel(i)``;
    - AP = ``(1/R) sum_{i} P(i) rel(i)`` over the whole ranking (mAP is its mean);
      RR = 1 / (rank of the nearest relevant item) (MRR is its mean).

    Each is averaged over the scored queries. Without ``gallery`` every query is scored
    against all the other queries (self-match excluded); with it, against the gallery (no
    exclusion). Queries with R = 0 are excluded and counted.

    One chunked pass computes everything. With the torch backend a query's P@1,
    R-precision, MAP@R and Recall@K come from the items at or below a cut-off at least its
    ``L = max(R, max(recall_ks))``-th nearest distance (placed from a fixed sample of the
    gallery's columns; :mod:`tripletlab.metrics.cutoffs`): about L items per query are listed
    and sorted, never a top-k of the whole row, and the relevant items past the cut-off rank
    past R. With faiss they come from a top-k search of the ``k = max(R_max,
    max(recall_ks)) + 1`` nearest items (R_max: the largest class of the gallery, so MAP@R
    on 10 classes of 7,000 asks for 7,000 neighbours per query, which is slow). mAP and MRR
    need every distance and sort each query's irrelevant distances (about twice the work).

    Args:
        queries: (Q, D) embeddings.
        query_labels: (Q,) integer classes.
        gallery: (N, D) embeddings, or ``None`` to score the queries against each other.
        gallery_labels: (N,) integer classes, given exactly when ``gallery`` is.
        recall_ks: the K of Recall@K, each ``<= N`` (``N - 1`` without a gallery).
        full_ranking: also compute mAP and MRR (torch backend only).
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        backend: ``"torch"`` or ``"faiss"`` for the neighbour search (see
            :func:`nearest_neighbors`); the scores agree up to faiss's float32 distances.
        chunk: queries per chunk (default ``BLOCK // N``). Memory: O(chunk * N) for the
            distance block (torch; plus a (chunk, N) bool mask on devices other than the
            CPU), O(L) per query for its list (O(N) where ties make it that long; faiss:
            O(chunk * k) for the neighbours) and O(Q) for the per-query scores, never Q x k
            or N x N; faiss also holds an (N, D) float32 copy.

    Returns:
        :class:`RetrievalMetrics` with a ``per_class`` breakdown.

    Example:
        Query 0.0 (class 0) ranks 0.1 (class 0), 1.0 (class 1), 1.2 (class 0): P@1 = 1,
        R = 2, R-precision 1/2, MAP@R = (1/2)(1/1), AP = (1/2)(1/1 + 2/3); 1.2 ranks 1.0
        (class 1) first: AP = (1/2)(1/2 + 2/3); 1.0 and 5.0 are alone in their classes.

        >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.2], [5.0]])
        >>> m = retrieval_metrics(x, torch.tensor([0, 0, 1, 0, 2]), recall_ks=(1, 2),
        ...                       full_ranking=True)
        >>> round(m.precision_at_1, 4), m.recall_at_k, round(m.mean_average_precision, 4)
        (0.6667, {1: 0.6666666666666666, 2: 1.0}, 0.75)
        >>> m.num_excluded, m.per_class[0].r_precision, m.per_class[2].num_excluded
        (2, 0.5, 1)
    """
    if (gallery is None) != (gallery_labels is None):
        raise ValueError(
            "pass gallery and gallery_labels together, or neither to score the queries "
            "against each other"
        )
    _check_labeled(queries, query_labels, "queries", "query_labels")
    same_set = gallery is None or gallery_labels is None
    if gallery is None or gallery_labels is None:
        gallery, gallery_labels = queries, query_labels
    else:
        _check_labeled(gallery, gallery_labels, "gallery", "gallery_labels")
        _check_gallery(queries, gallery)
    check_distance(distance)
    _check_backend(backend)
    if full_ranking and backend != "torch":
        raise ValueError(
            "full_ranking (mAP, MRR) needs every distance of a query and faiss returns only "
            "the nearest k: use backend='torch' or full_ranking=False"
        )
    limit = gallery.shape[0] - (1 if same_set else 0)
    ks = list(dict.fromkeys(recall_ks))
    for k in ks:
        _check_k(k, limit, "recall_ks entry")
    queries, gallery = queries.detach(), gallery.detach()
    nq, device = queries.shape[0], queries.device
    query_labels, gallery_labels = query_labels.to(device), gallery_labels.to(device)

    # Class ids shared by queries and gallery; R = gallery items of the query's class.
    _, ids = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)
    q_ids, g_ids = ids[:nq], ids[nq:]
    counts = torch.bincount(g_ids, minlength=int(ids.max()) + 1 if ids.numel() else 1)
    r = counts[q_ids] - (1 if same_set else 0)  # (Q,)

    values = torch.zeros(nq, 3 + len(ks) + 2 * full_ranking, dtype=torch.float64, device=device)
    depth = min(max([int(r.max()) if nq else 0, *ks]) + 1, limit)
    index = flat_index(gallery, distance) if backend == "faiss" and nq and depth else None
    cols = sample_columns(gallery.shape[0], device)
    # With faiss the torch copy is only needed for rows with ties at the list's edge.
    prepared = functools.cache(functools.partial(_prepare, gallery, distance))
    for s in _chunks(nq, _rows_per_chunk(gallery.shape[0], chunk)):
        rc = r[s]
        if not bool((rc > 0).any()):
            continue  # nothing to score in this chunk
        own = torch.arange(s.start, s.stop, device=device) if same_set else None
        if full_ranking:
            d = _block(queries[s], prepared(), own)  # (C, N)
            rel = g_ids[None, :] == q_ids[s][:, None]  # (C, N)
            if own is not None:
                rel[torch.arange(rel.shape[0], device=device), own] = False
            order, rank, valid = _full_ranks(d, rel, rc)  # (C, R_max)
            values[s] = _query_values(order, rank, valid, rc, ks, full_ranking)
        elif index is None:
            d = _block(queries[s], prepared(), own)  # (C, N)
            values[s] = cutoff_values(d, q_ids[s], g_ids, own, rc, ks, cols)
        else:
            order, rank, valid = _top_ranks(
                queries[s], q_ids[s], prepared, g_ids, depth, own, distance, index
            )  # (C, depth)
            values[s] = _query_values(order, rank, valid, rc, ks, full_ranking)

    # Sums per query class; the overall means weigh every scored query alike.
    classes, cls = torch.unique(query_labels, return_inverse=True)
    scored = r > 0
    sums = torch.zeros(len(classes), values.shape[1], dtype=torch.float64, device=device)
    sums.index_add_(0, cls[scored], values[scored])  # (classes, metrics)
    n_scored = torch.bincount(cls[scored], minlength=len(classes)).tolist()
    n_all = torch.bincount(cls, minlength=len(classes)).tolist()
    per_class = {
        int(c): _summary(row, n_scored[i], n_all[i], ks, full_ranking)
        for i, (c, row) in enumerate(zip(classes.tolist(), sums.tolist(), strict=True))
    }
    total = _summary(sums.sum(0).tolist(), sum(n_scored), nq, ks, full_ranking)
    return replace(total, per_class=per_class)


def retrieval_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> RetrievalScores:
    """Precision@1, R-precision and MAP@R of every item as a query against all the others.

    The three top-k metrics of :func:`retrieval_metrics` (same-set mode), kept for callers
    that want only Musgrave et al.'s triple.

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: queries per chunk (default ``BLOCK // N``); memory is O(chunk * N).

    Returns:
        :class:`RetrievalScores`. Self-matches are excluded; queries whose class has no other
        member are excluded and counted in ``num_excluded``; with no scorable query at all,
        every score is NaN.

    Corner cases:
        Ties are resolved against the query (see the module): all-equal embeddings score 0.

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.2], [5.0]])
        >>> s = retrieval_scores(x, torch.tensor([0, 0, 1, 0, 2]))
        >>> round(s.precision_at_1, 4), s.r_precision, round(s.map_at_r, 4), s.num_excluded
        (0.6667, 0.5, 0.4167, 2)
    """
    m = retrieval_metrics(embeddings, labels, recall_ks=(), distance=distance, chunk=chunk)
    return RetrievalScores(
        m.precision_at_1, m.r_precision, m.map_at_r, m.num_queries, m.num_excluded
    )
