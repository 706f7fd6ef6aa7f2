"""The faiss backend (:mod:`tripletlab.search.faiss_backend`): flat equals exact, HNSW and
IVF recall and their search parameters, IVF training, faiss not installed."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import needs_faiss
from search_helpers import DISTANCES, faiss_config, gaussian, make_index
from tolerances import assert_distances_close, assert_same_neighbours, gram_error, order_keys

from tripletlab.search import EmbeddingIndex, IndexConfig, SearchError, default_nlist


@needs_faiss
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_flat_equals_exact(distance: str, seed: int) -> None:
    x, y = gaussian(300, 12, seed)
    queries = gaussian(20, 12, seed + 7)[0]
    exact = make_index(x, y, IndexConfig(distance=distance)).search(queries, 10)  # type: ignore[arg-type]
    flat = make_index(x, y, faiss_config("flat", distance)).search(queries, 10)
    # faiss's float32 kernel against torch's: equal up to the Gram identity's rounding, the
    # same rows wherever two items are further apart than that
    error = gram_error(queries, x, distance=distance)
    assert_distances_close(flat.distances, exact.distances, distance, error)
    assert_same_neighbours(flat.indices, exact.indices, order_keys(queries, x, distance), error)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True))
    return hits / exact.numel()


@needs_faiss
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_hnsw_recall_at_10(distance: str) -> None:
    x, y = gaussian(3000, 16, 0)
    queries = gaussian(200, 16, 1)[0]
    exact = make_index(x, y, IndexConfig(distance=distance)).search(queries, 10)  # type: ignore[arg-type]
    hnsw = make_index(x, y, faiss_config("hnsw", distance))
    assert recall_at_k(hnsw.search(queries, 10).indices, exact.indices) >= 0.95
    hnsw.set_search_parameters(ef_search=10)  # a narrower search finds fewer
    assert hnsw.config.ef_search == 10
    assert recall_at_k(hnsw.search(queries, 10).indices, exact.indices) < 0.95


@needs_faiss
def test_ivf() -> None:
    x, y = gaussian(2000, 8, 0)
    queries = gaussian(50, 8, 1)[0]
    exact = make_index(x, y).search(queries, 10)
    ivf = make_index(x, y, faiss_config("ivf"))
    assert ivf.config.nlist == default_nlist(2000) == 45
    all_lists = make_index(x, y, faiss_config("ivf", nlist=20, nprobe=20))  # every list: exact
    r = all_lists.search(queries, 10)
    error = gram_error(queries, x)  # faiss's kernel against torch's, as for flat
    assert_same_neighbours(r.indices, exact.indices, order_keys(queries, x), error)
    assert_distances_close(r.distances, exact.distances, "euclidean", error)
    ivf.set_search_parameters(nprobe=1)
    r = ivf.search(queries, 10)
    assert recall_at_k(r.indices, exact.indices) < 1.0
    assert bool((r.distances[:, 1:] >= r.distances[:, :-1]).all())
    assert default_nlist(10) == 1 and default_nlist(1_000_000) == 1000


@needs_faiss
def test_ivf_with_too_few_vectors_to_train() -> None:
    x, y = gaussian(100, 4, 0)
    with pytest.raises(
        SearchError, match=r"^an IVF index with nlist=10 needs at least 390 vectors"
    ):
        make_index(x, y, faiss_config("ivf", nlist=10))


def test_faiss_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    with pytest.raises(SearchError, match=r"pip install 'tripletlab\[faiss\]'"):
        EmbeddingIndex(4, faiss_config("flat"))
    make_index(*gaussian(5, 4, 0)).search(torch.zeros(1, 4), 1)  # exact needs no faiss
