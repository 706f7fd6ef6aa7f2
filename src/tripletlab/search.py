"""Nearest-neighbour search over stored embeddings, with calibrated "known or unknown" matching.

:class:`EmbeddingIndex` holds embeddings with their labels and ids and answers k-NN queries,
smaller distance is closer (``euclidean``, ``sqeuclidean`` or ``cosine = 1 - cos``, as in
:mod:`tripletlab.distances`). Backends:

- ``exact`` (default): torch, through :func:`tripletlab.metrics.nearest_neighbors`, a chunk of
  queries at a time (never a Q x N matrix beyond a chunk of 2**24 distances).
- ``faiss`` (optional, ``pip install 'tripletlab[faiss]'``), ``faiss_index``:
  ``flat`` (exact), ``hnsw`` (Malkov and Yashunin, "Efficient and robust approximate nearest
  neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018; ``hnsw_m``,
  ``ef_construction``, ``ef_search``) or ``ivf`` (inverted lists over a k-means coarse
  quantiser, ``nlist`` lists of which ``nprobe`` are searched; trained on the vectors of the
  first :meth:`EmbeddingIndex.add`). Cosine is the inner product of L2-normalised vectors,
  reported as ``1 - cos``; Euclidean is the square root of faiss's squared L2.

:meth:`EmbeddingIndex.calibrate` chooses distance thresholds on a labelled set (see
:mod:`tripletlab.calibration` for the precise semantics); :meth:`EmbeddingIndex.match` then
labels a query with its nearest item's label when it is within the threshold, else -1
("unknown").

The index file (:meth:`EmbeddingIndex.save`, :meth:`EmbeddingIndex.load`) is one ``.npz``
read with ``allow_pickle=False``, so loading never runs code: ``vectors`` (N, D) float32 as
added (exact backend; empty for faiss), ``faiss`` (uint8, the bytes of
``faiss.serialize_index``: the structure is stored, not rebuilt, so an HNSW graph or trained
IVF lists load as they were built), ``labels`` (N,) int64, ``ids`` (N,) unicode, ``classes``
(C,) unicode, the calibration curve (``calibration_*`` arrays) and ``meta``, a JSON string:
``kind`` ("tripletlab-index"), ``format_version``, ``dim``, ``size``, ``config`` (the
:class:`IndexConfig`), ``calibration`` (counts and operating points, or null) and ``source``
(what the embeddings file said about its origin: run, dataset, split). Every write is atomic.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.calibration import (
    DEFAULT_PRECISIONS,
    MAX_F1,
    Calibration,
    OpenSetRates,
    calibrate_matches,
    calibration_from_state,
    calibration_state,
    check_precisions,
    open_set_rates,
)
from tripletlab.distances import DISTANCES, Distance
from tripletlab.metrics import nearest_neighbors

Backend = Literal["exact", "faiss"]
BACKENDS: tuple[str, ...] = get_args(Backend)
FaissIndex = Literal["flat", "hnsw", "ivf"]
FAISS_INDEXES: tuple[str, ...] = get_args(FaissIndex)

INDEX_KIND = "tripletlab-index"
FORMAT_VERSION = 1
#: faiss's k-means asks for at least this many training vectors per IVF list.
MIN_POINTS_PER_LIST = 39


class SearchError(ValueError):
    """A search, calibration or index-file problem; the message says what to do."""


class IndexFileError(SearchError):
    """An index file that is missing, corrupt or not an index."""


class FaissMissing(SearchError):
    """The faiss backend was asked for but faiss is not installed."""


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SearchError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")


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
        _check_choice("distance", self.distance, DISTANCES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("faiss index", self.faiss_index, FAISS_INDEXES)
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


# ------------------------------------------------------------------------------ faiss


def import_faiss() -> Any:
    """The faiss module, or a one-line :class:`SearchError` saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise FaissMissing(
            "the faiss backend needs faiss: pip install 'tripletlab[faiss]' (or use the exact "
            "backend)"
        ) from None
    return faiss


def _faiss_rows(x: Tensor, distance: Distance) -> np.ndarray:
    """(N, D) float32 C-contiguous numpy rows; unit rows for cosine (inner product)."""
    x = x.detach().to("cpu", torch.float32)
    return np.ascontiguousarray((F.normalize(x, dim=1) if distance == "cosine" else x).numpy())


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


