"""The search commands: what ``tripletlab index build``, ``search``, ``calibrate`` and
``match`` run, each one function of a typed config (the CLI only parses flags). The top of
the search package: it reads runs and embeddings files and draws grids, where :mod:`.index`
knows only tensors.

- :func:`run_index_build`: an embeddings file (:mod:`tripletlab.embeddingfile`) to an index
  file (:class:`tripletlab.search.EmbeddingIndex`).
- :func:`run_search`: queries from an embeddings file, or image files embedded with the run
  the index's embeddings came from, searched in an index; optionally a neighbour grid and a
  threshold marking the neighbours beyond it.
- :func:`run_calibrate`: thresholds chosen on a labelled embeddings file, written into the
  index file (atomically: a failure leaves the old file as it was), optionally plotted.
- :func:`run_match`: each query's nearest item's label when within a calibrated threshold
  (or a distance), else "unknown" (:meth:`~tripletlab.search.EmbeddingIndex.match`).

A query's own label is known from its embeddings file, or for an image file from its
folder's name when the index has a class of that name; otherwise it is unknown (-1).

Labels are compared by class name: when an embeddings file and the index both list class
names and the lists differ, the file's labels are translated into the index's (a class the
index lacks gets a label of its own, absent from the index).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tripletlab.calibration import (
    DEFAULT_PRECISIONS,
    MAX_F1,
    Calibration,
    check_precisions,
    precision_name,
    precision_target,
)
from tripletlab.checks import check_not_an_input, printable
from tripletlab.data import IMAGEFOLDER_PREFIX, Images, absolute_dataset, read_image_file
from tripletlab.embedding import embed
from tripletlab.embeddingfile import EmbeddingFile, load_embeddings
from tripletlab.evaluation import load_run
from tripletlab.inference import check_output_path, load_run_dataset
from tripletlab.plots import plot_calibration, plot_neighbor_grid
from tripletlab.search.config import IndexConfig, SearchError
from tripletlab.search.index import EmbeddingIndex
from tripletlab.search.results import MatchResult, SearchResult
from tripletlab.training import TrainingError

#: Queries drawn in a neighbour grid (the first ones).
GRID_MAX_QUERIES = 16
#: Side of the tiles when no run says the image size.
GRID_IMAGE_SIZE = 64


def labels_in_index_space(data: EmbeddingFile, index: EmbeddingIndex) -> Tensor:
    """``data.labels`` translated to the index's labels by class name (see the module).

    Returns:
        (N,) int64; -1 stays -1; a class the index does not list gets a label >= the index's
        number of classes. Without class names on either side, the labels as they are.
    """
    if not data.classes or not index.classes or data.classes == index.classes:
        return data.labels
    lookup = {name: i for i, name in enumerate(index.classes)}
    table, extra = [], len(index.classes)
    for name in data.classes:
        if name in lookup:
            table.append(lookup[name])
        else:
            table.append(extra)
            extra += 1
    return torch.tensor([*table, -1], dtype=torch.long)[data.labels]  # -1 -> the last entry


def classes_in_index_space(data: EmbeddingFile, index: EmbeddingIndex) -> tuple[str, ...]:
    """The class names that :func:`labels_in_index_space`'s labels index: the index's, then
    those of ``data`` the index lacks, in the order they were given labels."""
    if not data.classes or not index.classes or data.classes == index.classes:
        return index.classes or data.classes
    return index.classes + tuple(c for c in data.classes if c not in index.classes)


# ------------------------------------------------------------------------------ build


@dataclass(frozen=True)
class IndexBuildConfig:
    """``tripletlab index build``.

    Attributes:
        embeddings: the embeddings file to index.
        out: the index file to write.
        index: distance, backend and its parameters.
        distance_from_file: use the embeddings file's ``meta["distance"]`` (the distance
            the run trained with) instead of ``index.distance`` when the file has one.
    """

    embeddings: str
    out: str
    index: IndexConfig = field(default_factory=IndexConfig)
    distance_from_file: bool = False


def build_index(data: EmbeddingFile, config: IndexConfig) -> EmbeddingIndex:
    """An index of every item of ``data``, its class names and its ``meta`` kept."""
    index = EmbeddingIndex(data.dim, config, classes=data.classes, meta=data.meta)
    index.add(data.embeddings, data.labels, data.ids)
    return index


def run_index_build(config: IndexBuildConfig) -> EmbeddingIndex:
    """Load the embeddings, build the index, write it; nothing is written on failure.

    Raises:
        EmbeddingFileError, SearchError (both ``ValueError``): an unreadable embeddings file,
            a bad option, an IVF index with too few vectors, faiss missing.
        ValueError: ``out`` is a folder, lies under a file, or is the embeddings file.
        tripletlab.io.WriteError (a ``ValueError``): ``out`` cannot be written.
    """
    out = check_output_path(Path(config.out), "--out")
    check_not_an_input(out, "--out", {"the --embeddings file": Path(config.embeddings)})
    data = load_embeddings(Path(config.embeddings))
    options = config.index
    file_distance = data.meta.get("distance")
    if config.distance_from_file and file_distance is not None:
        options = replace(options, distance=file_distance)  # checked by IndexConfig
    index = build_index(data, options)
    index.save(out)
    return index


# ------------------------------------------------------------------------------ search


@dataclass(frozen=True)
class SearchConfig:
    """``tripletlab search``: exactly one of ``embeddings`` and ``images``.

    Attributes:
        index: the index file.
        embeddings: an embeddings file of queries.
        images: image files to embed with ``run`` and search.
        k: neighbours per query (``min(k, N)`` are returned).
        grid: a PNG of the first queries and their neighbours (when the items are images).
        run: the run folder that embeds ``images`` (default: the index's source run).
        device: ``auto``, ``cpu`` or ``cuda`` for embedding images.
        ef_search, nprobe: override the index's HNSW / IVF search parameters.
        dataset: where the grid reads the indexed items' images (default: the index's
            ``meta["dataset"]``): ``imagefolder:PATH`` for ids relative to PATH, or the
            dataset of ``train/I`` and ``test/I`` ids.
        data_dir: where that dataset's IDX files are (default: the run's).
        threshold: mark the neighbours farther than this threshold (see
            :func:`parse_threshold`); ``None``: no threshold.
    """

    index: str
    embeddings: str | None = None
    images: tuple[str, ...] = ()
    k: int = 5
    grid: str | None = None
    run: str | None = None
    device: str = "auto"
    ef_search: int | None = None
    nprobe: int | None = None
    dataset: str | None = None
    data_dir: str | None = None
    threshold: str | None = None


@dataclass(frozen=True)
class SearchOutput:
    """What :func:`run_search` found.

    Attributes:
        index: the loaded index.
        query_ids: one id per query (the file's ids or the image paths).
        query_labels: (Q,) in the index's label space, -1 when unknown.
        result: the neighbours.
        grid: the PNG written, if any.
        note: why no grid was drawn although one was asked for.
        query_classes: the class names ``query_labels`` index (the index's, then the
            queries' classes it lacks).
        threshold: the threshold applied (its name or value, and the distance), if any.
    """

    index: EmbeddingIndex
    query_ids: tuple[str, ...]
    query_labels: Tensor
    result: SearchResult
    grid: Path | None = None
    note: str | None = None
    query_classes: tuple[str, ...] = ()
    threshold: Threshold | None = None

    def query_name(self, i: int) -> str:
        """Query ``i``'s class name, ``""`` when unknown."""
        return _label_name(int(self.query_labels[i]), self.query_classes)


def embed_image_files(
    run_dir: str, paths: tuple[str, ...], device: str = "auto"
) -> tuple[Tensor, Tensor]:
    """Embed image files as the run embeds its own images (its size, channels,
    normalisation, flip TTA and autocast).

    Returns:
        ``(embeddings (Q, D) float32 on the CPU, images (Q, C, H, W) uint8)``.

    Raises:
        TrainingError, DataError: no usable run; an unreadable image.
    """
    run = load_run(Path(run_dir), device)
    c, h, _ = run.image_shape
    images = torch.stack([read_image_file(Path(p), h, c) for p in paths])  # (Q, C, H, W)
    embeddings = embed(run.model, images, run.stats, run.device, run.embed_mode())
    return embeddings.cpu(), images


def _folder_labels(paths: tuple[str, ...], classes: tuple[str, ...]) -> Tensor:
    """An image's label is its folder's name when the index has a class of that name (the
    layout of image-folder data sets), else -1."""
    lookup = {name: i for i, name in enumerate(classes)}
    return torch.tensor([lookup.get(Path(p).parent.name, -1) for p in paths], dtype=torch.long)


def _queries(shown: int, total: int) -> str:
    """The start of the grid's title: ``"the query and its"``, ``"the 3 queries and their"``
    or ``"3 of 10 queries and their"``."""
    if shown == total == 1:
        return "the query and its"
    return (
        f"the {total} queries and their"
        if shown == total
        else f"{shown} of {total} queries and their"
    )


def _label_name(label: int, classes: tuple[str, ...]) -> str:
    """A label's class name; the number when there is no name; ``""`` for -1 (unknown)."""
    if label < 0:
        return ""
    return classes[label] if label < len(classes) else str(label)


@dataclass(frozen=True)
class _Queries:
    """Queries of :func:`run_search` and :func:`run_match`.

    Attributes:
        vectors: (Q, D) embeddings.
        ids: Q ids (the file's, or the image paths as given).
        labels: (Q,) in the index's label space (:func:`labels_in_index_space`); an image's
            is its folder's name when the index has that class; -1: unknown.
        classes: the names ``labels`` index (:func:`classes_in_index_space`).
        images: (Q, C, H, W) uint8 for image files, else ``None``.
        meta: the embeddings file's ``meta`` (empty for image files).
    """

    vectors: Tensor
    ids: tuple[str, ...]
    labels: Tensor
    classes: tuple[str, ...]
    images: Tensor | None
    meta: Mapping[str, Any]


def _load_queries(
    index: EmbeddingIndex,
    embeddings: str | None,
    images: tuple[str, ...],
    run: str | None,
    device: str,
) -> _Queries:
    """Read the queries of an embeddings file, or embed image files with ``run`` (default:
    the run the index's embeddings came from)."""
    if (embeddings is None) == (not images):
        raise SearchError("give the queries as an embeddings file or as image files, not both")
    if embeddings is not None:
        data = load_embeddings(Path(embeddings))
        labels = labels_in_index_space(data, index)
        classes = classes_in_index_space(data, index)
        return _Queries(data.embeddings, data.ids, labels, classes, None, data.meta)
    run = run or index.meta.get("run")
    if not run:
        raise SearchError(
            "cannot embed the images: the index does not name the run its embeddings came "
            "from; pass --run RUN_DIR"
        )
    vectors, pixels = embed_image_files(str(run), images, device)
    labels = _folder_labels(images, index.classes)
    return _Queries(vectors, tuple(images), labels, index.classes, pixels, {})


@dataclass(frozen=True)
class Threshold:
    """A match threshold as applied: ``name`` (``max_f1``, ``precision_0.99``, or the
    number as given), its distance ``value`` and the index's ``distance``."""

    name: str
    value: float
    distance: str

    def describe(self) -> str:
        """``max_f1 = 0.4213 (euclidean distance)``, or ``0.5 (cosine distance)``."""
        named = f"{self.name} = " if self.name != f"{self.value:g}" else ""
        return f"{named}{self.value:.6g} ({self.distance} distance)"


def parse_threshold(text: str) -> str | float:
    """``--threshold``: a calibrated threshold's name (``max_f1``, ``precision_0.99``: any
    target precision, written as any float, ``precision_.990`` too) or a distance >= 0.

    >>> parse_threshold("0.5"), parse_threshold("max_f1"), parse_threshold("precision_.990")
    (0.5, 'max_f1', 'precision_0.99')

    Raises:
        SearchError: a negative, infinite or NaN distance.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        target = precision_target(text)
        return text if target is None else precision_name(target)  # the index checks names
    if not math.isfinite(value) or value < 0:
        raise SearchError(
            f"--threshold must be {MAX_F1}, precision_P (P in (0, 1], from the calibration) or a "
            "distance >= 0, got "
            f"{text!r}"
        )
    return value


def resolve_threshold(index: EmbeddingIndex, path: str, threshold: str | float) -> Threshold:
    """The distance of ``threshold`` in the index file ``path`` (a number as it is).

    Raises:
        SearchError: a name with an uncalibrated index (run ``tripletlab calibrate`` first),
            an unknown name (the stored ones are listed), a precision not reachable.
    """
    if isinstance(threshold, str) and index.calibration is None:
        raise SearchError(
            f"{printable(path)} is not calibrated, so it has no {printable(threshold)} "
            f"threshold; run `tripletlab calibrate {printable(path)} --embeddings CAL.npz` "
            "first (CAL.npz: labelled embeddings), or pass --threshold DISTANCE"
        )
    try:
        value = index.threshold(threshold)
    except SearchError:
        raise
    except ValueError as err:  # an unknown name: the message lists the stored ones
        raise SearchError(f"{printable(path)}: {err}") from None
    name = threshold if isinstance(threshold, str) else f"{threshold:g}"
    return Threshold(name, value, index.config.distance)


_DATASET_ITEM = re.compile(r"(train|test)/(\d+)")


class ItemImages:
    """Reads items' images by id, as ``tripletlab embed`` names them (see
    :mod:`tripletlab.inference`): image files relative to the image folder of the dataset
    (``cat/1.png`` of ``imagefolder:PATH``), image files as named (absolute, or relative to
    the working folder), or the ``train/I`` / ``test/I`` items of the dataset, loaded once at
    the run's image size.

    Args:
        meta: the facts of an embeddings or index file (``run``, ``dataset``).
        dataset, data_dir: the dataset to read from instead of ``meta["dataset"]``, and
            where its IDX files are.
        run: the run whose image size dataset items are read at, instead of ``meta["run"]``.
    """

    def __init__(
        self,
        meta: Mapping[str, Any],
        *,
        dataset: str | None = None,
        data_dir: str | None = None,
        run: str | None = None,
    ) -> None:
        given = dataset if dataset is not None else meta.get("dataset")
        self.dataset = absolute_dataset(str(given)) if given else None
        self.run = run if run is not None else meta.get("run")
        self.data_dir = data_dir
        self.root: Path | None = None
        if self.dataset is not None and self.dataset.startswith(IMAGEFOLDER_PREFIX):
            self.root = Path(self.dataset[len(IMAGEFOLDER_PREFIX) :])
        self.sets: dict[str, Images] | None = None
        self.error = ""

    def file(self, name: str) -> Path | None:
        """The image file an id names: under the image folder first, else as named."""
        if self.root is not None and (self.root / name).is_file():
            return self.root / name
        return Path(name) if Path(name).is_file() else None

    def _dataset(self) -> dict[str, Images] | None:
        if self.sets is None and not self.error and self.run and self.dataset:
            try:
                run = load_run(Path(str(self.run)))
                data = load_run_dataset(run, dataset=self.dataset, data_dir=self.data_dir)
            except (TrainingError, ValueError) as err:  # DataError is a ValueError
                self.error = f" ({printable(self.dataset)} of {printable(str(self.run))}: {err})"
                return None
            self.sets = {"train": data.splits.train.images, "test": data.splits.test.images}
        return self.sets

    def why_not(self, names: list[str]) -> str | None:
        """Why some of ``names`` cannot be drawn, or ``None`` when all can."""
        for name in names:
            if self.file(name) is not None:
                continue
            m = _DATASET_ITEM.fullmatch(name)
            sets = self._dataset() if m else None
            if m is None or sets is None:
                where = f" under {printable(str(self.root))}" if self.root is not None else ""
                return (
                    f"no grid: the items are not image files{where} (e.g. "
                    f"{name!r}); a grid needs ids that are image paths, as "
                    "embeddings of an image folder have (pass --dataset imagefolder:PATH "
                    "when the folder has moved), or the train/I and test/I ids of "
                    "`tripletlab embed`, with the run still there" + self.error
                )
            if int(m.group(2)) >= sets[m.group(1)].shape[0]:
                return f"no grid: {name!r} is not an item of {printable(str(self.dataset))}"
        return None

    def shape(self) -> tuple[int, int] | None:
        """(channels, side) of the dataset's images, when items come from one."""
        sets = self.sets
        return None if sets is None else (int(sets["train"].shape[1]), int(sets["train"].shape[2]))

    def read(self, names: list[str], channels: int, size: int) -> Tensor:
        """(len(names), channels, size, size) uint8; call :meth:`why_not` first. Dataset items
        come at the run's image shape, which is what :meth:`shape` and the run's query images
        give as ``(channels, size)``; image files are read at that shape."""
        out = []
        for name in names:
            path = self.file(name)
            m = _DATASET_ITEM.fullmatch(name)
            if path is None and m is not None and self.sets is not None:
                out.append(self.sets[m.group(1)][int(m.group(2))])  # (C, H, W)
            else:
                out.append(read_image_file(path or Path(name), size, channels))
        return torch.stack(out)


def _grid(
    out: Path,
    items: ItemImages,
    queries: tuple[tuple[str, ...], ItemImages] | Tensor,
    query_labels: Tensor,
    classes: tuple[str, ...],
    result: SearchResult,
    threshold: Threshold | None,
) -> tuple[Path | None, str | None]:
    """Draw the first queries and their neighbours when their images can be read (image
    files, or items of the index's dataset); else a note saying why not.

    ``queries``: the query images (Q, C, H, W), or their ids with the reader of their file.
    Neighbours are framed green (the query's class), red (another) or grey (the query's
    class is unknown); with a threshold, those beyond it are faded.
    """
    q = min(len(query_labels), GRID_MAX_QUERIES)
    names = [s for row in result.ids[:q] for s in row]
    note = items.why_not(names)
    if note is None and not isinstance(queries, Tensor):
        note = queries[1].why_not(list(queries[0][:q]))
    if note is not None:
        return None, note
    c, size = items.shape() or (3, GRID_IMAGE_SIZE)
    if isinstance(queries, Tensor):
        query_images = queries
        c, size = int(query_images.shape[1]), int(query_images.shape[2])
    else:
        c, size = queries[1].shape() or (c, size)
        query_images = queries[1].read(list(queries[0][:q]), c, size)
    k = result.indices.shape[1]
    neighbours = items.read(names, c, size).view(q, k, c, size, size)
    key = "green: the query's class, red: another, grey: query's class unknown"
    beyond = None
    if threshold is not None:
        beyond = result.distances[:q] > threshold.value  # (q, k)
        key += f"; faded: beyond {threshold.name}"
    path = plot_neighbor_grid(
        query_images[:q],
        query_labels[:q],
        neighbours,
        result.labels[:q],
        out,
        neighbor_distances=result.distances[:q],
        classes=classes or None,
        title=f"{_queries(q, len(query_labels))} {k} nearest items ({key})",
        beyond=beyond,
    )
    return path, None


def run_search(config: SearchConfig) -> SearchOutput:
    """Search the queries of ``config`` in its index (and draw the grid).

    Raises:
        ValueError (SearchError, EmbeddingFileError, DataError), TrainingError: unusable
            index, queries, run, images or threshold; both or neither of ``embeddings`` and
            ``images``; a ``grid`` that is a folder or one of the inputs (checked before any
            search).
        tripletlab.io.WriteError (a ``ValueError``): the grid cannot be written.
    """
    if config.k < 1:
        raise SearchError(f"k must be a positive integer, got {config.k}")
    asked = parse_threshold(config.threshold) if config.threshold is not None else None
    if config.grid is not None:
        inputs = {"the index file": Path(config.index)}
        if config.embeddings is not None:
            inputs["the --embeddings file"] = Path(config.embeddings)
        inputs.update({f"the query image {p}": Path(p) for p in config.images})
        check_not_an_input(check_output_path(Path(config.grid), "--grid"), "--grid", inputs)
    index = EmbeddingIndex.load(Path(config.index))
    threshold = resolve_threshold(index, config.index, asked) if asked is not None else None
    index.set_search_parameters(ef_search=config.ef_search, nprobe=config.nprobe)
    queries = _load_queries(index, config.embeddings, config.images, config.run, config.device)
    result = index.search(queries.vectors, config.k)
    grid, note = None, None
    if config.grid is not None and len(queries.ids):
        items = ItemImages(
            index.meta, dataset=config.dataset, data_dir=config.data_dir, run=config.run
        )
        pictures: tuple[tuple[str, ...], ItemImages] | Tensor
        if queries.images is not None:
            pictures = queries.images
        else:
            own = ItemImages(queries.meta, data_dir=config.data_dir, run=config.run)
            same = own.dataset is None or own.dataset == ItemImages(index.meta).dataset
            pictures = (queries.ids, items if same else own)  # --dataset: the index's data
        grid, note = _grid(
            Path(config.grid),
            items,
            pictures,
            queries.labels,
            queries.classes,
            result,
            threshold,
        )
    return SearchOutput(
        index, queries.ids, queries.labels, result, grid, note, queries.classes, threshold
    )


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, two spaces apart, trailing spaces stripped."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_search(output: SearchOutput, limit: int | None = None) -> str:
    """A table of (query id, the query's label, rank, id, label, distance), one row per
    neighbour, aligned; with a threshold, a last column ``within`` or ``beyond`` it.
    Unknown labels print as ``-``; names and ids holding newlines or tabs are escaped."""
    classes = output.index.classes
    t = output.threshold
    rows = [["query", "query_label", "rank", "id", "label", "distance"]]
    if t is not None:
        rows[0].append("threshold")
    r = output.result
    shown = len(output.query_ids) if limit is None else min(limit, len(output.query_ids))
    for qi in range(shown):
        query = printable(output.query_ids[qi])
        own = printable(output.query_name(qi)) or "-"
        for rank in range(r.indices.shape[1]):
            item = printable(r.ids[qi][rank])
            name = printable(_label_name(int(r.labels[qi, rank]), classes)) or "-"
            d = float(r.distances[qi, rank])
            rows.append([query, own, str(rank + 1), item, name, f"{d:.6g}"])
            if t is not None:
                rows[-1].append("within" if d <= t.value else "beyond")
    return _table(rows)


# ------------------------------------------------------------------------------ match


@dataclass(frozen=True)
class MatchConfig:
    """``tripletlab match``: exactly one of ``embeddings`` and ``images``.

    Attributes:
        index: the index file (calibrated, unless ``threshold`` is a distance).
        embeddings: an embeddings file of queries.
        images: image files to embed with ``run``.
        threshold: a calibrated threshold's name or a distance (see :func:`parse_threshold`).
        run: the run folder that embeds ``images`` (default: the index's source run).
        device: ``auto``, ``cpu`` or ``cuda`` for embedding images.
    """

    index: str
    embeddings: str | None = None
    images: tuple[str, ...] = ()
    threshold: str = MAX_F1
    run: str | None = None
    device: str = "auto"


@dataclass(frozen=True)
class MatchOutput:
    """What :func:`run_match` answered.

    Attributes:
        index: the loaded index.
        query_ids: one id per query.
        result: each query's nearest item, its label when within the threshold, else -1.
        threshold: the threshold applied.
    """

    index: EmbeddingIndex
    query_ids: tuple[str, ...]
    result: MatchResult
    threshold: Threshold

    @property
    def matched(self) -> int:
        """Queries answered with a label (within the threshold, nearest item labelled)."""
        return int((self.result.labels >= 0).sum())


def run_match(config: MatchConfig) -> MatchOutput:
    """Answer each query with its nearest item's label when within the threshold, else
    "unknown" (:meth:`EmbeddingIndex.match`).

    Raises:
        ValueError (SearchError, EmbeddingFileError, DataError), TrainingError: unusable
            index, queries, run or images; a threshold name with an uncalibrated index.
    """
    asked = parse_threshold(config.threshold)
    index = EmbeddingIndex.load(Path(config.index))
    threshold = resolve_threshold(index, config.index, asked)
    queries = _load_queries(index, config.embeddings, config.images, config.run, config.device)
    result = index.match(queries.vectors, threshold.value)
    return MatchOutput(index, queries.ids, result, threshold)


def format_match(output: MatchOutput) -> str:
    """A table of (query id, answer, nearest id, distance), one row per query, aligned: the
    answer is the nearest item's class, or ``unknown`` beyond the threshold (or when that
    item has no label). Names and ids holding newlines or tabs are escaped."""
    classes, ids = output.index.classes, output.index.ids
    rows = [("query", "answer", "nearest", "distance")]
    r = output.result
    for qi, query in enumerate(output.query_ids):
        row = int(r.indices[qi])
        answer = printable(_label_name(int(r.labels[qi]), classes)) or "unknown"
        nearest = printable(ids[row]) if row >= 0 else "-"
        rows.append((printable(query), answer, nearest, f"{float(r.distances[qi]):.6g}"))
    return _table(rows)


# ------------------------------------------------------------------------------ calibrate


@dataclass(frozen=True)
class CalibrateConfig:
    """``tripletlab calibrate``.

    Attributes:
        index: the index file, rewritten with the thresholds.
        embeddings: the labelled calibration embeddings; items whose id is in the index do
            not match themselves.
        precisions: target precisions to store thresholds for.
        plot: a PNG of precision, recall and F1 against the threshold.
    """

    index: str
    embeddings: str
    precisions: tuple[float, ...] = DEFAULT_PRECISIONS
    plot: str | None = None


@dataclass(frozen=True)
class CalibrateOutput:
    calibration: Calibration
    index: Path
    plot: Path | None


def run_calibrate(config: CalibrateConfig) -> CalibrateOutput:
    """Calibrate the index file on the embeddings file and rewrite it atomically.

    Raises:
        ValueError (SearchError, EmbeddingFileError): unusable files, a single class, no
            query of an indexed class, bad target precisions, a ``plot`` that is a folder
            or one of the inputs. The index file is then left as it was.
        tripletlab.io.WriteError (a ``ValueError``): the index file cannot be rewritten (it
            is left as it was), or the plot cannot be written (after the index file was).
    """
    check_precisions(config.precisions)
    path = Path(config.index)
    if config.plot is not None:
        inputs = {"the index file": path, "the --embeddings file": Path(config.embeddings)}
        check_not_an_input(check_output_path(Path(config.plot), "--plot"), "--plot", inputs)
    index = EmbeddingIndex.load(path)
    data = load_embeddings(Path(config.embeddings))
    labels = labels_in_index_space(data, index)
    cal = index.calibrate(data.embeddings, labels, ids=data.ids, precisions=config.precisions)
    index.save(path)
    plot = None
    if config.plot is not None:
        plot = plot_calibration(cal, Path(config.plot), distance=index.config.distance)
    return CalibrateOutput(cal, path, plot)
