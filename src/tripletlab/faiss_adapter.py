"""The one adapter to faiss (an optional dependency: ``pip install 'tripletlab[faiss]'``),
shared by the metrics' faiss backend (:mod:`tripletlab.metrics.neighbors`) and the search
index (:mod:`tripletlab.search`): importing it with a one-line error, tensors to the float32
rows faiss takes, and faiss's scores back to tripletlab's distances.

faiss searches by squared L2 (the Euclidean forms) or by inner product; cosine distance is
the inner product of L2-normalised rows, reported as ``1 - cos`` (smaller is closer, as
everywhere in tripletlab).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.distances import Distance

__all__ = ["FaissMissing", "faiss_distances", "faiss_rows", "flat_index", "import_faiss"]


class FaissMissing(ImportError):
    """faiss was asked for but is not installed."""


def import_faiss(instead: str = "the torch backend") -> Any:
    """The faiss module, or :class:`FaissMissing` saying how to install it (or to use
    ``instead``)."""
    try:
        import faiss
    except ImportError:
        raise FaissMissing(
            f"this needs faiss: pip install 'tripletlab[faiss]' (or use {instead})"
        ) from None
    return faiss


def faiss_rows(x: Tensor, distance: Distance) -> np.ndarray:
    """(N, D) float32 C-contiguous numpy rows on the CPU; unit rows for cosine."""
    x = x.detach().to("cpu", torch.float32)
    return np.ascontiguousarray((F.normalize(x, dim=1) if distance == "cosine" else x).numpy())


def faiss_distances(raw: np.ndarray, distance: Distance) -> Tensor:
    """faiss's scores (inner products for cosine, squared L2 otherwise) as tripletlab
    distances: ``1 - cos`` clamped to [0, 2], squared Euclidean clamped at 0, or its square
    root. faiss's fill for a missing hit (``-inf``/``inf`` with index -1) becomes ``inf``
    (``1 - (-inf)`` is clamped to 2 for cosine: mask missing hits by their index)."""
    d = torch.from_numpy(np.asarray(raw)).to(torch.float32)
    d = (1.0 - d).clamp(0.0, 2.0) if distance == "cosine" else d.clamp_min(0.0)
    return d.sqrt() if distance == "euclidean" else d


def flat_index(gallery: Tensor, distance: Distance, instead: str = "the torch backend") -> Any:
    """An exact faiss index of ``gallery`` (N, D): inner product of unit rows for cosine,
    L2 for the Euclidean forms."""
    faiss = import_faiss(instead)
    dim = gallery.shape[1]
    index = faiss.IndexFlatIP(dim) if distance == "cosine" else faiss.IndexFlatL2(dim)
    index.add(faiss_rows(gallery, distance))
    return index
