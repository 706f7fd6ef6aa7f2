"""MAP@R, R-precision, precision@1 and Recall@K from the items below a per-query cut-off.

The retrieval metrics of :mod:`tripletlab.metrics.retrieval` other than mAP and MRR need,
for a query with R relevant items, only the worst-case ranks (``i + #{irrelevant items at
distance <= the i-th relevant one's}``) that are at most ``L = max(R, max K)``: a relevant
item past the L-th nearest distance of the query has at least L items before it. So a
distance block need not be top-k'ed (a top-7,000 of 70,000 per query for 10 classes of
7,000 is 7x the matrix product); it is enough to

1. place a cut-off ``t`` per query at or above its L-th nearest distance, from a fixed sample
   of the gallery's columns (about L items fall below it, a few percent more);
2. list the items at or below ``t`` (about L per query, never a (C, N) sort);
3. sort each query's list by (distance, irrelevant first): a relevant item's position in it
   is its worst-case rank, exactly, since every item at least as near is listed.

On a CPU the lists are made and sorted one query at a time with numpy (whose vectorised
comparisons and sorts are 2-5x torch's there); elsewhere the whole chunk is done at once
with torch. Both give the same per-query values. Internal to :mod:`tripletlab.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

#: Gallery columns sampled to place the cut-offs.
SAMPLE = 1024

_NEVER = torch.iinfo(torch.long).max


def _use_numpy(d: Tensor) -> bool:
    """Whether a block is listed with numpy, one query at a time (CPU tensors)."""
    return d.device.type == "cpu"


def sample_columns(n: int, device: torch.device) -> Tensor:
    """(min(n, SAMPLE),) gallery columns, ascending, the same for every call of a size."""
    if n <= SAMPLE:
        return torch.arange(n, device=device)
    cols = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:SAMPLE]
    return cols.sort().values.to(device)


def _sampled(d: Tensor, need: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Each query's sampled distances, ascending, and the first rank j to try in them.

    With ``m = need * S / N`` the sampled items expected below the need-th nearest distance,
    ``j = ceil(m + 3 sqrt(m) + 1)``: the j-th smallest sampled distance is then usually a
    little above the need-th nearest. A cut-off found short is raised by doubling j.

    Returns:
        ``(sample, j)``: (C, S) sorted sampled distances, (C,) int64 1-based ranks.
    """
    if _use_numpy(d):  # numpy's gather and sort: ~10x and ~3x torch's here
        sample = torch.from_numpy(np.sort(d.numpy()[:, cols.numpy()], 1))  # (C, S)
    else:
        sample = d.index_select(1, cols).sort(1).values  # (C, S)
    m = need.double() * len(cols) / d.shape[1]  # (C,)
    return sample, (m + 3 * m.sqrt() + 1).ceil().long()


def _pick(sample: Tensor, j: Tensor, need: Tensor) -> Tensor:
    """(C,) cut-offs: the j-th sampled distance, ``inf`` past the sample, -1 for no need."""
    s = sample.shape[1]
    t = sample.gather(1, (j.clamp(1, s) - 1)[:, None])[:, 0]  # (C,)
    t = torch.where(j <= s, t, float("inf"))
    return torch.where(need > 0, t, -1.0)


