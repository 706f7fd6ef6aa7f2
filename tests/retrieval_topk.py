"""The torch path of ``retrieval_metrics`` before issue 17: a top-k of R_max + 1 neighbours.

Kept as the oracle of the cut-off path that replaced it (same distance blocks, same tie
convention): the scores must agree to 1e-6. Slow at scale (a top-7,000 of 70,000 per query),
fine at test sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tripletlab.distances import Distance
from tripletlab.metrics import blocks
from tripletlab.metrics.retrieval import _list_ranks, _query_values


def _top_ranks(
    qc: Tensor,
    qc_ids: Tensor,
    gallery: blocks._Prepared,
    g_ids: Tensor,
    depth: int,
    own: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Worst-case ranks of the relevant items among the ``depth`` nearest of each query."""
    d = blocks._block(qc, gallery, own)  # (C, N)
    top = d.topk(depth, dim=1, largest=False)
    vals, idx = top.values, top.indices  # (C, depth)
    rel = g_ids[idx] == qc_ids[:, None]  # (C, depth)
    edge_rows = (rel & (vals == vals[:, -1:])).any(1).nonzero()[:, 0]
    extra = None
    if depth < len(g_ids) - (own is not None) and edge_rows.numel():
        d_rows = d[edge_rows]
        last = vals[edge_rows, -1:]  # (E, 1)
        beyond = (d_rows <= last) & (g_ids[None, :] != qc_ids[edge_rows, None])  # (E, N)
        extra = beyond.sum(1) - (~rel[edge_rows]).sum(1)  # (E,) irrelevant ties past the list
    order, rank = _list_ranks(vals, rel)
    if extra is not None:
        at_edge = rel[edge_rows] & (vals[edge_rows] == vals[edge_rows, -1:])  # (E, depth)
        rank[edge_rows] += extra[:, None] * at_edge
    return order, rank, rel


def topk_values(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor | None,
    gallery_labels: Tensor | None,
    ks: Sequence[int],
    distance: Distance,
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """((Q, 3 + len(ks)) per-query P@1, R-precision, MAP@R, Recall@K; (Q,) R) the old way."""
    same_set = gallery is None or gallery_labels is None
    if gallery is None or gallery_labels is None:
        gallery, gallery_labels = queries, query_labels
    nq = len(queries)
    _, ids = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)
    q_ids, g_ids = ids[:nq], ids[nq:]
    r = torch.bincount(g_ids, minlength=int(ids.max()) + 1)[q_ids] - int(same_set)  # (Q,)
    limit = len(gallery) - int(same_set)
    depth = min(max([int(r.max()), *ks]) + 1, limit)
    prepared = blocks._prepare(gallery, distance)
    values = torch.zeros(nq, 3 + len(ks), dtype=torch.float64)
    for s in blocks._chunks(nq, chunk):
        own = torch.arange(s.start, s.stop) if same_set else None
        order, rank, valid = _top_ranks(queries[s], q_ids[s], prepared, g_ids, depth, own)
        values[s] = _query_values(order, rank, valid, r[s], ks, False)
    return values, r
