"""The k nearest gallery items of every query, in chunks (torch, or faiss's exact flat
indexes), and the k-nearest-neighbour classification accuracy built on them."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from tripletlab.checks import check_choice
from tripletlab.distances import Distance, check_distance
from tripletlab.faiss_adapter import faiss_distances, faiss_rows, flat_index
from tripletlab.metrics.blocks import _block, _chunks, _prepare, _rows_per_chunk
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
    index = flat_index(gallery, distance) if backend == "faiss" and len(queries) else None
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