def _faiss_distances(raw: np.ndarray, distance: Distance) -> Tensor:
    """faiss's similarities/squared L2 -> tripletlab distances; missing hits (faiss's
    ``-inf``/``inf`` fill for index -1) become ``inf``."""
    d = torch.from_numpy(raw).to(torch.float32)
    d = (1.0 - d).clamp(0.0, 2.0) if distance == "cosine" else d.clamp_min(0.0)
    return d.sqrt() if distance == "euclidean" else d


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class SearchResult:
    """The k nearest items of each query, nearest first.

    Attributes:
        distances: (Q, k) float32.
        indices: (Q, k) int64 rows of the index; -1 where an approximate backend found fewer
            than k items (distance ``inf``, label -1, id ``""``).
        labels: (Q, k) int64 labels of those items (-1: unlabelled or missing).
        ids: Q tuples of k item ids.
    """

    distances: Tensor
    indices: Tensor
    labels: Tensor
    ids: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class MatchResult:
    """Each query's nearest item, accepted when within ``threshold``.

    Attributes:
        labels: (Q,) int64, the nearest item's label when ``distance <= threshold``, else -1
            ("unknown").
        distances: (Q,) float32 distance to the nearest item.
        indices: (Q,) int64 row of the nearest item (also when rejected).
        threshold: the distance threshold applied.
    """

    labels: Tensor
    distances: Tensor
    indices: Tensor
    threshold: float


