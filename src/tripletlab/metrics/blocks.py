"""Chunked distance blocks, the one computation every metric here is made of.

Queries are taken a chunk at a time (``BLOCK`` elements per (chunk, N) block unless the
caller gives ``chunk``), and each chunk's distances to the gallery are built in place in one
(C, N) tensor with the formulas of :func:`tripletlab.distances.pairwise_distances`: never an
N x N matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.distances import Distance

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
