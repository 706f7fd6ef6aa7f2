"""Nearest-neighbour search over stored embeddings, with calibrated "known or unknown" matching.

:class:`EmbeddingIndex` holds embeddings with their labels and ids and answers k-NN queries,
smaller distance is closer (``euclidean``, ``sqeuclidean`` or ``cosine = 1 - cos``, as in
:mod:`tripletlab.distances`). Backends:

- ``exact`` (default): torch, through :func:`tripletlab.metrics.exact_search`: blocks of
  queries against blocks of gallery rows with a running top k (one block of 2**21 scores by
  default, never a Q x N matrix), on squared norms (or unit rows, for cosine) computed once
  at each add and recomputed at load.
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

The modules, one concept each (every public name is importable from here):

- :mod:`~tripletlab.search.config`: :class:`IndexConfig` and :func:`default_nlist`, the
  backend choices, the errors (:class:`SearchError`, :class:`IndexFileError`,
  :class:`FaissMissing`) and the argument checks the others share.
- :mod:`~tripletlab.search.faiss_backend`: :func:`import_faiss` and the faiss structures
  (flat, HNSW, IVF): how each is built, its search-time parameters, its distances.
- :mod:`~tripletlab.search.results`: :class:`SearchResult`, :class:`MatchResult` and the
  (distance, row) order every backend's neighbours are put in.
- :mod:`~tripletlab.search.index`: :class:`EmbeddingIndex`: add, search, calibrate, match,
  open-set scoring.
- :mod:`~tripletlab.search.files`: the index file above (:data:`INDEX_KIND`,
  :data:`FORMAT_VERSION`), what :meth:`EmbeddingIndex.save` and :meth:`EmbeddingIndex.load`
  run, written atomically.
"""

from tripletlab.search.config import (
    BACKENDS,
    FAISS_INDEXES,
    MIN_POINTS_PER_LIST,
    Backend,
    FaissIndex,
    FaissMissing,
    IndexConfig,
    IndexFileError,
    SearchError,
    default_nlist,
)
from tripletlab.search.faiss_backend import import_faiss
from tripletlab.search.files import FORMAT_VERSION, INDEX_KIND
from tripletlab.search.index import EmbeddingIndex
from tripletlab.search.results import MatchResult, SearchResult

__all__ = [
    "BACKENDS",
    "FAISS_INDEXES",
    "FORMAT_VERSION",
    "INDEX_KIND",
    "MIN_POINTS_PER_LIST",
    "Backend",
    "EmbeddingIndex",
    "FaissIndex",
    "FaissMissing",
    "IndexConfig",
    "IndexFileError",
    "MatchResult",
    "SearchError",
    "SearchResult",
    "default_nlist",
    "import_faiss",
]
