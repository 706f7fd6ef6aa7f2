"""The search commands: what ``tripletlab index build``, ``search`` and ``calibrate`` run,
each one function of a typed config (the CLI only parses flags). The top of the search
package: it reads runs and embeddings files and draws grids, where :mod:`.index` knows only
tensors.

- :func:`run_index_build`: an embeddings file (:mod:`tripletlab.embeddingfile`) to an index
  file (:class:`tripletlab.search.EmbeddingIndex`).
- :func:`run_search`: queries from an embeddings file, or image files embedded with the run
  the index's embeddings came from, searched in an index; optionally a neighbour grid.
- :func:`run_calibrate`: thresholds chosen on a labelled embeddings file, written into the
  index file (atomically: a failure leaves the old file as it was), optionally plotted.

Labels are compared by class name: when an embeddings file and the index both list class
names and the lists differ, the file's labels are translated into the index's (a class the
index lacks gets a label of its own, absent from the index).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from tripletlab.calibration import DEFAULT_PRECISIONS, Calibration, check_precisions
from tripletlab.checks import check_not_an_input
from tripletlab.data import read_image_file
from tripletlab.embedding import embed
from tripletlab.embeddingfile import EmbeddingFile, load_embeddings
from tripletlab.evaluation import load_run
from tripletlab.inference import check_output_path, load_run_dataset
from tripletlab.plots import plot_calibration, plot_neighbor_grid
from tripletlab.search.config import IndexConfig, SearchError
from tripletlab.search.index import EmbeddingIndex
from tripletlab.search.results import SearchResult
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
    """

    index: EmbeddingIndex
    query_ids: tuple[str, ...]
    query_labels: Tensor
    result: SearchResult
    grid: Path | None = None
    note: str | None = None


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


_DATASET_ITEM = re.compile(r"(train|test)/(\d+)")


class _ItemImages:
    """Reads items' images by id: image files, or ``train/I`` / ``test/I`` items of the
    dataset the index's embeddings came from (its ``meta``: ``run`` and ``dataset``, as
    ``tripletlab embed`` writes them), loaded once at the run's image size."""

    def __init__(self, index: EmbeddingIndex) -> None:
        self.meta = index.meta
        self.sets: dict[str, Tensor] | None = None
        self.error = ""

    def _dataset(self) -> dict[str, Tensor] | None:
        run, dataset = self.meta.get("run"), self.meta.get("dataset")
        if self.sets is None and not self.error and run and dataset:
            try:
                data = load_run_dataset(load_run(Path(str(run))), dataset=str(dataset))
            except (TrainingError, ValueError) as err:  # DataError is a ValueError
                self.error = f" ({dataset} of {run}: {err})"
                return None
            self.sets = {"train": data.splits.train.images, "test": data.splits.test.images}
        return self.sets

    def why_not(self, names: list[str]) -> str | None:
        """Why some of ``names`` cannot be drawn, or ``None`` when all can."""
        for name in names:
            if Path(name).is_file():
                continue
            m = _DATASET_ITEM.fullmatch(name)
            sets = self._dataset() if m else None
            if m is None or sets is None:
                return (
                    f"no grid: the items are not image files (e.g. {name!r}); a grid needs ids "
                    "that are image paths, as embeddings of an image folder have, or the "
                    "train/I and test/I ids of `tripletlab embed`, with the run still there"
                    + self.error
                )
            if int(m.group(2)) >= sets[m.group(1)].shape[0]:
                return f"no grid: {name!r} is not an item of {self.meta.get('dataset')}"
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
            m = _DATASET_ITEM.fullmatch(name)
            if m is not None and self.sets is not None and not Path(name).is_file():
                out.append(self.sets[m.group(1)][int(m.group(2))])  # (C, H, W)
            else:
                out.append(read_image_file(Path(name), size, channels))
        return torch.stack(out)


