"""How an index measures and searches (:class:`IndexConfig`), the backend choices, the
errors of :mod:`tripletlab.search` and the argument checks its modules share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from tripletlab.checks import check_choice
from tripletlab.distances import DISTANCES, Distance

Backend = Literal["exact", "faiss"]
BACKENDS: tuple[str, ...] = get_args(Backend)
FaissIndex = Literal["flat", "hnsw", "ivf"]
FAISS_INDEXES: tuple[str, ...] = get_args(FaissIndex)

#: faiss's k-means asks for at least this many training vectors per IVF list.
MIN_POINTS_PER_LIST = 39


class SearchError(ValueError):
    """A search, calibration or index-file problem; the message says what to do."""


class IndexFileError(SearchError):
    """An index file that is missing, corrupt or not an index."""


class FaissMissing(SearchError):
    """The faiss backend was asked for but faiss is not installed."""


def _check_positive(name: str, value: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class IndexConfig:
    """How an index measures and searches; checked on construction.

    Attributes:
        distance: ``euclidean``, ``sqeuclidean`` or ``cosine``.
        backend: ``exact`` (torch) or ``faiss``.
        faiss_index: ``flat``, ``hnsw`` or ``ivf`` (faiss backend only).
        hnsw_m: HNSW graph degree M (links per node per layer; memory ~ 2 M ints per vector).
        ef_construction: HNSW candidate list while building (quality of the graph).
        ef_search: HNSW candidate list while searching (recall against speed; >= k).
        nlist: IVF lists; ``None``: :func:`default_nlist` of the first add's N.
        nprobe: IVF lists searched per query.
    """

    distance: Distance = "euclidean"
    backend: Backend = "exact"
    faiss_index: FaissIndex = "flat"
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int = 16

    def __post_init__(self) -> None:
        check_choice("distance", self.distance, DISTANCES, error=SearchError)
        check_choice("backend", self.backend, BACKENDS, error=SearchError)
        check_choice("faiss index", self.faiss_index, FAISS_INDEXES, error=SearchError)
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            _check_positive(name, getattr(self, name))
        _check_positive("nlist", self.nlist, optional=True)

    def describe(self) -> str:
        """``exact``, ``faiss flat``, ``faiss hnsw (M=32, efSearch=128)``, ... with the distance."""
        extra: dict[str, str] = {
            "flat": "",
            "hnsw": f" (M={self.hnsw_m}, efConstruction={self.ef_construction}, "
            f"efSearch={self.ef_search})",
            "ivf": f" (nlist={self.nlist or 'auto'}, nprobe={self.nprobe})",
        }
        kind = "exact" if self.backend == "exact" else f"faiss {self.faiss_index}"
        kind += extra[self.faiss_index] if self.backend == "faiss" else ""
        return f"{kind}, {self.distance} distance"


def default_nlist(n: int) -> int:
    """IVF lists for N training vectors: ``sqrt(N)``, at most ``N / 39``, at least 1.

    faiss's guideline is 4 to 16 sqrt(N) lists, but k-means on 2 CPU cores then takes
    minutes at N = 1M (it trains on up to 256 vectors per list); sqrt(N) lists train in
    well under a minute, and ``nprobe`` buys the recall back.
    """
    return max(1, min(round(math.sqrt(n)), n // MIN_POINTS_PER_LIST))