def cutoff_values(
    d: Tensor,
    q_ids: Tensor,
    g_ids: Tensor,
    own: Tensor | None,
    r: Tensor,
    ks: Sequence[int],
    cols: Tensor,
) -> Tensor:
    """(C, 3 + len(ks)) per-query precision@1, R-precision, MAP@R, Recall@K of a block.

    Ranks are the worst case on ties (the module of :mod:`tripletlab.metrics.retrieval`);
    a query's values are its P@1 = [rank_1 = 1], R-precision = ``#{i: rank_i <= R} / R``,
    MAP@R = ``(1/R) sum_{i: rank_i <= R} i / rank_i`` and Recall@K = [rank_1 <= K], with
    rank_i the rank of its i-th nearest relevant item.

    Args:
        d: (C, N) non-negative distances, ``inf`` at the query's own entry (if any).
        q_ids: (C,) class ids of the queries.
        g_ids: (N,) class ids of the gallery.
        own: (C,) the query's own gallery column, or ``None`` (nothing excluded).
        r: (C,) relevant items per query (own excluded).
        ks: the K of Recall@K, each at most the other gallery items.
        cols: (S,) gallery columns sampled for the cut-offs (:func:`sample_columns`).

    Corner cases:
        A query with ``r = 0`` gets zeros (the caller excludes it). Ties make lists longer,
        never wrong: with all distances equal every item is listed.
    """
    others = d.shape[1] - (own is not None)
    need = torch.where(r > 0, r.clamp_min(max(ks, default=0)), 0).clamp_max(others)  # (C,)
    sample, j = _sampled(d, need, cols)
    if _use_numpy(d):
        return _rows_numpy(d, q_ids, g_ids, own, r, ks, sample, j, need)
    return _batched(d, q_ids, g_ids, own, r, ks, sample, j, need)


def _rows_numpy(
    d: Tensor,
    q_ids: Tensor,
    g_ids: Tensor,
    own: Tensor | None,
    r: Tensor,
    ks: Sequence[int],
    sample: Tensor,
    j: Tensor,
    need: Tensor,
) -> Tensor:
    """:func:`cutoff_values` one query at a time with numpy (CPU tensors).

    numpy computes on one thread: the queries are shared among ``torch.get_num_threads()``
    threads (numpy's comparisons, ``flatnonzero`` and sorts release the GIL).
    """
    dn, gl, sn = d.numpy(), g_ids.numpy(), sample.numpy()
    t, jn, ql, rn, nn = (
        _pick(sample, j, need).numpy(),
        j.numpy(),
        q_ids.numpy(),
        r.numpy(),
        need.numpy(),
    )
    ow = None if own is None else own.numpy()
    unsigned = np.uint32 if dn.dtype == np.float32 else np.uint64
    out = np.zeros((len(dn), 3 + len(ks)))

    def score(rows: np.ndarray) -> None:
        for c in rows.tolist():
            row, tc, jc, rc, nc = dn[c], float(t[c]), int(jn[c]), int(rn[c]), int(nn[c])
            while True:  # rarely more than once: a cut-off found short is raised
                idx = np.flatnonzero(row <= tc)  # (T,) listed items
                if ow is not None and tc == float("inf"):
                    idx = idx[idx != ow[c]]
                if len(idx) >= nc:
                    break
                jc *= 2
                tc = float(sn[c, jc - 1]) if jc <= sn.shape[1] else float("inf")
            # Bits of non-negative floats sort like them; the shift drops the sign of -0.0.
            key = row[idx].view(unsigned) << 1  # (T,)
            key |= gl[idx] == ql[c]  # relevant sorts after an equal irrelevant
            key.sort()
            ranks = np.flatnonzero(key & 1) + 1  # (P,) worst-case ranks of the listed relevant
            n = int(np.searchsorted(ranks, rc, side="right"))  # relevant within the first R
            first = int(ranks[0]) if len(ranks) else _NEVER
            precision = float((np.arange(1, n + 1) / ranks[:n]).sum())
            out[c, :3] = first == 1, n / rc, precision / rc
            out[c, 3:] = [first <= k for k in ks]

    parts = np.array_split(np.flatnonzero(nn), max(1, min(torch.get_num_threads(), len(dn))))
    if len(parts) == 1:
        score(parts[0])
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(score, parts))
    return torch.from_numpy(out)


