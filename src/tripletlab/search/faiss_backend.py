"""The faiss backend of :class:`~tripletlab.search.EmbeddingIndex`: :func:`import_faiss` and,
per ``faiss_index`` (``flat``, ``hnsw``, ``ivf``), how the structure is built and which
search-time parameters it takes; cosine is the inner product of L2-normalised rows, reported
as ``1 - cos``, Euclidean the square root of faiss's squared L2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tripletlab import faiss_adapter
from tripletlab.search.config import (
    MIN_POINTS_PER_LIST,
    FaissMissing,
    IndexConfig,
    SearchError,
    default_nlist,
)


def import_faiss() -> Any:
    """The faiss module (:func:`tripletlab.faiss_adapter.import_faiss`), or a one-line
    :class:`FaissMissing` (a :class:`SearchError`) saying how to install it."""
    try:
        return faiss_adapter.import_faiss("the exact backend")
    except faiss_adapter.FaissMissing as err:
        raise FaissMissing(f"the faiss backend {str(err).removeprefix('this ')}") from None


def _faiss_flat(faiss: Any, dim: int, metric: int, config: IndexConfig, rows: np.ndarray) -> Any:
    return faiss.IndexFlat(dim, metric)


def _faiss_hnsw(faiss: Any, dim: int, metric: int, config: IndexConfig, rows: np.ndarray) -> Any:
    index = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
    index.hnsw.efConstruction = config.ef_construction
    return index


def _faiss_ivf(faiss: Any, dim: int, metric: int, config: IndexConfig, rows: np.ndarray) -> Any:
    nlist = config.nlist or default_nlist(len(rows))
    need = nlist * MIN_POINTS_PER_LIST
    if len(rows) < need:
        raise SearchError(
            f"an IVF index with nlist={nlist} needs at least {need} vectors to train "
            f"({MIN_POINTS_PER_LIST} per list), got {len(rows)}; lower --nlist to "
            f"{max(1, len(rows) // MIN_POINTS_PER_LIST)} or use --faiss-index flat or hnsw"
        )
    index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, nlist, metric)
    index.train(rows)
    return index


#: faiss structure per ``faiss_index``: ``(faiss, dim, metric, config, first rows) -> index``.
_FAISS_BUILDERS: dict[str, Callable[[Any, int, int, IndexConfig, np.ndarray], Any]] = {
    "flat": _faiss_flat,
    "hnsw": _faiss_hnsw,
    "ivf": _faiss_ivf,
}
#: Search-time parameters per ``faiss_index``, set through ``faiss.ParameterSpace``.
_FAISS_SEARCH_PARAMS: dict[str, Callable[[IndexConfig], dict[str, int]]] = {
    "flat": lambda c: {},
    "hnsw": lambda c: {"efSearch": c.ef_search},
    "ivf": lambda c: {"nprobe": c.nprobe},
}
