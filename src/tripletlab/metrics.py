"""Retrieval, verification and clustering metrics, computed in chunks: never an N x N matrix.

- Retrieval, from one chunked neighbour search (torch, or faiss for the top-k metrics):
  precision@1, R-precision and MAP@R of Musgrave, Belongie, Lim, "A Metric Learning Reality
  Check", ECCV 2020; Recall@K as metric learning reports it, a hit rate (Song et al., "Deep
  Metric Learning via Lifted Structured Feature Embedding", CVPR 2016); mAP over the whole
  ranking and the mean reciprocal rank. Overall and per class, for a set against itself or
  for queries against a separate gallery.
- Verification over all pairs ``i < j``: the torchvision similarity reference's best-threshold
  pair accuracy, the same with the threshold fitted on held-out pairs, and ROC AUC and TAR at
  fixed FAR from per-chunk histograms of the pair distances.
- NMI and AMI of k-means clusters; the fixed-triplet ordering accuracy of SpikeKing's
  ``triplet-loss-mnist``.

Conventions of every retrieval metric:

- Same-set mode (no gallery given): each item is a query against all the *other* items; its
  self-match is excluded. With a separate gallery nothing is excluded.
- The relevant items of a query are the gallery items of its class, R of them. Queries with
  R = 0 are excluded from every mean and counted in ``num_excluded``; with no scorable query
  at all, every score is 0.
- Ties are resolved against the query: an irrelevant item at exactly the same distance as a
  relevant one is ranked before it. The rank of the i-th nearest relevant item is therefore
  ``i + #{irrelevant items at distance <= its distance}``, every score is the worst over the
  orders of tied items, and a collapsed embedding (all distances equal) scores its worst
  instead of whatever the index order happens to give.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.distances import Distance, check_distance

Backend = Literal["torch", "faiss"]
BACKENDS: tuple[str, ...] = get_args(Backend)

#: Elements of one (chunk, N) distance block when ``chunk`` is not given: 2**24 float32 is
#: 64 MiB, so a chunk holds 2**24 // N queries (239 at N = 70,000; 16 at N = 1,000,000).
BLOCK = 2**24


def _chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _rows_per_chunk(n_gallery: int, chunk: int | None) -> int:
    if chunk is None:
        return max(1, BLOCK // max(n_gallery, 1))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of queries, got {chunk!r}")
    return chunk


# ------------------------------------------------------------------------------------ checks


def _check_embeddings(x: Tensor, name: str) -> None:
    if x.dim() != 2 or not x.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a 2-D floating tensor (N, D), got shape {tuple(x.shape)} and "
            f"dtype {x.dtype}; flatten or pool the network output and pass floats"
        )
    # A block's sum is NaN or Inf when one of its values is (or when it overflows; the rows
    # are then counted exactly): no (N, D) temporary, which torch.isfinite(x) would make.
    bad = 0
    for s in _chunks(x.shape[0], 65536):
        if not bool(torch.isfinite(x[s].sum())):
            bad += int((~torch.isfinite(x[s])).any(1).sum())
    if bad:
        raise ValueError(
            f"{name} contain NaN or Inf in {bad} of {x.shape[0]} rows; metrics need finite "
            "embeddings: fix the model (or drop those rows) before evaluating"
        )


def _check_label_tensor(y: Tensor, label_name: str) -> None:
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"{label_name} must be a 1-D integer tensor of class ids, got shape "
            f"{tuple(y.shape)} and dtype {y.dtype}; pass torch.long of shape (N,)"
        )


def _check_labeled(x: Tensor, y: Tensor, name: str, label_name: str) -> None:
    _check_embeddings(x, name)
    _check_label_tensor(y, label_name)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{label_name} has {y.shape[0]} entries but {name} has {x.shape[0]} rows; "
            "pass one label per embedding"
        )


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def _check_gallery(queries: Tensor, gallery: Tensor) -> None:
    if gallery.dim() == 2 and queries.dim() == 2 and gallery.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the gallery has "
            f"{gallery.shape[1]}; embed both with the same model"
        )


def _check_k(k: int, limit: int, what: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    if k > limit:
        raise ValueError(
            f"{what}={k} is larger than the gallery ({limit} items to choose from); "
            f"pass {what} <= {limit}"
        )


# ----------------------------------------------------------------------- neighbour search


class _Prepared(NamedTuple):
    """A gallery ready for many distance blocks, computed once per call (not once per chunk:
    at N = 1,000,000 the squared norms alone cost more than a 16-query block's product)."""

    rows: Tensor  # (N, D) in the compute dtype; unit rows for cosine
    sq: Tensor | None  # (N,) squared norms for the Euclidean forms
    distance: Distance


def _prepare(gallery: Tensor, distance: Distance) -> _Prepared:
    """float64 stays float64, everything else is computed in float32, as pairwise_distances."""
    g = gallery.to(torch.float64 if gallery.dtype == torch.float64 else torch.float32)
    if distance == "cosine":
        return _Prepared(F.normalize(g, dim=1), None, distance)  # an (N, D) copy
    sq = torch.cat([(g[s] * g[s]).sum(1) for s in _chunks(len(g), 65536)]) if len(g) else g[:, 0]
    return _Prepared(g, sq, distance)  # (N,) squares summed a block of rows at a time


def _block(q: Tensor, gallery: _Prepared, own: Tensor | None = None, start: int = 0) -> Tensor:
    """(C, N - start) distances from a chunk of queries to the gallery rows ``start:``.

    The formulas of :func:`tripletlab.distances.pairwise_distances` (``|q|^2 + |g|^2 - 2 q.g``
    clamped at 0, its square root; ``1 - cos`` clamped to [0, 2]), built in place in one
    (C, N - start) tensor. ``own[c]``, query c's own gallery row, is set to ``inf``.
    """
    g = gallery.rows[start:]
    qs = q.to(g.dtype)
    if gallery.sq is None:
        d = F.normalize(qs, dim=1) @ g.T  # (C, M) cosines
        d.neg_().add_(1.0).clamp_(0.0, 2.0)
    else:
        d = torch.addmm(gallery.sq[None, start:], qs, g.T, alpha=-2.0)  # (C, M)
        d.add_((qs * qs).sum(1)[:, None]).clamp_min_(0.0)
        if gallery.distance == "euclidean":
            d.sqrt_()
    if own is not None:
        d[torch.arange(d.shape[0], device=d.device), own - start] = float("inf")
    return d


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "backend='faiss' needs faiss: pip install faiss-cpu (or use backend='torch')"
        ) from None
    return faiss