def _sort_ties(d: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ordered by (distance, index): the same order from every backend; -1 last."""
    key = torch.where(i < 0, torch.iinfo(torch.int64).max, i)
    by_index = torch.sort(key, dim=1, stable=True).indices  # (Q, k)
    d, i = d.gather(1, by_index), i.gather(1, by_index)
    by_distance = torch.sort(d, dim=1, stable=True).indices  # (Q, k)
    return d.gather(1, by_distance), i.gather(1, by_distance)


# ------------------------------------------------------------------------------ the index


class EmbeddingIndex:
    """Embeddings with labels and ids, searchable, calibratable and saved as one file.

    Args:
        dim: the embedding dimension D.
        config: distance and backend (default: exact Euclidean).
        classes: class names indexed by the labels (may be empty).
        meta: JSON-serialisable facts about the embeddings' origin (run, dataset, split).

    Raises:
        SearchError: ``dim < 1``; the faiss backend without faiss installed.
    """

    def __init__(
        self,
        dim: int,
        config: IndexConfig | None = None,
        *,
        classes: Sequence[str] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        _check_positive("dim", dim)
        self.config = config if config is not None else IndexConfig()
        self.dim = dim
        self.classes = tuple(classes)
        self.meta = dict(meta or {})
        self.calibration: Calibration | None = None
        self._vectors = torch.empty(0, dim)  # (N, D) float32, exact backend only
        self._faiss: Any = None  # the faiss structure, made by the first add
        self._labels = torch.empty(0, dtype=torch.long)
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}
        if self.config.backend == "faiss":
            import_faiss()

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"EmbeddingIndex({len(self)} x {self.dim}, {self.config.describe()})"

    @property
    def labels(self) -> Tensor:
        """(N,) int64 labels of the items (a copy)."""
        return self._labels.clone()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    # -------------------------------------------------------------------------- checks

    def _check_embeddings(self, x: Tensor, what: str) -> Tensor:
        """(n, D) float32 CPU copy of ``x``, or a one-line :class:`SearchError`."""
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.dtype.is_floating_point:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise SearchError(
                f"{what} must be a 2-D float tensor (n, {self.dim}), got {shape}; pass one "
                "embedding per row"
            )
        if x.shape[1] != self.dim:
            raise SearchError(
                f"{what} have dimension {x.shape[1]} but the index holds {self.dim}-d "
                "embeddings; embed them with the model the index was built from"
            )
        x = x.detach().to("cpu", torch.float32).contiguous()
        bad = int((~torch.isfinite(x)).any(1).sum()) if x.numel() else 0
        if bad:
            raise SearchError(
                f"{what} hold NaN or Inf in {bad} of {x.shape[0]} rows; drop them or fix the "
                "model that made them"
            )
        return x

    def _check_labels(self, labels: Tensor, n: int, what: str) -> Tensor:
        if (
            not isinstance(labels, Tensor)
            or labels.dim() != 1
            or labels.shape[0] != n
            or labels.dtype.is_floating_point
            or labels.dtype == torch.bool
        ):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise SearchError(
                f"{what} must be an integer tensor of shape ({n},), got {shape}; pass one "
                "label per row (-1 for unlabelled)"
            )
        if labels.numel() and int(labels.min()) < -1:
            raise SearchError(f"{what} must be >= -1 (-1 = unlabelled), got {int(labels.min())}")
        return labels.to("cpu", torch.int64)

    def _check_not_empty(self) -> None:
        if not len(self):
            raise SearchError(
                "the index is empty; add embeddings first (tripletlab index build "
                "--embeddings FILE.npz --out INDEX)"
            )

    # ---------------------------------------------------------------------------- build

    def add(self, embeddings: Tensor, labels: Tensor, ids: Sequence[str]) -> None:
        """Add items. Clears a calibration (its thresholds were chosen without them).

        Args:
            embeddings: (N, D) floats (stored as float32).
            labels: (N,) integers, -1 for unlabelled.
            ids: N strings, unique within the index.

        Raises:
            SearchError: wrong shapes or dimension, NaN/Inf, duplicate ids, an IVF index
                whose first add has too few vectors to train.

        Corner cases:
            N = 0 is a no-op. An IVF index trains its lists on the first non-empty add;
            later adds go to the lists trained then.
        """
        x = self._check_embeddings(embeddings, "embeddings")
        y = self._check_labels(labels, x.shape[0], "labels")
        ids = [str(s) for s in ids]
        if len(ids) != x.shape[0]:
            raise SearchError(f"{x.shape[0]} embeddings but {len(ids)} ids; pass one id per row")
        new: dict[str, int] = {}
        for row, s in enumerate(ids, start=len(self)):
            if s in new or s in self._positions:
                raise SearchError(f"duplicate id {s!r}; ids must name each item once")
            new[s] = row
        if x.shape[0] == 0:
            return
        if self.config.backend == "exact":
            # the index's own copy: the caller's tensor may change after the add
            self._vectors = torch.cat([self._vectors, x]) if len(self) else x.clone()
        else:
            faiss = import_faiss()
            rows = _faiss_rows(x, self.config.distance)
            if self._faiss is None:
                cosine = self.config.distance == "cosine"
                metric = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
                builder = _FAISS_BUILDERS[self.config.faiss_index]
                self._faiss = builder(faiss, self.dim, metric, self.config, rows)
                if self.config.faiss_index == "ivf":
                    self.config = replace(self.config, nlist=int(self._faiss.nlist))
            self._faiss.add(rows)
        self._labels = torch.cat([self._labels, y])
        self._ids.extend(ids)
        self._positions.update(new)
        self.calibration = None

    def structure_bytes(self) -> int:
        """Bytes of what is searched: the (N, D) float32 vectors (exact), or faiss's
        serialised structure (its vectors and graph or lists, as held in memory)."""
        if self._faiss is None:
            return int(self._vectors.numel()) * 4
        return int(import_faiss().serialize_index(self._faiss).size)

    def set_search_parameters(
        self, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> None:
        """Change HNSW's ``ef_search`` or IVF's ``nprobe`` (no rebuild)."""
        self.config = replace(
            self.config,
            ef_search=self.config.ef_search if ef_search is None else ef_search,
            nprobe=self.config.nprobe if nprobe is None else nprobe,
        )

    # --------------------------------------------------------------------------- search

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(Q, k) distances and rows from the backend, ordered by (distance, row)."""
        if self.config.backend == "exact":
            d, i = nearest_neighbors(q, self._vectors, k, distance=self.config.distance)
            return _sort_ties(d, i)
        faiss = import_faiss()
        params = _FAISS_SEARCH_PARAMS[self.config.faiss_index](self.config)
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self._faiss, name, value)
        raw, idx = self._faiss.search(_faiss_rows(q, self.config.distance), k)
        i = torch.from_numpy(idx).long()  # (Q, k)
        d = _faiss_distances(raw, self.config.distance).masked_fill(i < 0, math.inf)
        return _sort_ties(d, i)

    def _labels_at(self, i: Tensor) -> Tensor:
        return torch.where(i >= 0, self._labels[i.clamp_min(0)], -1)

    def search(self, queries: Tensor, k: int) -> SearchResult:
        """The ``min(k, N)`` nearest items of each query, nearest first.

        Args:
            queries: (Q, D) floats, D the index's dimension.
            k: neighbours per query, >= 1; more than N gives N columns.

        Returns:
            A :class:`SearchResult` with (Q, min(k, N)) tensors.

        Raises:
            SearchError: a query of the wrong shape or dimension, NaN/Inf, ``k < 1``, an
                empty index.

        Corner cases:
            Items at the same distance are ordered by row, but which of several items tied
            at the k-th distance is returned depends on the backend. Q = 0 gives empty
            results. faiss ``hnsw``/``ivf`` are approximate and may miss neighbours (or, for
            ``ivf`` with few lists probed, return fewer than k: index -1).
        """
        q = self._check_embeddings(queries, "queries")
        _check_positive("k", k)
        self._check_not_empty()
        k = min(k, len(self))
        if q.shape[0] == 0:
            d, i = torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        else:
            d, i = self._search(q, k)
        ids = tuple(tuple(self._ids[j] if j >= 0 else "" for j in row) for row in i.tolist())
        return SearchResult(d, i, self._labels_at(i), ids)

    def _nearest(self, q: Tensor, query_ids: Sequence[str] | None) -> tuple[Tensor, Tensor]:
        """(Q,) distance and row of each query's nearest item, skipping the item whose id
        is the query's (a self-match); ``inf`` and -1 when nothing else is there."""
        own = torch.tensor([self._positions.get(str(s), -1) for s in query_ids or ()])
        exclude = own.numel() > 0 and bool((own >= 0).any())
        k = min(2 if exclude else 1, len(self))
        if q.shape[0] == 0:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        d, i = self._search(q, k)  # (Q, k)
        if exclude:
            is_self = i == own[:, None]  # ids are unique: at most one per row
            d, i = d.masked_fill(is_self, math.inf), i.masked_fill(is_self, -1)
        first = torch.argmin(d, dim=1, keepdim=True)  # the first minimum: nearest non-self
        return d.gather(1, first)[:, 0], i.gather(1, first)[:, 0]

    # ---------------------------------------------------------------------- calibration

    def calibrate(
        self,
        queries: Tensor,
        labels: Tensor,
        *,
        ids: Sequence[str] | None = None,
        precisions: Sequence[float] = DEFAULT_PRECISIONS,
    ) -> Calibration:
        """Choose and store distance thresholds on a labelled set (:mod:`tripletlab.calibration`).

        Args:
            queries: (Q, D) calibration embeddings.
            labels: (Q,) their labels, in the index's label space, each >= 0.
            ids: Q ids; a query whose id is in the index does not match itself (calibrating
                on the indexed set, or on part of it, is leave-one-out).
            precisions: target precisions, each in (0, 1].

        Returns:
            The calibration, also stored in ``self.calibration`` (and saved by :meth:`save`).

        Raises:
            SearchError / ValueError: bad shapes, an empty index, unlabelled queries, a single
                class, no query of an indexed class, a target outside (0, 1].
        """
        check_precisions(precisions)  # before the search
        q = self._check_embeddings(queries, "calibration embeddings")
        y = self._check_labels(labels, q.shape[0], "calibration labels")
        if ids is not None and len(ids) != q.shape[0]:
            raise SearchError(f"{q.shape[0]} calibration embeddings but {len(ids)} ids")
        self._check_not_empty()
        d, i = self._nearest(q, ids)
        present = torch.unique(self._labels[self._labels >= 0])
        cal = calibrate_matches(d, self._labels_at(i), y, torch.isin(y, present), precisions)
        self.calibration = cal
        return cal

    def threshold(self, threshold: str | float = MAX_F1) -> float:
        """A stored threshold by name (``max_f1``, ``precision_0.9``, ...) or a number."""
        if not isinstance(threshold, str):
            return float(threshold)
        if self.calibration is None:
            raise SearchError(
                "the index is not calibrated; run 'tripletlab calibrate INDEX --embeddings "
                "CAL.npz' (or index.calibrate) or pass a distance threshold"
            )
        point = self.calibration.point(threshold)
        if point.threshold is None:
            raise SearchError(
                f"{threshold} was not reachable on the calibration set; use {MAX_F1} or a "
                "lower target precision"
            )
        return point.threshold

    def match(self, queries: Tensor, threshold: str | float = MAX_F1) -> MatchResult:
        """The nearest item's label when within ``threshold``, else -1 ("unknown").

        Args:
            queries: (Q, D).
            threshold: a stored operating point's name or a distance.
        """
        t = self.threshold(threshold)
        q = self._check_embeddings(queries, "queries")
        self._check_not_empty()
        d, i = self._nearest(q, None)
        labels = torch.where(d <= t, self._labels_at(i), -1)
        return MatchResult(labels, d, i, t)

    def open_set(self, queries: Tensor, labels: Tensor) -> tuple[OpenSetRates, ...]:
        """Rejection of unseen-class and acceptance of known-class queries at each stored
        threshold (:func:`tripletlab.calibration.open_set_rates`); a query is "known" when
        its label occurs in the index."""
        if self.calibration is None:
            raise SearchError("the index is not calibrated; calibrate it before open-set scoring")
        q = self._check_embeddings(queries, "queries")
        y = self._check_labels(labels, q.shape[0], "query labels")
        self._check_not_empty()
        d, i = self._nearest(q, None)
        known = torch.isin(y, torch.unique(self._labels[self._labels >= 0]))
        return open_set_rates(d, self._labels_at(i), y, known, self.calibration.points)

    # -------------------------------------------------------------------------- storage

    def save(self, path: Path) -> Path:
        """Write the index to ``path`` (the format is in the module docstring) atomically."""
        faiss_bytes = np.zeros(0, dtype=np.uint8)
        if self._faiss is not None:
            faiss_bytes = np.asarray(import_faiss().serialize_index(self._faiss), dtype=np.uint8)
        cal_arrays: dict[str, np.ndarray] = {}
        cal_info = None
        if self.calibration is not None:
            cal_arrays, cal_info = calibration_state(self.calibration)
        meta = {
            "kind": INDEX_KIND,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "size": len(self),
            "config": asdict(self.config),
            "calibration": cal_info,
            "source": self.meta,
        }
        arrays = {
            "vectors": self._vectors.numpy(),
            "faiss": faiss_bytes,
            "labels": self._labels.numpy(),
            "ids": np.array(self._ids, dtype=np.str_).reshape(len(self._ids)),
            "classes": np.array(self.classes, dtype=np.str_).reshape(len(self.classes)),
            "meta": np.array(json.dumps(meta)),
            **cal_arrays,
        }
        return _atomic_save_npz(Path(path), arrays)

    @classmethod
    def load(cls, path: Path) -> EmbeddingIndex:
        """Read an index written by :meth:`save` (no code runs).

        Raises:
            IndexFileError: no such file; a corrupt file or not an index; a newer format.
            SearchError: a faiss index without faiss installed.
        """
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(
                f"no index file at {path}; build one with 'tripletlab index build "
                f"--embeddings FILE.npz --out {path}'"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["meta"]))
            if not isinstance(meta, dict) or meta.get("kind") != INDEX_KIND:
                raise IndexFileError(
                    f"{path} is not a tripletlab index (an embeddings file? build an index "
                    f"from it with 'tripletlab index build --embeddings {path} --out INDEX')"
                )
            if int(meta["format_version"]) > FORMAT_VERSION:
                raise IndexFileError(
                    f"{path} has index format {meta['format_version']}, newer than this "
                    f"tripletlab reads ({FORMAT_VERSION}); upgrade tripletlab"
                )
            index = cls._from_state(arrays, meta)
        except (IndexFileError, FaissMissing):
            raise
        except SearchError as err:
            raise IndexFileError(f"{path} is corrupt ({err}); build the index again") from None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, zipfile.BadZipFile) as err:
            first = (str(err).strip().splitlines() or [""])[0][:160]
            raise IndexFileError(
                f"{path} is corrupt or not a tripletlab index ({type(err).__name__}: {first}); "
                "build the index again with 'tripletlab index build'"
            ) from None
        return index

    @classmethod
    def _from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> EmbeddingIndex:
        config = IndexConfig(**meta["config"])
        dim, size = int(meta["dim"]), int(meta["size"])
        index = cls(dim, config, classes=[str(s) for s in arrays["classes"]], meta=meta["source"])
        labels = torch.from_numpy(np.array(arrays["labels"], dtype=np.int64))
        ids = [str(s) for s in arrays["ids"].reshape(-1)]
        if labels.shape != (size,) or len(ids) != size or len(set(ids)) != size:
            raise SearchError(f"{size} items but {labels.shape[0]} labels and {len(ids)} ids")
        if config.backend == "exact":
            vectors = torch.from_numpy(np.array(arrays["vectors"], dtype=np.float32))
            if vectors.shape != (size, dim):
                raise SearchError(f"vectors of shape {tuple(vectors.shape)}, not ({size}, {dim})")
            index._vectors = vectors
        elif size:
            structure = import_faiss().deserialize_index(np.array(arrays["faiss"], dtype=np.uint8))
            if int(structure.ntotal) != size or int(structure.d) != dim:
                raise SearchError(
                    f"a faiss structure of {structure.ntotal} x {structure.d}, not {size} x {dim}"
                )
            index._faiss = structure
        index._labels = labels
        index._ids = ids
        index._positions = {s: i for i, s in enumerate(ids)}
        if meta["calibration"] is not None:
            index.calibration = calibration_from_state(arrays, meta["calibration"])
        return index


def _atomic_save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` straight into a temporary file beside ``path``, then a rename (as
    :func:`tripletlab.training.atomic_write_bytes`, without holding the archive in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
