"""The k nearest gallery items of every query, exactly (torch, by blocks of queries and
gallery rows with a running top k, or faiss's exact flat indexes), and the
k-nearest-neighbour classification accuracy built on them.

The torch kernel (:func:`exact_search` on an :class:`ExactGallery`) is the one home of exact
k-NN: :func:`nearest_neighbors` prepares the gallery per call, the search index
(:class:`tripletlab.search.EmbeddingIndex`) keeps it prepared across adds.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.checks import check_choice
from tripletlab.distances import Distance, check_distance
from tripletlab.faiss_adapter import faiss_distances, faiss_rows, flat_index
from tripletlab.metrics import blocks
from tripletlab.metrics.blocks import _chunks, _rows_per_chunk
from tripletlab.metrics.checks import _check_embeddings, _check_gallery, _check_k, _check_labeled

Backend = Literal["torch", "faiss"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def _check_backend(backend: str) -> None:
    check_choice("backend", backend, BACKENDS)


def _faiss_search(
    index: Any, q: Tensor, k: int, distance: Distance, own: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(C, k) distances and indices from faiss, nearest first, ``own`` rows left out."""
    extra = 0 if own is None else 1
    vals_np, idx_np = index.search(faiss_rows(q, distance), k + extra)
    vals, idx = faiss_distances(vals_np, distance), torch.from_numpy(idx_np).long()  # (C, k+e)
    if own is not None:
        # Drop the query itself; where duplicates at distance 0 pushed it out, drop the last.
        drop = idx == own.cpu()[:, None]  # (C, k + 1)
        drop[:, -1] |= ~drop.any(1)
        vals, idx = vals[~drop].view(-1, k), idx[~drop].view(-1, k)
    return vals.to(q.device), idx.to(q.device)


# ---------------------------------------------------------------- the exact k-NN kernel

#: Gallery columns per group when a block is screened by its group minima: a group whose
#: smallest score cannot enter a query's running top k is skipped without looking inside.
#: Half as many for k > 32, whose candidates spread over more groups (timed once: k = 100 at
#: 70k rows 1.3x faster with 32, k = 1 and 10 up to 8% slower).
GROUP = 64

#: Scores in one (query block, gallery block) block by default: 2**21 float32 is 8 MiB, 1,024
#: queries x 2,048 gallery rows, small enough to be screened while it is still in the cache.
SCORE_BLOCK = 2**21


class ExactGallery(NamedTuple):
    """A gallery made ready for exact k-NN search once, not once per search.

    ``rows`` is (N, D + 1) ``[g, |g|^2]`` for the Euclidean forms, so that one matrix product
    with the query rows ``[-2 q, 1]`` gives the ranking score ``|g|^2 - 2 q.g`` (the query's
    ``|q|^2`` is the same for every item and is added to the k kept scores only), and
    (N, D) unit rows for cosine, whose score with ``-q / |q|`` is ``-cos``. float64 stays
    float64, every other dtype is float32.
    """

    rows: Tensor
    distance: Distance

    @property
    def dim(self) -> int:
        return self.rows.shape[1] - (0 if self.distance == "cosine" else 1)


def exact_gallery(gallery: Tensor, distance: Distance) -> ExactGallery:
    """``gallery`` (N, D) as an :class:`ExactGallery` (a copy: squared norms or unit rows,
    computed a block of rows at a time)."""
    check_distance(distance)
    dtype = torch.float64 if gallery.dtype == torch.float64 else torch.float32
    g = gallery.detach()
    if distance == "cosine":
        rows = torch.empty(g.shape, dtype=dtype, device=g.device)
        for s in _chunks(len(g), 65536):
            rows[s] = F.normalize(g[s].to(dtype), dim=1)
        return ExactGallery(rows, distance)
    rows = torch.empty(g.shape[0], g.shape[1] + 1, dtype=dtype, device=g.device)
    for s in _chunks(len(g), 65536):
        rows[s, :-1] = g[s]
        rows[s, -1] = rows[s, :-1].square().sum(1)  # (n,) |g|^2
    return ExactGallery(rows, distance)


def extend_gallery(prepared: ExactGallery, more: Tensor) -> ExactGallery:
    """``prepared`` with the rows of ``more`` (n, D) appended, only those computed."""
    extra = exact_gallery(more.to(prepared.rows.dtype), prepared.distance).rows
    return ExactGallery(torch.cat([prepared.rows, extra]), prepared.distance)