def _batched(
    d: Tensor,
    q_ids: Tensor,
    g_ids: Tensor,
    own: Tensor | None,
    r: Tensor,
    ks: Sequence[int],
    sample: Tensor,
    j: Tensor,
    need: Tensor,
) -> Tensor:
    """:func:`cutoff_values` for a whole chunk at once with torch (any device)."""
    n = d.shape[1]
    t = _pick(sample, j, need)  # (C,)
    mask = d <= t[:, None]  # (C, N)
    if own is not None:
        mask[torch.arange(len(d), device=d.device), own] = False
    count = mask.sum(1)  # (C,)
    short = (count < need).nonzero()[:, 0]
    while len(short):  # rarely: the cut-off is raised when found short
        j[short] *= 2
        t[short] = _pick(sample[short], j[short], need[short])
        mask[short] = d[short] <= t[short, None]
        if own is not None:
            mask[short, own[short]] = False
        count[short] = mask[short].sum(1)
        short = short[count[short] < need[short]]
    flat = mask.view(-1).nonzero()[:, 0]  # (T,) listed items, row-major
    row, col = flat // n, flat % n
    row, rel = _sorted_lists(row, d.reshape(-1)[flat], g_ids[col] == q_ids[row])
    return _list_values(row, rel, r, ks)


def _sorted_lists(row: Tensor, vals: Tensor, rel: Tensor) -> tuple[Tensor, Tensor]:
    """Listed items sorted by (row, distance, irrelevant first): the sorted ``(row, rel)``.

    float32 distances are non-negative, so their bits sort like them: one int64 key
    ``row << 32 | bits << 1 | rel`` sorts everything at once. float64 takes three stable
    sorts.
    """
    if vals.dtype == torch.float32:
        bits = vals.view(torch.int32).long() & 0x7FFFFFFF  # (T,) the sign of -0.0 dropped
        key = ((row << 32) | (bits << 1) | rel.long()).sort().values  # (T,)
        return key >> 32, (key & 1).bool()
    perm = torch.argsort(rel.to(torch.uint8), stable=True)  # (T,) irrelevant first
    perm = perm[torch.argsort(vals[perm], stable=True)]
    perm = perm[torch.argsort(row[perm], stable=True)]
    return row[perm], rel[perm]


def _list_values(row: Tensor, rel: Tensor, r: Tensor, ks: Sequence[int]) -> Tensor:
    """(C, 3 + len(ks)) per-query P@1, R-precision, MAP@R, Recall@K from sorted lists.

    Args:
        row: (T,) query of each listed item, ascending; within a query its items come nearest
            first, irrelevant before relevant at equal distance, so a relevant item's
            position in its query's list is its worst-case rank.
        rel: (T,) whether each listed item is relevant.
        r: (C,) relevant items per query.
        ks: the K of Recall@K.

    Every item at least as near as the query's ``max(R, max K)``-th nearest must be listed:
    relevant items left out then rank past every cut-off, and a query with no relevant item
    listed scores 0.
    """
    c, dev = len(r), row.device
    size = torch.bincount(row, minlength=c)  # (C,)
    rank = torch.arange(1, len(row) + 1, device=dev) - (size.cumsum(0) - size)[row]  # (T,)
    hits = torch.zeros(c, dtype=torch.long, device=dev).index_add_(0, row, rel.long())  # (C,)
    order = rel.long().cumsum(0) - (hits.cumsum(0) - hits)[row]  # (T,)
    row, rank, order = row[rel], rank[rel], order[rel]  # (P,) the listed relevant items
    first = torch.full((c,), _NEVER, device=dev).scatter_reduce(0, row, rank, "amin")  # (C,)
    within = (rank <= r[row]).double()  # (P,)
    rf = r.clamp_min(1).double()  # (C,)
    zero = torch.zeros(c, dtype=torch.float64, device=dev)
    cols = [
        (first == 1).double(),
        zero.index_add(0, row, within) / rf,
        zero.index_add(0, row, order.double() / rank.double() * within) / rf,
        *[(first <= k).double() for k in ks],
    ]
    return torch.stack(cols, 1)