def _faiss_array(x: Tensor, distance: Distance) -> np.ndarray:
    x = x.detach().to("cpu", torch.float32)
    if distance == "cosine":
        x = F.normalize(x, dim=1)
    return np.ascontiguousarray(x.numpy())


def _faiss_index(gallery: Tensor, distance: Distance) -> Any:
    """An exact faiss index: L2 for the Euclidean forms, inner product of unit rows for cosine."""
    faiss = _import_faiss()
    dim = gallery.shape[1]
    index = faiss.IndexFlatIP(dim) if distance == "cosine" else faiss.IndexFlatL2(dim)
    index.add(_faiss_array(gallery, distance))
    return index


def _faiss_search(
    index: Any, q: Tensor, k: int, distance: Distance, own: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(C, k) distances and indices from faiss, nearest first, ``own`` rows left out."""
    extra = 0 if own is None else 1
    vals_np, idx_np = index.search(_faiss_array(q, distance), k + extra)
    vals, idx = torch.from_numpy(vals_np), torch.from_numpy(idx_np).long()  # (C, k + extra)
    if own is not None:
        # Drop the query itself; where duplicates at distance 0 pushed it out, drop the last.
        drop = idx == own.cpu()[:, None]  # (C, k + 1)
        drop[:, -1] |= ~drop.any(1)
        vals, idx = vals[~drop].view(-1, k), idx[~drop].view(-1, k)
    if distance == "cosine":
        vals = (1.0 - vals).clamp(0.0, 2.0)
    else:
        vals = vals.clamp_min(0.0)  # faiss's L2 is squared
        if distance == "euclidean":
            vals = vals.sqrt()
    return vals.to(q.device), idx.to(q.device)


def nearest_neighbors(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    *,
    distance: Distance = "euclidean",
    exclude_self: bool = False,
    chunk: int | None = None,
    backend: Backend = "torch",
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery items of every query, in chunks of queries.

    Args:
        queries: (Q, D) embeddings.
        gallery: (N, D) embeddings.
        k: neighbours per query, ``k <= N`` (``N - 1`` with ``exclude_self``).
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        exclude_self: queries are the gallery (same rows, same order); item i is not its
            own neighbour.
        chunk: queries per chunk (default: ``BLOCK // N``); memory is O(chunk * N + Q * k).
        backend: ``"torch"`` (exact, any device) or ``"faiss"`` (exact ``IndexFlatL2`` /
            ``IndexFlatIP`` on unit rows for cosine; computes in float32 on the CPU; needs
            ``pip install faiss-cpu``).

    Returns:
        ``(distances, indices)``, both (Q, k), nearest first. Ties are in the search's order.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> nearest_neighbors(x, x, 1, exclude_self=True)[1].tolist()
        [[1], [0], [1]]
    """
    _check_embeddings(queries, "queries")
    _check_embeddings(gallery, "gallery")
    _check_gallery(queries, gallery)
    check_distance(distance)
    _check_backend(backend)
    if exclude_self and queries.shape[0] != gallery.shape[0]:
        raise ValueError(
            f"exclude_self needs the queries to be the gallery, got {queries.shape[0]} "
            f"queries and {gallery.shape[0]} gallery items; pass exclude_self=False"
        )
    _check_k(k, gallery.shape[0] - (1 if exclude_self else 0))
    queries, gallery = queries.detach(), gallery.detach()
    index = _faiss_index(gallery, distance) if backend == "faiss" and len(queries) else None
    prepared = _prepare(gallery, distance) if index is None else None
    dists, idx = [], []
    for s in _chunks(queries.shape[0], _rows_per_chunk(gallery.shape[0], chunk)):
        own = torch.arange(s.start, s.stop, device=queries.device) if exclude_self else None
        if prepared is None:
            vals, ind = _faiss_search(index, queries[s], k, distance, own)
        else:
            top = _block(queries[s], prepared, own).topk(k, dim=1, largest=False)
            vals, ind = top.values, top.indices  # (C, k)
        dists.append(vals)
        idx.append(ind)
    if not dists:
        empty = queries.new_zeros(0, k)
        return empty, empty.long()
    return torch.cat(dists), torch.cat(idx)


# ---------------------------------------------------------------------------- retrieval


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
    """Worst-case ranks of the relevant items among the ``depth`` nearest of each query.

    A relevant item tied with the last listed distance may have more irrelevant items at the
    same distance beyond the list; those rows are counted over the whole gallery (and, for
    faiss, searched again with torch so that every distance of the row comes from one place).
    The callers' cut-offs (R, K) are below ``depth``, so items beyond the list do not matter.
    """
    d: Tensor | None = None
    if index is None:
        d = _block(qc, gallery(), own)  # (C, N)
        top = d.topk(depth, dim=1, largest=False)
        vals, idx = top.values, top.indices  # (C, depth)
    else:
        vals, idx = _faiss_search(index, qc, depth, distance, own)
    rel = g_ids[idx] == qc_ids[:, None]  # (C, depth)
    edge_rows = (rel & (vals == vals[:, -1:])).any(1).nonzero()[:, 0]
    extra = None
    if depth < len(g_ids) - (own is not None) and edge_rows.numel():
        if d is None:
            own_rows = None if own is None else own[edge_rows]
            d_rows = _block(qc[edge_rows], gallery(), own_rows)  # (E, N)
            top = d_rows.topk(depth, dim=1, largest=False)
            vals = vals.to(d_rows.dtype)
            vals[edge_rows], rel[edge_rows] = (
                top.values,
                g_ids[top.indices] == qc_ids[edge_rows, None],
            )
        else:
            d_rows = d[edge_rows]
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
    m = [v / max(scored, 1) for v in sums]
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

    One chunked pass computes everything. The top-k metrics need the ``k = max(R_max,
    max(recall_ks)) + 1`` nearest items of each query (R_max: the largest class of the
    gallery, so MAP@R on 10 classes of 7,000 asks for 7,000 neighbours); mAP and MRR need
    every distance and sort each query's irrelevant distances (about twice the work).

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
            distance block (torch) plus O(chunk * k) for the neighbours and O(Q) for the
            per-query scores, never Q x k or N x N; faiss also holds an (N, D) float32 copy.

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
    index = _faiss_index(gallery, distance) if backend == "faiss" and nq and depth else None
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
        every score is 0.

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


def knn_accuracy(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    *,
    k: int = 1,
    distance: Distance = "euclidean",
    chunk: int | None = None,
    backend: Backend = "torch",
) -> float:
    """k-nearest-neighbour classification accuracy of queries against a labelled gallery.

    Each query takes the most frequent label among its ``k`` nearest gallery items (ties go
    to the label of the nearer item); accuracy is the fraction of queries labelled right.
    Queries and gallery are different sets (no self-match to exclude). 0 for no query.
    Items at equal distance are in the search's order.

    Example:
        >>> g, gl = torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1])
        >>> knn_accuracy(torch.tensor([[0.2], [0.9], [0.4]]), torch.tensor([0, 1, 1]), g, gl)
        0.6666666666666666
    """
    _check_labeled(queries, query_labels, "queries", "query_labels")
    _check_labeled(gallery, gallery_labels, "gallery", "gallery_labels")
    if queries.shape[0] == 0:
        return 0.0
    _, idx = nearest_neighbors(queries, gallery, k, distance=distance, chunk=chunk, backend=backend)
    votes = gallery_labels.to(idx.device)[idx]  # (Q, k)
    if k == 1:
        predicted = votes[:, 0]
    else:
        # Most frequent label; among equals, the one whose first vote comes earliest.
        same = votes[:, :, None] == votes[:, None, :]  # (Q, k, k)
        count = same.sum(2)  # (Q, k): how often each vote's label occurs
        earliest = same.int().argmax(2)  # (Q, k): first position of each vote's label
        score = count * (k + 1) - earliest  # more votes first, then earlier
        predicted = votes.gather(1, score.argmax(1, keepdim=True))[:, 0]
    return float((predicted == query_labels.to(idx.device)).double().mean())


# ------------------------------------------------------------------------- verification


def _pair_histograms(
    embeddings: Tensor,
    labels: Tensor,
    bucket: Callable[[Tensor], Tensor],
    buckets: int,
    distance: Distance,
    chunk: int | None,
) -> tuple[Tensor, Tensor]:
    """Histograms of the different-class and same-class pairs ``i < j`` over ``buckets``.

    ``bucket`` maps a (C, M) block of distances to bucket ids in ``[0, buckets)``. Row i of
    a chunk is compared with the items after it only, so each pair is seen once.
    """
    n = embeddings.shape[0]
    hist = torch.zeros(2 * buckets, dtype=torch.long, device=embeddings.device)
    prepared = _prepare(embeddings, distance)
    for s in _chunks(max(n - 1, 0), _rows_per_chunk(n, chunk)):
        later = slice(s.start + 1, n)
        d = _block(embeddings[s], prepared, start=s.start + 1)  # (C, M)
        rows = torch.arange(d.shape[0], device=d.device)[:, None]  # (C, 1)
        upper = torch.arange(d.shape[1], device=d.device)[None, :] >= rows  # (C, M): j > i
        same = labels[s][:, None] == labels[later][None, :]  # (C, M)
        key = bucket(d).add_(same, alpha=buckets)  # (C, M)
        hist += torch.bincount(key[upper], minlength=2 * buckets)
    return hist[:buckets], hist[buckets:]


def _threshold_grid(thresholds: Tensor | None, device: torch.device) -> Tensor:
    t = torch.arange(151, dtype=torch.float64) / 100 if thresholds is None else thresholds
    t = t.to(device, torch.float64)
    if t.dim() != 1 or t.numel() == 0 or bool((t[1:] <= t[:-1]).any()):
        raise ValueError("thresholds must be a non-empty 1-D tensor of increasing distances")
    return t


def _threshold_accuracies(
    embeddings: Tensor, labels: Tensor, t: Tensor, distance: Distance, chunk: int | None
) -> tuple[Tensor, int, int]:
    """(T,) accuracy at each threshold, #same pairs, #different pairs."""

    def first_threshold_at_or_above(d: Tensor) -> Tensor:
        # The pair is "same" for that threshold and every later one; T means for none.
        return torch.searchsorted(t, d.double().contiguous())

    diff, same = _pair_histograms(
        embeddings, labels, first_threshold_at_or_above, t.shape[0] + 1, distance, chunk
    )
    n_same, n_diff = int(same.sum()), int(diff.sum())
    same_le = same.cumsum(0)[:-1]  # (T,) same pairs with d <= t
    diff_gt = n_diff - diff.cumsum(0)[:-1]  # (T,) different pairs with d > t
    return (same_le + diff_gt).double() / max(n_same + n_diff, 1), n_same, n_diff


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
    chunk: int | None = None,
) -> PairAccuracy:
    """Best-threshold verification accuracy over all pairs, as the torchvision reference.

    Every pair ``i < j`` is called "same" when ``d(i, j) <= t``; the accuracy is computed for
    each ``t`` in ``thresholds`` (default 0.00, 0.01, ..., 1.50) and the best is reported with
    its threshold (the smallest such ``t`` on ties). Note that the threshold is tuned on the
    pairs it is scored on (:func:`held_out_pair_accuracy` does not), and that the "always
    different" floor is high when there are many classes (90% with 10 balanced classes).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        thresholds: (T,) increasing thresholds.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory is O(chunk * N).

    Example:
        >>> r = pair_accuracy(torch.tensor([[0.0], [0.25], [1.0]]), torch.tensor([0, 0, 1]))
        >>> r.accuracy, r.threshold, round(r.floor, 4)
        (1.0, 0.25, 0.6667)
    """
    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    t = _threshold_grid(thresholds, embeddings.device)
    acc, n_same, n_diff = _threshold_accuracies(
        embeddings.detach(), labels.to(embeddings.device), t, distance, chunk
    )
    best = int(acc.argmax())
    total = max(n_same + n_diff, 1)
    return PairAccuracy(float(acc[best]), float(t[best]), n_diff / total, n_same + n_diff)