def _query_rows(q: Tensor, gallery: ExactGallery) -> Tensor:
    """(C, D') rows whose product with ``gallery.rows`` is the ranking score."""
    q = q.to(gallery.rows.dtype)
    if gallery.distance == "cosine":
        return F.normalize(q, dim=1).neg_()  # (C, D)
    return torch.cat([q * -2.0, q.new_ones(q.shape[0], 1)], dim=1)  # (C, D + 1)


def _by_value_then_index(v: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """(C, m) pairs ordered by (value, index) within each row."""
    by_index = torch.sort(i, dim=1).indices  # indices are distinct within a row
    v, i = v.gather(1, by_index), i.gather(1, by_index)
    by_value = torch.sort(v, dim=1, stable=True).indices
    return v.gather(1, by_value), i.gather(1, by_value)


def _block_top(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, M)`` smallest of each row of ``s`` (C, M) by (score, column), in that
    order: ``topk``, and where the (k+1)-th equals the k-th (a tie at the boundary, which
    ``topk`` breaks arbitrarily) a stable sort of that row."""
    m = s.shape[1]
    if k >= m:
        cols = torch.arange(m, device=s.device).expand(s.shape[0], m)
        return _by_value_then_index(s, cols)
    top = s.topk(k + 1, dim=1, largest=False, sorted=True)
    v, i = _by_value_then_index(top.values[:, :k], top.indices[:, :k])
    tied = torch.nonzero(top.values[:, k] == top.values[:, k - 1])[:, 0]  # (T,)
    if tied.numel():  # all the tied rows in one stable sort: ties in column order
        order = torch.sort(s[tied], dim=1, stable=True).indices[:, :k]  # (T, k)
        v[tied], i[tied] = s[tied].gather(1, order), order
    return v, i


def _screen(head: Tensor, minima: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every score of ``head`` (C, G, GROUP) below its row's threshold ``tau`` (C,), as
    flat (row, column, score) sorted by (row, column). A group whose minimum (``minima``,
    (C, G)) is not below is skipped without a look inside."""
    _, groups, size = head.shape  # (C, G, GROUP)
    r, g = torch.nonzero(minima < tau[:, None], as_tuple=True)  # (P,) groups with a hit
    if head.is_contiguous():  # whole rows of groups: one index_select
        vals = head.view(-1, size).index_select(0, r * groups + g)  # (P, GROUP)
    else:
        vals = head[r, g]  # (P, GROUP)
    hit = torch.nonzero((vals < tau[r, None]).view(-1))[:, 0]  # (H,) in (row, column) order
    p = hit // size
    return r[p], g[p] * size + hit % size, vals.view(-1)[hit]


def _first_top(head: Tensor, k: int) -> tuple[Tensor, Tensor] | None:
    """The k smallest of each row of a first block ``head`` (C, G, GROUP), G >= k, by
    (score, column), in that order, found without a full ``topk``: the k-th smallest group
    minimum bounds each row's k-th smallest score from above (k groups each hold a score
    at most it), so the scores at most it hold the k smallest, ties included. None where
    that leaves too many to sort (the caller takes ``topk``)."""
    minima = head.amin(2)  # (C, G)
    bound = minima.topk(k, dim=1, largest=False).values[:, -1]  # (C,)
    r, cols, vals = _screen(head, minima, torch.nextafter(bound, bound.new_tensor(math.inf)))
    if r.numel() > head.numel() // 8:
        return None
    v, i = _pad(r, cols, vals, head.shape[0])  # (C, w), w >= k
    order = torch.sort(v, dim=1, stable=True).indices[:, :k]  # equal: lower column first
    return v.gather(1, order), i.gather(1, order)


def _pad(rows: Tensor, cols: Tensor, vals: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Flat (row, column, score) sorted by row as (C, w) scores and columns, each row's
    entries first in their order, then ``inf`` (column -1)."""
    counts = torch.bincount(rows, minlength=c)  # (C,)
    w = int(counts.max()) if rows.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    at = torch.arange(rows.shape[0], device=rows.device) - starts[rows]  # place within its row
    v = vals.new_full((c, w), float("inf"))
    i = cols.new_full((c, w), -1)
    v[rows, at], i[rows, at] = vals, cols
    return v, i


def _merge(best: tuple[Tensor, Tensor], v: Tensor, i: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k smallest by (score, index) of each row of the running best (C, k), in that
    order, and of candidates (C, w), whose indices exceed every running one and come in
    index or (score, index) order within a row (``inf`` padding last)."""
    all_v, all_i = torch.cat([best[0], v], dim=1), torch.cat([best[1], i], dim=1)  # (C, k + w)
    order = torch.sort(all_v, dim=1, stable=True).indices[:, :k]  # equal: earlier column first
    return all_v.gather(1, order), all_i.gather(1, order)


def _update(
    best: tuple[Tensor, Tensor], part: Tensor, offset: int, k: int, *, screen: int
) -> tuple[Tensor, Tensor]:
    """The running best (C, k) merged with the scores ``part`` (C, M) of gallery rows
    ``offset:offset + M`` (all after the running ones): only the scores below the running
    k-th can enter, found by :func:`_screen` in groups of ``screen`` columns (M a multiple of
    it) or, with ``screen`` 0, one by one; where too many are, the part's own top k is taken
    instead."""
    if part.shape[1] == 0:
        return best
    tau = best[0][:, -1]  # (C,) the running k-th score: an equal later one loses on index
    if screen:
        head = part.view(part.shape[0], -1, screen)  # (C, G, screen)
        r, cols, vals = _screen(head, head.amin(2), tau)
    else:
        r, cols = torch.nonzero(part < tau[:, None], as_tuple=True)
        vals = part[r, cols]
    if r.numel() == 0:
        return best
    if r.numel() > part.numel() // 8:
        v, i = _block_top(part, k)
        return _merge(best, v, i + offset, k)
    active = torch.unique_consecutive(r)  # (A,) the rows with candidates, ascending
    if active.numel() == best[0].shape[0]:
        return _merge(best, *_pad(r, cols + offset, vals, active.numel()), k)
    v, i = _pad(torch.searchsorted(active, r), cols + offset, vals, active.numel())
    sub_v, sub_i = _merge((best[0][active], best[1][active]), v, i, k)  # (A, k)
    best_v, best_i = best[0].clone(), best[1].clone()
    best_v[active], best_i[active] = sub_v, sub_i
    return best_v, best_i


def _distances(score: Tensor, q: Tensor, distance: Distance) -> Tensor:
    """Distances from the kept ranking scores (C, k) of the queries ``q`` (C, D)."""
    if distance == "cosine":
        return score.add(1.0).clamp_(0.0, 2.0)  # 1 - cos
    qs = q.to(score.dtype)
    d = score.add((qs * qs).sum(1)[:, None]).clamp_min_(0.0)  # |q|^2 + |g|^2 - 2 q.g
    return d.sqrt_() if distance == "euclidean" else d


def block_shape(
    q: int, n: int, k: int, chunk: int | None = None, gallery_chunk: int | None = None
) -> tuple[int, int, int]:
    """(queries, gallery rows, group columns) of the blocks :func:`exact_search` takes for
    ``q`` queries, ``n`` gallery rows and ``k`` (its arguments ``chunk`` and
    ``gallery_chunk`` as given to it)."""
    # A large k merges less often with wider blocks, which hold fewer queries so that a
    # block of scores stays SCORE_BLOCK: 1,024 x 2,048 up to k = 32, 327 x 6,400 at k = 100.
    gb = max(SCORE_BLOCK // 1024, 64 * k) if gallery_chunk is None else max(1, gallery_chunk)
    qb = _rows_per_chunk(n, chunk) if chunk is not None else min(1024, SCORE_BLOCK // gb)
    qb = max(1, min(qb, q))
    if gallery_chunk is None:  # fewer queries than a block holds (one, from serve): wider
        gb = min(max(gb, SCORE_BLOCK // qb), blocks.BLOCK // qb)
    group = GROUP if k <= 32 else GROUP // 2
    return qb, min(n, max(gb - gb % group if gb > group else gb, k)), group


def exact_search(
    queries: Tensor,
    gallery: ExactGallery,
    k: int,
    *,
    exclude_self: bool = False,
    chunk: int | None = None,
    gallery_chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest rows of a prepared gallery for each query, exactly, by blocks.

    The gallery is taken ``gallery_chunk`` rows at a time (default: 2,048 rows, or ``64 k``
    for k > 32, and wider for fewer queries, so that a block holds :data:`SCORE_BLOCK`
    scores; at most ``BLOCK``; rounded down to a multiple of the group, at least k) and
    the queries ``chunk`` at a time (default: as many as keep a block at
    :data:`SCORE_BLOCK` scores, at most 1,024). One matrix product per (query block,
    gallery block) gives a block of ranking scores
    (``|g|^2 - 2 q.g`` from the rows ``[g, |g|^2]``, or ``-cos``); each query's running top
    k is merged with the block's scores that can enter it: those below the running k-th
    score, found by screening groups of :data:`GROUP` columns (half as many for k > 32) by
    their minima (the first block's bound is the k-th smallest group minimum). Only the k
    kept scores become distances (``+ |q|^2``, clamp, square root). Memory: one score block
    (8 MiB in float32 by default, at most ``BLOCK`` elements) and O(chunk * k) beside the
    candidates; never a (Q, N) matrix.

    Args:
        queries: (Q, D) finite floats, the gallery's dimension (not checked here).
        gallery: from :func:`exact_gallery`.
        k: 1 <= k <= N (N - 1 with ``exclude_self``; not checked here).
        exclude_self: query i is gallery row i; it is not its own neighbour.
        chunk: queries per block.
        gallery_chunk: gallery rows per block.

    Returns:
        (Q, k) distances (the gallery's dtype) and int64 rows, ordered by (distance, row).

    Corner cases:
        Items at the same score are taken in row order, also at the k-th place: the rows
        are the first k of a stable sort of each query's scores, then ordered by (distance,
        row). Different scores may give equal distances (the clamp at 0, rounding); which of
        those is kept at the k-th place follows the scores. Q = 0 gives (0, k) tensors.
    """
    n, device = gallery.rows.shape[0], gallery.rows.device
    qb, gb, group = block_shape(queries.shape[0], n, k, chunk, gallery_chunk)
    buffer = torch.empty(qb * gb, dtype=gallery.rows.dtype, device=device)
    out_d, out_i = [], []
    for qs in _chunks(queries.shape[0], qb):
        q = _query_rows(queries[qs], gallery)  # (C, D')
        c = q.shape[0]
        best: tuple[Tensor, Tensor] | None = None
        for gs in _chunks(n, gb):
            m = gs.stop - gs.start
            s = torch.mm(q, gallery.rows[gs].T, out=buffer[: c * m].view(c, m))  # (C, M)
            first, last = max(qs.start, gs.start), min(qs.stop, gs.stop)
            if exclude_self and first < last:  # queries whose own row is in this block
                own = torch.arange(first, last, device=device)
                s[own - qs.start, own - gs.start] = float("inf")
            whole = m - m % group  # a last block's other columns are compared one by one
            if best is not None:
                best = _update(best, s[:, :whole], gs.start, k, screen=group)
            elif whole >= k * group and (top := _first_top(s[:, :whole].view(c, -1, group), k)):
                best = (top[0], top[1] + gs.start)
            else:
                v, i = _block_top(s, k)
                best = (v, i + gs.start)
                continue
            best = _update(best, s[:, whole:], gs.start + whole, k, screen=0)
        assert best is not None
        d = _distances(best[0], queries[qs], gallery.distance)
        d, i = _by_value_then_index(d, best[1])
        out_d.append(d)
        out_i.append(i)
    if not out_d:
        return queries.new_zeros(0, k, dtype=gallery.rows.dtype), torch.zeros(
            0, k, dtype=torch.long, device=device
        )
    return torch.cat(out_d), torch.cat(out_i)


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
    """The ``k`` nearest gallery items of every query, exactly.

    Args:
        queries: (Q, D) embeddings.
        gallery: (N, D) embeddings.
        k: neighbours per query, ``k <= N`` (``N - 1`` with ``exclude_self``).
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        exclude_self: queries are the gallery (same rows, same order); item i is not its
            own neighbour.
        chunk: queries per block (default 1,024); the gallery is taken ``BLOCK // chunk``
            rows at a time (:func:`exact_search`). Memory: a prepared copy of the gallery
            (:func:`exact_gallery`), one block of ``BLOCK`` scores and O(Q * k).
        backend: ``"torch"`` (exact, any device) or ``"faiss"`` (exact ``IndexFlatL2`` /
            ``IndexFlatIP`` on unit rows for cosine; computes in float32 on the CPU; needs
            ``pip install faiss-cpu``).

    Returns:
        ``(distances, indices)``, both (Q, k), nearest first. torch: items at the same
        distance in row order, also at the k-th place (:func:`exact_search`); faiss: in its
        search's order.

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
    if backend == "torch" or not len(queries):
        rows = _rows_per_chunk(gallery.shape[0], chunk) if chunk is not None else None
        prepared = exact_gallery(gallery, distance)
        return exact_search(queries, prepared, k, exclude_self=exclude_self, chunk=rows)
    index = flat_index(gallery, distance)
    dists, idx = [], []
    for s in _chunks(queries.shape[0], _rows_per_chunk(gallery.shape[0], chunk)):
        own = torch.arange(s.start, s.stop, device=queries.device) if exclude_self else None
        vals, ind = _faiss_search(index, queries[s], k, distance, own)
        dists.append(vals)
        idx.append(ind)
    return torch.cat(dists), torch.cat(idx)


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
