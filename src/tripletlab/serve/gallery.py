"""What ``tripletlab serve`` serves, without the web layer: a run's network and an index
(:class:`Gallery`), the checks an uploaded image passes (:func:`read_upload`) and the JSON-ready
answers of every API route.

Every answer comes from :class:`tripletlab.search.EmbeddingIndex` (``search``) and the run's
own embedding mode (:func:`tripletlab.embedding.embed`); an uploaded image is decoded by
:func:`tripletlab.data.read_image_file`, as ``tripletlab search --images`` reads a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tripletlab.calibration import MAX_F1
from tripletlab.checks import check_choice, printable
from tripletlab.data import PATH_FORMS, DataError, read_image_file
from tripletlab.embedding import Progress, embed
from tripletlab.evaluation import DEVICES, LoadedRun, load_run
from tripletlab.inference import embed_run
from tripletlab.io import NpzError, WriteError, atomic_save_npz, file_sha256, load_npz
from tripletlab.plots import Projection, available_projections, project_2d, worst_queries
from tripletlab.search import EmbeddingIndex, IndexConfig, SearchError
from tripletlab.search.commands import (
    ItemImages,
    Threshold,
    build_index,
    parse_threshold,
    resolve_threshold,
)

#: Largest k a request may ask for (``k`` outside 1..MAX_K is a 422).
MAX_K = 100
#: Default upload limit in MB (``--max-upload-mb``).
DEFAULT_MAX_UPLOAD_MB = 10.0
#: Images with more pixels than this are refused as decompression bombs (a 40-megapixel
#: photo passes; Pillow's own warning starts at about 89 megapixels).
MAX_PIXELS = 40_000_000
#: Pillow's names of the formats :func:`tripletlab.data.read_image_file` reads.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "TIFF", "BMP")
#: Side of the largest thumbnail (items are shown at the run's image size up to this).
THUMBNAIL_SIDE = 128
#: Bytes of thumbnails kept in memory (PNGs; least recently used dropped first): a bound on
#: the server's memory whatever the gallery's size or pictures.
THUMBNAIL_CACHE_BYTES = 32 * 1024 * 1024
#: Neighbours per item kept for the per-class panel (leave-one-out).
PANEL_K = 5
#: Items searched per step of the per-class panel's leave-one-out search (its thread).
PANEL_CHUNK = 256
#: Where the index built at start is cached, in the run folder (its map beside it).
INDEX_CACHE = Path("serve") / "index.npz"
#: The ``meta`` entry of a cached index holding what it was built from (:func:`gallery_key`).
KEY_FIELD = "serve_key"

log = logging.getLogger("tripletlab.serve")


class ServeError(ValueError):
    """A user error at start (bad option, unusable run or index): one line, exit status 2."""


class RequestError(ValueError):
    """A bad request: ``status`` (400, 404, 409, 413, 422, 503 while the per-class panel is
    computed) and a one-line reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeConfig:
    """``tripletlab serve``.

    Attributes:
        run: the run folder (its ``checkpoints/best.pt``) whose network embeds uploads.
        index: an index file (``tripletlab index build``); ``None``: one is built at start
            from the run's gallery (the training split of its dataset).
        host, port: where to listen (127.0.0.1 by default: this machine only).
        k: neighbours per query when a request does not say (1..:data:`MAX_K`).
        token: a bearer token every request must carry; ``None``: none needed.
        threshold: the match threshold, a stored name or a distance; ``None``: the index's
            ``max_f1`` when it is calibrated, else no threshold (no verdict).
        device: ``auto``, ``cpu`` or ``cuda``.
        max_upload_mb: larger uploads get 413.
    """

    run: str
    index: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    k: int = 10
    token: str | None = None
    threshold: str | None = None
    device: str = "auto"
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB

    def check(self) -> None:
        """Raise a one-line :class:`ServeError` for a bad setting, before anything loads."""
        if not 1 <= self.k <= MAX_K:
            raise ServeError(f"--k must be between 1 and {MAX_K}, got {self.k}")
        if not 0 <= self.port <= 65535:
            raise ServeError(f"--port must be between 0 and 65535, got {self.port}")
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ServeError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.token is not None and not self.token.strip():
            raise ServeError("--token is empty; give a secret string or leave it out")
        if self.token is not None and not all(
            33 <= ord(c) < 127 and c not in ';,"\\' for c in self.token
        ):
            raise ServeError(
                "--token must be printable ASCII without spaces, quotes, backslashes, ';' or "
                "',' (it travels in a header and a cookie)"
            )
        try:
            check_choice("device", self.device, DEVICES)
        except ValueError as err:
            raise ServeError(str(err)) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds to this machine only (127.0.0.0/8, ::1, localhost)."""
    return host in ("localhost", "::1") or host.startswith("127.")


# ------------------------------------------------------------------------------ uploads


def read_upload(data: bytes, size: int, channels: int, *, max_bytes: int) -> Tensor:
    """An uploaded image as the run reads its images: (channels, size, size) uint8.

    Grey images for a colour run are repeated to three channels and colour images for a grey
    run become luma, as ``tripletlab search --images`` reads files; alpha is dropped.

    Raises:
        RequestError: 413 over ``max_bytes``; 400 for an empty upload, a file that is not a
            PNG, JPEG, GIF, WEBP, TIFF or BMP image, more than :data:`MAX_PIXELS` pixels (a
            decompression bomb), colour channels other than 1 (grey) or 3 (colour), or a
            damaged image.
    """
    if len(data) > max_bytes:
        raise RequestError(
            413, f"the upload is {len(data):,} bytes, over the limit of {max_bytes:,}"
        )
    if not data:
        raise RequestError(400, "the upload is empty; send an image file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, mode, (width, height) = img.format, img.mode, img.size
            bands = [b for b in img.getbands() if b not in ("A", "a")]
    except Image.DecompressionBombError:
        raise RequestError(400, "the image has too many pixels (a decompression bomb)") from None
    except (OSError, ValueError, SyntaxError):
        raise RequestError(
            400, "the upload is not an image (send PNG, JPEG, GIF, WEBP, TIFF or BMP)"
        ) from None
    if kind not in IMAGE_FORMATS:
        raise RequestError(
            400, f"{kind} images are not read; send PNG, JPEG, GIF, WEBP, TIFF or BMP"
        )
    if width * height > MAX_PIXELS:
        raise RequestError(
            400,
            f"the image is {width} x {height} pixels, over {MAX_PIXELS:,} (a decompression "
            "bomb?); send a smaller image",
        )
    if mode != "P" and len(bands) not in (1, 3):
        raise RequestError(
            400,
            f"the image has {len(bands)} colour channels ({mode}); send a grey (1-channel) or "
            "colour (3-channel) image",
        )
    with tempfile.TemporaryDirectory(prefix="tripletlab-upload-") as folder:
        path = Path(folder) / f"upload.{'jpg' if kind == 'MPO' else str(kind).lower()}"
        path.write_bytes(data)
        try:
            return read_image_file(path, size, channels)  # (C, size, size)
        except DataError:
            raise RequestError(400, "the image is damaged or truncated; send it again") from None


# ------------------------------------------------------------------------------ gallery


def _png(image: Tensor) -> bytes:
    """(C, H, W) uint8 as PNG bytes, shrunk to at most :data:`THUMBNAIL_SIDE` a side."""
    array = image.permute(1, 2, 0).numpy()  # (H, W, C)
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if max(picture.size) > THUMBNAIL_SIDE:
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _map_key(vectors: np.ndarray, ids: tuple[str, ...]) -> str:
    """A digest of the indexed items: a cached map is used only for the same items."""
    h = hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    h.update("\n".join(ids).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def gallery_map(vectors: Tensor) -> tuple[np.ndarray, str]:
    """(N, 2) float32 coordinates of the items and the method
    (:func:`tripletlab.plots.project_2d`): UMAP when ``umap-learn`` is installed (the
    ``[umap]`` extra), else PCA; the embedding itself when it is 2-D; zeros below 3 items."""
    n, d = vectors.shape
    method: Projection = "direct" if d == 2 else "pca"
    if d != 2 and "umap" in available_projections(d):
        method = "umap"
    if n < 3 and method != "direct":
        return np.zeros((n, 2), dtype=np.float32), "none"
    return project_2d(vectors, method), method


def class_precision_at_1(labels: Tensor, nearest: Tensor) -> list[tuple[int, int, float]]:
    """Each class's precision@1: the fraction of its items whose nearest other item is of
    their class, worst first (ties by label).

    Args:
        labels: (N,) int64 labels, -1 for unlabelled (left out).
        nearest: (N,) int64 label of each item's nearest other item.

    Returns:
        ``(label, items, precision@1)`` of every class with at least two items (a class of
        one has nothing of its own to find).

    >>> class_precision_at_1(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0]))
    [(0, 2, 0.5), (1, 2, 1.0)]
    """
    y = labels[labels >= 0]
    right = (nearest == labels)[labels >= 0]  # (N',)
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    hits = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, right.double())
    rows = [
        (int(c), int(m), float(h / m))
        for c, m, h in zip(classes.tolist(), counts.tolist(), hits.tolist(), strict=True)
        if m >= 2
    ]
    return sorted(rows, key=lambda r: (r[2], r[0]))


@dataclass
class ClassPanel:
    """Leave-one-out neighbours of every indexed item, for the per-class panel.

    Attributes:
        labels: (N,) int64 labels of the items.
        neighbor_labels, neighbor_distances: (N, k) of each item's k nearest other items.
        per_class: :func:`class_precision_at_1` of the items, worst first.
    """

    labels: Tensor
    neighbor_labels: Tensor
    neighbor_distances: Tensor
    per_class: list[tuple[int, int, float]]


@dataclass
class Gallery:
    """A run's network and an index of items it embedded, answering the API's questions.

    Thread-safe: the model's forward passes and searches run one at a time (a lock), the
    thumbnail cache and the lazily computed map under a lock of its own; the per-class panel
    is computed once in a background thread (:meth:`start_panel`) and never waited for.

    Attributes:
        run: the loaded run.
        index: the searched index.
        vectors: (N, D) float32 of the items (``None`` for a faiss index, which does not keep
            them: no item search, map or panel then).
        items: reads the items' images by id (:class:`~tripletlab.search.commands.ItemImages`).
        threshold: the match threshold, ``None`` without one.
        metrics: the run's ``metrics.json``, ``None`` when it has none.
        map_cache: where the 2-D map is cached (``None``: kept in memory only).
        default_k: neighbours when a request does not say.
        notes: what does not work and why (no thumbnails, no map cache), for the log.
        warnings: what the user should fix (the gallery's index could not be cached).
    """

    run: LoadedRun
    index: EmbeddingIndex
    vectors: Tensor | None
    items: ItemImages
    threshold: Threshold | None
    metrics: dict[str, Any] | None
    map_cache: Path | None
    default_k: int = 10
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _rows: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock)
    _thumbnails: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    _thumbnail_bytes: int = 0
    _map: dict[str, Any] | None = None
    _panel: ClassPanel | None = None
    _panel_failed: tuple[int, str] | None = None
    _panel_thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rows = {s: i for i, s in enumerate(self.index.ids)}

    # -------------------------------------------------------------------------- lookups

    def __len__(self) -> int:
        return len(self.index)

    def row(self, item_id: str) -> int:
        """The row of an indexed item by its id; 404 for any other id."""
        row = self._rows.get(item_id)
        if row is None:
            raise RequestError(404, f"no item {printable(item_id)!r} in the index")
        return row

    def label_name(self, label: int) -> str | None:
        """A label's class name (its number without names); ``None`` for -1 (unlabelled)."""
        if label < 0:
            return None
        classes = self.index.classes
        return classes[label] if label < len(classes) else str(label)

    def thumbnail_url(self, row: int) -> str:
        return f"/api/thumbnails/{row}.png"

    def _check_k(self, k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise RequestError(422, f"k must be between 1 and {MAX_K}, got {k}")
        return k

    def _need_vectors(self, what: str) -> Tensor:
        if self.vectors is None:
            raise RequestError(
                409,
                f"{what} needs the items' vectors, which a faiss index file does not keep; "
                "serve an exact index (tripletlab index build without --faiss-index)",
            )
        return self.vectors

    # --------------------------------------------------------------------------- search

    def embed_upload(self, data: bytes, max_bytes: int) -> Tensor:
        """(1, D) embedding of an uploaded image, the run's embedding mode (see
        :func:`read_upload` for the checks)."""
        c, size, _ = self.run.image_shape
        image = read_upload(data, size, c, max_bytes=max_bytes)[None]  # (1, C, H, W)
        with self._lock:
            vector = embed(
                self.run.model, image, self.run.stats, self.run.device, self.run.embed_mode()
            )
        return vector.cpu()

    def search(self, query: Tensor, k: int) -> dict[str, Any]:
        """``{"neighbors": [...], "match": {...}}`` of a (1, D) query: the ``min(k, N)``
        nearest items of :meth:`EmbeddingIndex.search`, and the verdict of
        :meth:`EmbeddingIndex.match`'s rule (the nearest item's label when within the
        threshold, else unknown; ``known`` is ``None`` without a threshold)."""
        k = self._check_k(k)
        with self._lock:
            result = self.index.search(query, k)
        neighbors = []
        for rank, (row, label, d) in enumerate(
            zip(
                result.indices[0].tolist(),
                result.labels[0].tolist(),
                result.distances[0].tolist(),
                strict=True,
            ),
            start=1,
        ):
            if row < 0:
                continue  # an approximate backend found fewer than k
            neighbors.append(
                {
                    "rank": rank,
                    "id": result.ids[0][rank - 1],
                    "row": row,
                    "label": self.label_name(label),
                    "label_id": label,
                    "distance": d,
                    "thumbnail": self.thumbnail_url(row),
                }
            )
        match: dict[str, Any] = {"label": None, "distance": None, "known": None}
        match["threshold"] = None if self.threshold is None else self.threshold.value
        if neighbors:
            first = neighbors[0]
            match["distance"] = first["distance"]
            if self.threshold is not None:
                known = first["distance"] <= self.threshold.value and first["label_id"] >= 0
                match["known"] = known
                match["label"] = first["label"] if known else None
            else:
                match["label"] = first["label"]
        return {"neighbors": neighbors, "match": match}

    def search_upload(self, data: bytes, k: int, max_bytes: int) -> dict[str, Any]:
        self._check_k(k)
        return self.search(self.embed_upload(data, max_bytes), k)

    def search_item(self, item_id: str, k: int) -> dict[str, Any]:
        """The neighbours of an indexed item (itself first, at distance 0)."""
        self._check_k(k)
        row = self.row(item_id)
        vectors = self._need_vectors("searching from an item")
        return self.search(vectors[row : row + 1], k)

    # ----------------------------------------------------------------------- thumbnails

    def thumbnails_cached(self) -> tuple[int, int]:
        """How many thumbnails the cache holds and their bytes (at most
        :data:`THUMBNAIL_CACHE_BYTES`)."""
        with self._cache_lock:
            return len(self._thumbnails), self._thumbnail_bytes

    def thumbnail(self, row: int) -> bytes:
        """PNG bytes of the indexed item at ``row`` (404 for a row outside the index, or
        when its image cannot be read any more)."""
        if not 0 <= row < len(self):
            raise RequestError(404, f"no item at row {row}; the index holds {len(self):,}")
        with self._cache_lock:
            cached = self._thumbnails.get(row)
            if cached is not None:
                self._thumbnails.move_to_end(row)
                return cached
        name = self.index.ids[row]
        with self._lock:  # ItemImages loads the dataset once, on first use
            why = self.items.why_not([name])
            if why is not None:
                raise RequestError(404, f"no picture of {printable(name)!r}")
            c, size, _ = self.run.image_shape
            try:
                image = self.items.read([name], c, size)[0]  # (C, H, W)
            except DataError:
                raise RequestError(404, f"the picture of {printable(name)!r} is gone") from None
        png = _png(image)
        with self._cache_lock:
            if row not in self._thumbnails:
                self._thumbnails[row] = png
                self._thumbnail_bytes += len(png)
            while self._thumbnail_bytes > THUMBNAIL_CACHE_BYTES:
                self._thumbnail_bytes -= len(self._thumbnails.popitem(last=False)[1])
        return png

    # ------------------------------------------------------------------------------ map

    def map(self) -> dict[str, Any]:
        """The 2-D map of the items: ``{"method", "x", "y", "labels", "ids", "classes"}``,
        computed once and cached in :attr:`map_cache` (reused while the items are the
        same)."""
        with self._cache_lock:
            if self._map is not None:
                return self._map
        vectors = self._need_vectors("the map")
        key = _map_key(vectors.numpy(), self.index.ids)
        xy, method = self._cached_map(key)
        if xy is None:
            xy, method = gallery_map(vectors)
            if self.map_cache is not None:
                try:
                    arrays = {"xy": xy, "key": np.array(key), "method": np.array(method)}
                    atomic_save_npz(self.map_cache, arrays)
                except WriteError as err:
                    self.notes.append(f"the map is not cached: {err}")
        out = {
            "method": method,
            "x": [round(float(v), 5) for v in xy[:, 0]],
            "y": [round(float(v), 5) for v in xy[:, 1]],
            "labels": self.index.labels.tolist(),
            "ids": list(self.index.ids),
            "classes": list(self.index.classes),
        }
        with self._cache_lock:
            self._map = out
        return out

    def _cached_map(self, key: str) -> tuple[np.ndarray | None, str]:
        if self.map_cache is None or not self.map_cache.is_file():
            return None, ""
        try:
            arrays = load_npz(self.map_cache)
            xy, stored, method = arrays["xy"], str(arrays["key"]), str(arrays["method"])
        except (NpzError, KeyError):
            return None, ""
        if stored != key or xy.shape != (len(self), 2):
            return None, ""
        return xy.astype(np.float32), method

    # ---------------------------------------------------------------------------- panel

    def start_panel(self) -> None:
        """Start computing the per-class panel in a background thread (once; nothing for an
        index without vectors). Requests never wait for it: until it is done,
        :meth:`metrics_panel` says ``"computing"`` and :meth:`hardest` answers 503."""
        with self._cache_lock:
            if self._panel_thread is not None or self.vectors is None:
                return
            self._panel_thread = threading.Thread(
                target=self._compute_panel, name="tripletlab-panel", daemon=True
            )
        self._panel_thread.start()

    def wait_panel(self, timeout: float | None = None) -> bool:
        """Wait until the panel is computed (started if needed); whether it is."""
        self.start_panel()
        if self._panel_thread is not None:
            self._panel_thread.join(timeout)
        with self._cache_lock:
            return self._panel is not None

    def _compute_panel(self) -> None:
        try:
            panel = self._leave_one_out()
        except RequestError as err:
            failed = (err.status, str(err))
        except Exception:  # a bug: said in the log, answered as a 500
            log.exception("the per-class panel failed")
            failed = (500, "the per-class panel could not be computed (see the server's log)")
        else:
            with self._cache_lock:
                self._panel = panel
            return
        with self._cache_lock:
            self._panel_failed = failed

    def _leave_one_out(self) -> ClassPanel:
        """Each item's :data:`PANEL_K` nearest other items, searched :data:`PANEL_CHUNK`
        items at a time, and each class's precision@1 among them."""
        vectors = self._need_vectors("the per-class panel")
        n = len(self)
        k = min(PANEL_K, n - 1)
        if k < 1:
            raise RequestError(409, "the per-class panel needs at least two items")
        labels, distances = [], []
        for start in range(0, n, PANEL_CHUNK):
            # The exact backend only (vectors kept): a read-only computation, safe beside the
            # requests' searches without the model's lock, which it would hold for seconds.
            result = self.index.search(vectors[start : start + PANEL_CHUNK], k + 1)  # (B, k + 1)
            rows = torch.arange(start, start + result.indices.shape[0])  # (B,)
            own = result.indices != rows[:, None]  # (B, k + 1), usually itself first
            order = torch.argsort((~own).int(), dim=1, stable=True)[:, :k]  # (B, k): self dropped
            labels.append(result.labels.gather(1, order))
            distances.append(result.distances.gather(1, order))
        y = self.index.labels
        neighbor_labels = torch.cat(labels)  # (N, k)
        return ClassPanel(
            y,
            neighbor_labels,
            torch.cat(distances),
            class_precision_at_1(y, neighbor_labels[:, 0]),
        )

    def _ready_panel(self) -> ClassPanel | None:
        """The computed panel, ``None`` while it is computing; its failure as the request's."""
        self._need_vectors("the per-class panel")
        self.start_panel()
        with self._cache_lock:
            if self._panel_failed is not None:
                raise RequestError(*self._panel_failed)  # a new one each time
            return self._panel

    def metrics_panel(self) -> dict[str, Any]:
        """The run's metrics and each class's leave-one-out precision@1 among the indexed
        items (the nearest other item of the same class), worst first; ``status``
        ``"computing"`` (and no classes) until the panel's thread is done, then ``"ready"``:
        never waits for it."""
        panel = self._ready_panel()
        rows = []
        for label, count, p1 in [] if panel is None else panel.per_class:
            rows.append(
                {
                    "label_id": label,
                    "label": self.label_name(label),
                    "items": count,
                    "precision_at_1": p1,
                }
            )
        return {
            "status": "computing" if panel is None else "ready",
            "metrics": self.metrics,
            "per_class": rows,
            "items": len(self),
            "threshold": None if self.threshold is None else self.threshold.describe(),
        }

    def hardest(self, label: int, count: int) -> dict[str, Any]:
        """The ``count`` items of class ``label`` whose nearest other items are least of
        their class (:func:`tripletlab.plots.worst_queries`), worst first."""
        if not 1 <= count <= MAX_K:
            raise RequestError(422, f"n must be between 1 and {MAX_K}, got {count}")
        panel = self._ready_panel()
        if panel is None:
            raise RequestError(503, "the per-class panel is being computed; ask again shortly")
        members = torch.nonzero(panel.labels == label)[:, 0]  # (M,)
        if members.numel() == 0:
            raise RequestError(404, f"no class {label} in the index")
        pick = worst_queries(
            panel.labels[members],
            panel.neighbor_labels[members],
            panel.neighbor_distances[members],
            count,
        )
        items = []
        for row in members[pick].tolist():
            nearest = int(panel.neighbor_labels[row, 0])
            items.append(
                {
                    "id": self.index.ids[row],
                    "row": row,
                    "label": self.label_name(label),
                    "nearest_label": self.label_name(nearest),
                    "distance": float(panel.neighbor_distances[row, 0]),
                    "thumbnail": self.thumbnail_url(row),
                }
            )
        return {"label": self.label_name(label), "label_id": label, "items": items}

    def health(self) -> dict[str, Any]:
        """What a client needs before its first query."""
        return {
            "status": "ok",
            "items": len(self),
            "dim": self.index.dim,
            "distance": self.index.config.distance,
            "k": self.default_k,
            "max_k": MAX_K,
            "threshold": None if self.threshold is None else self.threshold.value,
            "threshold_name": None if self.threshold is None else self.threshold.name,
            "item_search": self.vectors is not None,
            "run": str(self.run.run_dir or self.run.checkpoint),
        }


# ------------------------------------------------------------------------------ loading


def _map_cache_path(config: ServeConfig, run: LoadedRun) -> Path | None:
    """Beside the index file: ``INDEX.map.npz``, and for the index built at start
    ``RUN_DIR/serve/index.map.npz`` (beside :data:`INDEX_CACHE`); ``None`` for a checkpoint
    outside a run folder."""
    if config.index is not None:
        path = Path(config.index)
    elif run.run_dir is not None:
        path = run.run_dir / INDEX_CACHE
    else:
        return None
    return path.with_name(path.name.removesuffix(".npz") + ".map.npz")


def dataset_stamp(spec: str) -> list[int] | None:
    """A cheap fingerprint of a dataset that names a path (``imagefolder:PATH``...): a file's
    ``[size, mtime_ns]``; a folder's ``[files below it, newest mtime_ns of it and its
    folders]`` (a file added, removed or renamed changes it; a file rewritten in place does
    not); ``None`` for a built-in dataset or a missing path."""
    kinds = {form.split(":")[0] + ":" for form in PATH_FORMS}
    prefix = next((p for p in kinds if spec.startswith(p)), None)
    if prefix is None:
        return None
    path = Path(spec[len(prefix) :])
    try:
        if path.is_file():
            st = path.stat()
            return [st.st_size, st.st_mtime_ns]
        if not path.is_dir():
            return None
        files, newest = 0, path.stat().st_mtime_ns
        for folder, _, names in os.walk(path):
            files += len(names)
            newest = max(newest, os.stat(folder).st_mtime_ns)
    except OSError:
        return None
    return [files, newest]


def gallery_key(run: LoadedRun) -> dict[str, Any]:
    """What the index built at start depends on, stored in its ``meta[KEY_FIELD]``: a cached
    index is used only while this is equal (JSON values, so that it survives the file).

    The checkpoint by its SHA-256 (a retrained or replaced ``best.pt`` rebuilds), the dataset
    by its spec, IDX folder and :func:`dataset_stamp`, the split, the image shape, the distance
    and the embedding mode here (flip TTA, bfloat16, device type).

    Corner case: a dataset file rewritten in place under the same name and folder is not
    seen; delete ``RUN_DIR/serve/`` to rebuild.
    """
    mode = run.embed_mode()
    data = run.config.data
    return {
        "checkpoint_sha256": file_sha256(run.checkpoint),
        "dataset": data.dataset,
        "data_dir": data.data_dir,
        "data_stamp": dataset_stamp(data.dataset),
        "split": "train",
        "image_shape": list(run.image_shape),
        "distance": run.config.objective.distance,
        "flip_tta": mode.flip,
        "bf16": mode.amp,
        "device": run.device.type,
    }


def _cached_index(path: Path, key: dict[str, Any]) -> EmbeddingIndex | None:
    """The index cached at ``path`` when it was built from ``key``; ``None`` when it is
    missing, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        index = EmbeddingIndex.load(path)
    except ValueError:  # IndexFileError, SearchError: rebuilt and overwritten
        return None
    if index.meta.get(KEY_FIELD) != key or index.config.backend != "exact":
        return None
    return index


def start_index(
    run: LoadedRun, progress: Progress | None = None
) -> tuple[EmbeddingIndex, list[str], str]:
    """The exact index of the run's gallery (the training split of its dataset), the
    warnings of building it and a line saying where it came from: read from ``RUN_DIR/``
    :data:`INDEX_CACHE` when that was built from the same checkpoint and data
    (:func:`gallery_key`), else embedded (``progress`` callbacks) and written there
    atomically (:meth:`EmbeddingIndex.save`).

    Corner cases: a run folder that cannot be written (read-only, full) is served from the
    index built in memory, with one warning saying that the next start embeds again; a
    checkpoint outside a run folder is never cached; a corrupt cache is rebuilt.
    """
    key = gallery_key(run)
    path = None if run.run_dir is None else run.run_dir / INDEX_CACHE
    cached = None if path is None else _cached_index(path, key)
    if cached is not None:
        return cached, [], f"the gallery's index: reused from {printable(str(path))}"
    result = embed_run(run, split="train", progress=progress)
    index = build_index(result.data, IndexConfig(distance=run.config.objective.distance))
    index.meta[KEY_FIELD] = key
    built = f"the gallery's index: built from the training split ({len(index):,} images)"
    if path is None:
        return index, [], built
    try:
        index.save(path)
    except WriteError as err:
        why = f"the gallery's index is not cached, the next start embeds it again: {err}"
        return index, [why], built
    return index, [], f"{built}, cached in {printable(str(path))} for the next start"


def _threshold(config: ServeConfig, index: EmbeddingIndex) -> Threshold | None:
    where = config.index or "the index built at start"
    if config.threshold is not None:
        return resolve_threshold(index, where, parse_threshold(config.threshold))
    if index.calibration is None:
        return None
    try:
        return resolve_threshold(index, where, MAX_F1)
    except SearchError:
        return None  # max_f1 not reachable: no verdict


def _read_metrics(run: LoadedRun) -> dict[str, Any] | None:
    path = None if run.run_dir is None else run.run_dir / "metrics.json"
    if path is None or not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def load_gallery(config: ServeConfig, progress: Progress | None = None) -> Gallery:
    """Load the run and the index (``config.index``, or one built from the run's gallery,
    the training split of its dataset, with ``progress`` callbacks while embedding).

    Raises:
        ServeError, SearchError, DataError, TrainingError (all but the last ``ValueError``):
            a bad option, an unusable run or index, an index of another dimension than the
            run's embeddings.
    """
    config.check()
    run = load_run(Path(config.run), config.device)
    c, size, _ = run.image_shape
    probe = embed(
        run.model, torch.zeros(1, c, size, size, dtype=torch.uint8), run.stats, run.device
    )
    dim = int(probe.shape[1])
    warnings: list[str] = []
    notes = []
    if config.index is not None:
        index = EmbeddingIndex.load(Path(config.index))
        if index.dim != dim:
            raise ServeError(
                f"{printable(config.index)} holds {index.dim}-d embeddings but the run embeds "
                f"{dim}-d; serve the index with the run it was built from"
            )
    else:
        index, warnings, origin = start_index(run, progress)
        notes.append(origin)
    arrays, _ = index.to_arrays()
    vectors = torch.from_numpy(arrays["vectors"]) if index.config.backend == "exact" else None
    items = ItemImages(index.meta, run=config.run)
    if len(index):  # read the items' images now (a dataset loads once), not on first view
        why = items.why_not([index.ids[0]])
        if why is not None:
            notes.append("no thumbnails: " + why.removeprefix("no grid: "))
    return Gallery(
        run=run,
        index=index,
        vectors=vectors,
        items=items,
        threshold=_threshold(config, index),
        metrics=_read_metrics(run),
        map_cache=_map_cache_path(config, run),
        default_k=config.k,
        notes=notes,
        warnings=warnings,
    )