@dataclass(frozen=True)
class HeldOutPairAccuracy:
    """Pair accuracy at a threshold fitted on other pairs.

    Attributes:
        accuracy: fraction of the test pairs classified right at ``threshold``.
        threshold: the best threshold on the held-out (fit) pairs.
        fit_accuracy: its accuracy on the fit pairs (optimistic, as :func:`pair_accuracy`).
        floor: the accuracy of answering "different" for every test pair.
        num_pairs: test pairs, N (N - 1) / 2.
        num_fit_pairs: fit pairs.
    """

    accuracy: float
    threshold: float
    fit_accuracy: float
    floor: float
    num_pairs: int
    num_fit_pairs: int


def held_out_pair_accuracy(
    fit_embeddings: Tensor,
    fit_labels: Tensor,
    embeddings: Tensor,
    labels: Tensor,
    *,
    thresholds: Tensor | None = None,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> HeldOutPairAccuracy:
    """Pair accuracy on the test pairs at the threshold that is best on held-out pairs.

    The threshold ``t*`` maximises the accuracy of "same iff ``d(i, j) <= t``" over all pairs
    ``i < j`` of the fit set (the smallest such ``t`` on ties, among ``thresholds``, default
    0.00, 0.01, ..., 1.50); the accuracy is then that of ``t*`` on all pairs of the test set,
    an honest estimate where :func:`pair_accuracy` tunes on the pairs it scores.

    Args:
        fit_embeddings: (M, D) held-out embeddings (e.g. a validation split).
        fit_labels: (M,) their classes.
        embeddings: (N, D) test embeddings.
        labels: (N,) their classes.
        thresholds: (T,) increasing thresholds.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory is O(chunk * N).

    Corner cases:
        A set of fewer than two items has no pairs: accuracies 0 and, for the fit set, the
        first threshold.

    Example:
        Fit pairs: 0.25 (same), 1.0 and 0.75 (different): best t = 0.25. Test pairs: 0.5
        (same, now called different), 2.0 and 1.5 (different): 2 of 3 right.

        >>> y = torch.tensor([0, 0, 1])
        >>> r = held_out_pair_accuracy(torch.tensor([[0.0], [0.25], [1.0]]), y,
        ...                            torch.tensor([[0.0], [0.5], [2.0]]), y)
        >>> r.threshold, round(r.accuracy, 4), r.fit_accuracy
        (0.25, 0.6667, 1.0)
    """
    _check_labeled(fit_embeddings, fit_labels, "fit_embeddings", "fit_labels")
    _check_labeled(embeddings, labels, "embeddings", "labels")
    _check_gallery(fit_embeddings, embeddings)
    check_distance(distance)
    t = _threshold_grid(thresholds, embeddings.device)
    fit_acc, fit_same, fit_diff = _threshold_accuracies(
        fit_embeddings.detach().to(embeddings.device),
        fit_labels.to(embeddings.device),
        t,
        distance,
        chunk,
    )
    best = int(fit_acc.argmax())
    acc, n_same, n_diff = _threshold_accuracies(
        embeddings.detach(), labels.to(embeddings.device), t, distance, chunk
    )
    return HeldOutPairAccuracy(
        accuracy=float(acc[best]),
        threshold=float(t[best]),
        fit_accuracy=float(fit_acc[best]),
        floor=n_diff / max(n_same + n_diff, 1),
        num_pairs=n_same + n_diff,
        num_fit_pairs=fit_same + fit_diff,
    )


@dataclass(frozen=True)
class VerificationScores:
    """ROC AUC and TAR at fixed FAR over all pairs ``i < j``, from binned distances.

    Attributes:
        roc_auc: P(d_same < d_diff) + P(d_same = d_diff) / 2, pairs in one bin counting 1/2.
        roc_auc_error: the exact AUC lies within ``roc_auc +- roc_auc_error``.
        tar_at_far: FAR -> TAR (fraction of same-class pairs accepted) at ``threshold_at_far``.
        threshold_at_far: FAR -> the largest grid threshold whose FAR (fraction of
            different-class pairs with distance <= it) is at most that FAR; ``-inf`` when
            even distance 0 accepts too many (then TAR is 0, exactly).
        tar_error: FAR -> how much the exact TAR (the best over every real threshold) may
            exceed ``tar_at_far``: the same-class pairs in the next bin.
        bin_width: the grid step.
        num_positive_pairs: same-class pairs.
        num_negative_pairs: different-class pairs.
    """

    roc_auc: float
    roc_auc_error: float
    tar_at_far: dict[float, float]
    threshold_at_far: dict[float, float]
    tar_error: dict[float, float]
    bin_width: float
    num_positive_pairs: int
    num_negative_pairs: int


def _max_distance(x: Tensor, distance: Distance, chunk: int) -> float:
    """An upper bound on every pair distance: ``|xi - xj| <= |xi - m| + |xj - m|``."""
    if distance == "cosine":
        return 2.0
    if x.shape[0] == 0:
        return 0.0
    mean = x.mean(0, dtype=torch.float64)  # (D,)
    radius = max(float((x[s].double() - mean).norm(dim=1).max()) for s in _chunks(len(x), chunk))
    bound = 2.0 * radius * (1.0 + 1e-6)
    return bound * bound if distance == "sqeuclidean" else bound


def verification_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    fars: Sequence[float] = (1e-3, 1e-2),
    bins: int = 2**20,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> VerificationScores:
    """Verification ROC AUC and TAR at FAR over all pairs ``i < j``, in O(bins) memory.

    A pair is accepted as "same" when its distance is at most a threshold. Each chunk's
    pair distances are counted into ``bins`` equal bins ``(t_{b-1}, t_b]`` of ``[0, U]``
    (bin 0 holds distance exactly 0; ``U`` bounds every distance: 2 for cosine, else twice
    the largest distance to the mean, squared for ``"sqeuclidean"``), separately for
    same-class and different-class pairs. From the two histograms:

    - ROC AUC ``= sum_b P_b (N_{>b} + N_b / 2) / (P N)`` with ``P_b``, ``N_b`` the same- and
      different-class pairs of bin b: exact for pairs in different bins, 1/2 for pairs
      sharing a bin, so ``|exact - roc_auc| <= sum_{b>0} P_b N_b / (2 P N)`` (reported; about
      1e-6 with the default 2**20 bins unless the distances pile up in a few bins).
    - TAR at FAR f: the largest grid threshold ``t_b`` with ``N_{<=b} <= f N`` and its
      ``P_{<=b} / P``; the best real threshold can add at most ``P_{b+1} / P`` (reported).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        fars: false accept rates to report TAR at.
        bins: grid resolution; memory is two int64 histograms of ``bins + 1``.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory O(chunk * N). Time is
            O(N^2 D): 70,000 items are 2.4e9 pairs.

    Corner cases:
        Without same-class or without different-class pairs AUC and TAR are undefined:
        ``nan``, with errors 0.

    Example:
        Pairs: (0, 1) same at 1, (0, 2) different at 3, (1, 2) different at 2: every
        same-class pair is closer than every different-class pair.

        >>> v = verification_scores(torch.tensor([[0.0], [1.0], [3.0]]),
        ...                         torch.tensor([0, 0, 1]), fars=(0.0, 0.5))
        >>> v.roc_auc, v.tar_at_far, v.num_positive_pairs, v.num_negative_pairs
        (1.0, {0.0: 1.0, 0.5: 1.0}, 1, 2)
    """
    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    for f in fars:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"every FAR must be within [0, 1], got {f!r}")
    embeddings = embeddings.detach()
    labels = labels.to(embeddings.device)
    rows = _rows_per_chunk(embeddings.shape[0], chunk)
    upper = _max_distance(embeddings, distance, rows)
    width = upper / bins if upper > 0 else 1.0

    def grid_bin(d: Tensor) -> Tensor:
        return d.double().div_(width).ceil_().clamp_(0, bins).long()  # d is not reused

    neg, pos = _pair_histograms(embeddings, labels, grid_bin, bins + 1, distance, chunk)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    nan = float("nan")
    if n_pos == 0 or n_neg == 0:
        return VerificationScores(
            nan, 0.0, dict.fromkeys(fars, nan), dict.fromkeys(fars, nan),
            dict.fromkeys(fars, 0.0), width, n_pos, n_neg,
        )  # fmt: skip
    p, q = pos.double(), neg.double()
    q_above = n_neg - q.cumsum(0)  # (bins + 1,) different-class pairs in later bins
    auc = float((p * (q_above + q / 2)).sum()) / (n_pos * n_neg)
    auc_err = float((p[1:] * q[1:]).sum()) / (2 * n_pos * n_neg)
    neg_le, pos_le = neg.cumsum(0), pos.cumsum(0)  # (bins + 1,)
    tar, thr, err = {}, {}, {}
    for f in fars:
        ok = int((neg_le <= f * n_neg).sum())  # FAR is non-decreasing: bins 0..ok-1 qualify
        if ok == 0:
            tar[f], thr[f], err[f] = 0.0, -math.inf, 0.0
            continue
        b = ok - 1
        tar[f], thr[f] = int(pos_le[b]) / n_pos, b * width
        err[f] = int(pos[b + 1]) / n_pos if b < bins else 0.0
    return VerificationScores(auc, auc_err, tar, thr, err, width, n_pos, n_neg)


