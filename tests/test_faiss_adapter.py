"""The one faiss adapter (:mod:`tripletlab.faiss_adapter`): scores back to distances against
the distances module, rows, and the one-line error without faiss (for metrics and search)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import needs_faiss

from tripletlab.distances import pairwise_distances
from tripletlab.faiss_adapter import FaissMissing, faiss_distances, faiss_rows, flat_index
from tripletlab.search.config import SearchError
from tripletlab.search.faiss_backend import import_faiss


@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_scores_become_distances(distance: str) -> None:
    g = torch.Generator().manual_seed(0)
    q, x = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g)
    qr, xr = faiss_rows(q, distance), faiss_rows(x, distance)  # type: ignore[arg-type]
    assert qr.dtype == np.float32 and qr.flags["C_CONTIGUOUS"]
    # what faiss returns, computed in float64: inner products or squared L2
    a, b = qr.astype(np.float64), xr.astype(np.float64)
    raw = a @ b.T if distance == "cosine" else ((a[:, None] - b[None]) ** 2).sum(-1)
    got = faiss_distances(raw.astype(np.float32), distance)  # type: ignore[arg-type]
    want = pairwise_distances(q.double(), x.double(), distance=distance)  # type: ignore[arg-type]
    # float32 rounding of a sum of 8 products of values of magnitude ~3: well under 1e-4
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    assert bool((got >= 0).all())


def test_without_faiss_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(FaissMissing, match=r"pip install 'tripletlab\[faiss\]' \(or use the torch"):
        flat_index(torch.zeros(2, 3), "euclidean")
    with pytest.raises(SearchError, match=r"^the faiss backend needs faiss: pip install") as info:
        import_faiss()
    assert "\n" not in str(info.value)


@needs_faiss
def test_flat_index_finds_the_nearest() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    raw, idx = flat_index(x, "euclidean").search(faiss_rows(x[:1], "euclidean"), 3)
    assert idx.tolist() == [[0, 2, 1]]
    assert faiss_distances(raw, "euclidean").tolist() == [[0.0, 1.0, 5.0]]
