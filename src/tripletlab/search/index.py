"""The searchable, calibratable set of embeddings, :class:`EmbeddingIndex` (the backends, the
matching rule and the file format are in the :mod:`tripletlab.search` docstring)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from tripletlab.checks import nonfinite_rows
from tripletlab.faiss_adapter import faiss_distances, faiss_rows
from tripletlab.metrics import ExactGallery, exact_gallery, exact_search, extend_gallery
from tripletlab.search.config import IndexConfig, SearchError, _check_positive
from tripletlab.search.faiss_backend import (
    _FAISS_BUILDERS,
    _FAISS_SEARCH_PARAMS,
    import_faiss,
)
from tripletlab.search.files import load_index_file, save_index_file
from tripletlab.search.results import MatchResult, SearchResult, _sort_ties


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
        self._vectors = torch.empty(0, dim)  # (N, D) float32 as added, exact backend only
        # exact backend: what the search needs, computed at add (squared norms or unit rows)
        self._gallery: ExactGallery = exact_gallery(self._vectors, self.config.distance)
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
        bad = nonfinite_rows(x)
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
            self._add_exact(x)
        else:
            faiss = import_faiss()
            rows = faiss_rows(x, self.config.distance)
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

    def _add_exact(self, x: Tensor) -> None:
        """Append the (n, D) float32 rows ``x`` to the exact backend's own copy (the caller's
        tensor may change after the add), computing only the new rows' squared norms (or
        unit rows, for cosine)."""
        self._gallery = extend_gallery(self._gallery, x)
        if self.config.distance == "cosine":  # the unit rows are searched, the vectors kept
            self._vectors = torch.cat([self._vectors, x]) if len(self._vectors) else x.clone()
        else:  # rows [g, |g|^2]: the vectors are a view of them, no second copy
            self._vectors = self._gallery.rows[:, : self.dim]

    def structure_bytes(self) -> int:
        """Bytes of what is held to search: the exact backend's prepared rows (the (N, D)
        vectors with their squared norms, or the unit rows and the vectors as added for
        cosine), or faiss's serialised structure (its vectors and graph or lists, as held
        in memory)."""
        if self._faiss is None:
            rows = self._gallery.rows
            kept = self._vectors.numel() if self.config.distance == "cosine" else 0
            return (int(rows.numel()) + int(kept)) * rows.element_size()
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
            return exact_search(q, self._gallery, k)  # already in (distance, row) order
        faiss = import_faiss()
        params = _FAISS_SEARCH_PARAMS[self.config.faiss_index](self.config)
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self._faiss, name, value)
        raw, idx = self._faiss.search(faiss_rows(q, self.config.distance), k)
        i = torch.from_numpy(idx).long()  # (Q, k)
        d = faiss_distances(raw, self.config.distance).masked_fill(i < 0, math.inf)
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
            Items at the same distance are ordered by row. Of several items tied at the
            k-th distance the exact backend returns the first rows (faiss: its own choice).
            Q = 0 gives empty results. faiss ``hnsw``/``ivf`` are approximate and may miss
            neighbours (or, for ``ivf`` with few lists probed, return fewer than k: index -1).
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
        """A calibrated threshold by name (``max_f1``, ``precision_0.9``: any target, see
        :meth:`~tripletlab.calibration.Calibration.point`) or a number."""
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

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The index as named arrays and a JSON-serialisable header (what :meth:`save`
        writes; :meth:`from_arrays` reads it back)."""
        faiss_bytes = np.zeros(0, dtype=np.uint8)
        if self._faiss is not None:
            faiss_bytes = np.asarray(import_faiss().serialize_index(self._faiss), dtype=np.uint8)
        cal_arrays: dict[str, np.ndarray] = {}
        cal_info = None
        if self.calibration is not None:
            cal_arrays, cal_info = calibration_state(self.calibration)
        header = {
            "dim": self.dim,
            "size": len(self),
            "config": asdict(self.config),
            "calibration": cal_info,
            "source": self.meta,
        }
        arrays = {
            "vectors": self._vectors.contiguous().numpy(),
            "faiss": faiss_bytes,
            "labels": self._labels.numpy(),
            "ids": np.array(self._ids, dtype=np.str_).reshape(len(self._ids)),
            "classes": np.array(self.classes, dtype=np.str_).reshape(len(self.classes)),
            **cal_arrays,
        }
        return arrays, header

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]
    ) -> EmbeddingIndex:
        """The index that :meth:`to_arrays` described.

        Raises:
            SearchError: the arrays disagree with the header (sizes, shapes, unique ids).
        """
        config = IndexConfig(**header["config"])
        dim, size = int(header["dim"]), int(header["size"])
        index = cls(dim, config, classes=[str(s) for s in arrays["classes"]], meta=header["source"])
        labels = torch.from_numpy(np.array(arrays["labels"], dtype=np.int64))
        ids = [str(s) for s in arrays["ids"].reshape(-1)]
        if labels.shape != (size,) or len(ids) != size or len(set(ids)) != size:
            raise SearchError(f"{size} items but {labels.shape[0]} labels and {len(ids)} ids")
        if config.backend == "exact":
            vectors = torch.from_numpy(np.array(arrays["vectors"], dtype=np.float32))
            if vectors.shape != (size, dim):
                raise SearchError(f"vectors of shape {tuple(vectors.shape)}, not ({size}, {dim})")
            index._add_exact(vectors)
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
        if header["calibration"] is not None:
            index.calibration = calibration_from_state(dict(arrays), header["calibration"])
        return index

    def save(self, path: Path) -> Path:
        """Write the index to ``path`` atomically (the format is in the package docstring,
        :mod:`tripletlab.search`)."""
        return save_index_file(path, *self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> EmbeddingIndex:
        """Read an index written by :meth:`save` (no code runs).

        Raises:
            IndexFileError: no such file; a corrupt file or not an index; a newer format.
            SearchError: a faiss index without faiss installed.
        """
        return load_index_file(path, cls.from_arrays)