# ---------------------------------------------------------------------------- clustering


@dataclass(frozen=True)
class ClusteringScores:
    """Agreement of k-means clusters with the classes.

    Attributes:
        nmi: normalised mutual information ``I(Y; C) / ((H(Y) + H(C)) / 2)``.
        ami: adjusted mutual information ``(I - E[I]) / ((H(Y) + H(C)) / 2 - E[I])``, 0 for
            chance-level clusters.
        num_clusters: k, the number of classes.
    """

    nmi: float
    ami: float
    num_clusters: int


def clustering_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    seed: int = 0,
    n_init: int = 1,
    distance: Distance = "euclidean",
) -> ClusteringScores:
    """NMI and AMI of k-means clusters (as many clusters as classes) against the classes.

    scikit-learn's ``KMeans(n_clusters=k, n_init=n_init, random_state=seed)`` (k-means++
    seeding, Lloyd iterations) clusters the embeddings; ``normalized_mutual_info_score`` and
    ``adjusted_mutual_info_score`` (arithmetic mean normalisation, as pytorch-metric-learning)
    compare the clusters with the labels. ``distance="cosine"`` clusters the L2-normalised
    rows; ``"sqeuclidean"`` is the same as ``"euclidean"`` for k-means.

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        seed: k-means' random state.
        n_init: k-means restarts (the best inertia is kept).
        distance: as above.

    Corner cases:
        No item: all 0. One class: one cluster, NMI = AMI = 1. The cost is k-means'
        (O(N k D) per iteration), not quadratic.

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
        >>> clustering_scores(x, torch.tensor([0, 0, 1, 1]))
        ClusteringScores(nmi=1.0, ami=1.0, num_clusters=2)
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    if embeddings.shape[0] == 0:
        return ClusteringScores(0.0, 0.0, 0)
    x = embeddings.detach()
    if distance == "cosine":
        x = F.normalize(x, dim=1)
    y = labels.cpu().numpy()
    k = len(np.unique(y))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    clusters = km.fit_predict(x.cpu().double().numpy())
    nmi = float(normalized_mutual_info_score(y, clusters))
    ami = float(adjusted_mutual_info_score(y, clusters))
    return ClusteringScores(nmi, ami, k)


# ---------------------------------------------------------------------- fixed triplets


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
    from tripletlab.distances import paired_distances

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