def _grid(
    out: Path,
    index: EmbeddingIndex,
    query_ids: tuple[str, ...],
    query_labels: Tensor,
    result: SearchResult,
    query_images: Tensor | None,
) -> tuple[Path | None, str | None]:
    """Draw the first queries and their neighbours when their images can be read (image
    files, or items of the index's dataset); else a note saying why not."""
    q = min(len(query_ids), GRID_MAX_QUERIES)
    names = [s for row in result.ids[:q] for s in row]
    items = _ItemImages(index)
    note = items.why_not(names + ([] if query_images is not None else list(query_ids[:q])))
    if note is not None:
        return None, note
    c, size = items.shape() or (3, GRID_IMAGE_SIZE)
    if query_images is not None:
        c, size = int(query_images.shape[1]), int(query_images.shape[2])
    else:
        query_images = items.read(list(query_ids[:q]), c, size)
    k = result.indices.shape[1]
    neighbours = items.read(names, c, size).view(q, k, c, size, size)
    path = plot_neighbor_grid(
        query_images[:q],
        query_labels[:q],
        neighbours,
        result.labels[:q],
        out,
        neighbor_distances=result.distances[:q],
        classes=index.classes or None,
        title=f"{q} of {len(query_ids)} queries and their {k} nearest items "
        "(green: same class as the query)",
    )
    return path, None


def run_search(config: SearchConfig) -> SearchOutput:
    """Search the queries of ``config`` in its index (and draw the grid).

    Raises:
        ValueError (SearchError, EmbeddingFileError, DataError), TrainingError: unusable
            index, queries, run or images; both or neither of ``embeddings`` and ``images``;
            a ``grid`` that is a folder or one of the inputs (checked before any search).
        tripletlab.io.WriteError (a ``ValueError``): the grid cannot be written.
    """
    if (config.embeddings is None) == (not config.images):
        raise SearchError("give the queries as an embeddings file or as image files, not both")
    if config.k < 1:
        raise SearchError(f"k must be a positive integer, got {config.k}")
    if config.grid is not None:
        inputs = {"the index file": Path(config.index)}
        if config.embeddings is not None:
            inputs["the --embeddings file"] = Path(config.embeddings)
        inputs.update({f"the query image {p}": Path(p) for p in config.images})
        check_not_an_input(check_output_path(Path(config.grid), "--grid"), "--grid", inputs)
    index = EmbeddingIndex.load(Path(config.index))
    index.set_search_parameters(ef_search=config.ef_search, nprobe=config.nprobe)
    images = None
    if config.embeddings is not None:
        data = load_embeddings(Path(config.embeddings))
        queries, ids, labels = data.embeddings, data.ids, labels_in_index_space(data, index)
    else:
        run = config.run or index.meta.get("run")
        if not run:
            raise SearchError(
                "cannot embed the images: the index does not name the run its embeddings "
                "came from; pass --run RUN_DIR"
            )
        queries, images = embed_image_files(str(run), config.images, config.device)
        ids, labels = config.images, _folder_labels(config.images, index.classes)
    result = index.search(queries, config.k)
    grid, note = None, None
    if config.grid is not None and len(ids):
        grid, note = _grid(Path(config.grid), index, tuple(ids), labels, result, images)
    return SearchOutput(index, tuple(ids), labels, result, grid, note)


def format_search(output: SearchOutput, limit: int | None = None) -> str:
    """A table of (query id, rank, id, label, distance), aligned, one row per neighbour."""
    classes = output.index.classes
    rows = [("query", "rank", "id", "label", "distance")]
    r = output.result
    shown = len(output.query_ids) if limit is None else min(limit, len(output.query_ids))
    for qi in range(shown):
        for rank in range(r.indices.shape[1]):
            label = int(r.labels[qi, rank])
            name = classes[label] if 0 <= label < len(classes) else str(label)
            d = float(r.distances[qi, rank])
            row = (output.query_ids[qi], str(rank + 1), r.ids[qi][rank], name, f"{d:.6g}")
            rows.append(row)
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    return "\n".join(
        "  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


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
