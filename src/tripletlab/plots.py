"""Pictures of a trained embedding, written into a run folder as PNG files.

- :func:`plot_embedding`: the embedding in 2-D, coloured by class: drawn directly when it
  is 2-D (as the figures of the siamese-triplet repository), else projected with PCA, t-SNE
  (van der Maaten and Hinton, "Visualizing Data using t-SNE", JMLR 2008) or UMAP (McInnes,
  Healy and Melville, arXiv:1802.03426, 2018; only when the optional ``umap-learn`` package
  is installed).
- :func:`plot_neighbors`: query images with their nearest gallery images, correct neighbours
  framed green and wrong ones red, for random queries or the worst ones (:func:`worst_queries`).
- :func:`plot_distance_histogram`: distances of sampled positive and negative pairs, with a
  threshold marked.
- :func:`plot_calibration`: precision, recall and F1 of an index's match threshold against the
  threshold, the stored thresholds marked.
- :func:`plot_learning_curves`: loss, fraction of active triplets, mean distances and
  evaluation metrics per epoch, from :func:`tripletlab.training.fit`'s history.
- :func:`write_projector`: a TensorBoard projector export as plain files.
- :func:`write_pictures`: all of the above for a run's train and test sets.

Every function takes tensors and an output path, draws on a fresh ``Figure`` with the Agg
canvas (no pyplot, no global backend state, no display needed), writes the file atomically
(temporary file in the same folder, then ``os.replace``) and returns the written path.
Randomness (subsampling, pair sampling, random queries, t-SNE, UMAP) comes from ``seed``
only: the same inputs give the same pictures.
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from tripletlab.calibration import Calibration
from tripletlab.data import ImageSet, pair_indices
from tripletlab.distances import Distance, check_distance, paired_distances
from tripletlab.metrics import nearest_neighbors
from tripletlab.training import atomic_write_bytes as write_atomic

Projection = Literal["direct", "pca", "tsne", "umap"]
PROJECTIONS: tuple[str, ...] = get_args(Projection)
QuerySelection = Literal["random", "worst"]
QUERY_SELECTIONS: tuple[str, ...] = get_args(QuerySelection)

#: Points drawn per embedding plot, by method; larger sets are subsampled with a seeded
#: generator. t-SNE (scikit-learn's Barnes-Hut) took 10 s for 1,000 and 40 s for 3,000
#: 64-D points on one busy CPU core; the others are cheap, and the cap only keeps the
#: scatter readable and the PNG small.
MAX_POINTS: dict[str, int] = {"direct": 20_000, "pca": 20_000, "tsne": 3_000, "umap": 10_000}
#: Points in a projector export (the sprite stays under TensorBoard's 8192 x 8192 limit).
PROJECTOR_MAX_POINTS = 10_000
#: Candidate queries searched for the worst ones (each against the whole gallery).
NEIGHBOR_MAX_QUERIES = 10_000
SPRITE_MAX_SIDE = 8192

#: ``progress(step, done, total)``: called before each step of :func:`write_pictures` with
#: the step's name and the number of steps done, and once at the end with ``"done"``.
Progress = Callable[[str, int, int], None]

GREEN, RED, GREY = (44, 160, 44), (214, 39, 40), (150, 150, 150)

# ---------------------------------------------------------------------------------- checks


def _check_set(what: str, embeddings: Tensor, labels: Tensor) -> None:
    """One-line ``ValueError`` for an unusable (N, D) embedding set with (N,) labels."""
    if embeddings.dim() != 2:
        raise ValueError(
            f"{what} embeddings must be a (N, D) tensor, got shape {tuple(embeddings.shape)}; "
            "pass one row per item"
        )
    n = embeddings.shape[0]
    if n == 0:
        raise ValueError(f"the {what} set is empty; pass at least one item (check the split)")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{what}: {n} embeddings but labels of shape {tuple(labels.shape)}; pass one label "
            "per embedding row, in the same order"
        )
    bad = int((~torch.isfinite(embeddings)).any(1).sum())
    if bad:
        raise ValueError(
            f"{what} embeddings have {bad} row(s) with NaN or inf; the model diverged: embed "
            "with an earlier checkpoint (checkpoints/best.pt) or retrain with a lower --lr"
        )


def _check_images(what: str, images: Tensor, n: int) -> None:
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{what} images must be uint8 of shape (N, 1 or 3, H, W), got {images.dtype} of "
            f"shape {tuple(images.shape)}; pass ImageSet.images"
        )
    if images.shape[0] != n:
        raise ValueError(
            f"{what}: {images.shape[0]} images but {n} embeddings; pass the images the "
            "embeddings were computed from, in the same order"
        )


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")


# ---------------------------------------------------------------------------------- output


def _new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg, whatever the backend
    return fig


def _save(fig: Figure, path: Path, *, tight: bool = True) -> Path:
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        bbox_inches="tight" if tight else None,
        metadata={"Software": None},  # no version string: same inputs, same bytes
    )
    return write_atomic(path, buf.getvalue())


def _class_colors(num_classes: int) -> npt.NDArray[np.float64]:
    """(num_classes, 4) RGBA: tab10, tab20, or evenly spaced turbo beyond 20 classes."""
    if num_classes <= 20:
        cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
        return np.asarray(cmap(np.arange(num_classes)))  # integers index the listed colours
    return np.asarray(colormaps["turbo"](np.linspace(0.0, 1.0, num_classes)))


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


def _subsample(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values


# ---------------------------------------------------------------------------------- 2-D


def _optional_umap() -> ModuleType | None:
    try:
        return importlib.import_module("umap")
    except ImportError:
        return None


def available_projections(dim: int) -> tuple[Projection, ...]:
    """The projections :func:`write_pictures` draws for an embedding of dimension ``dim``.

    ``("direct",)`` for 2-D embeddings, else PCA and t-SNE, and UMAP when ``umap-learn`` is
    installed.
    """
    if dim == 2:
        return ("direct",)
    return ("pca", "tsne", "umap") if _optional_umap() is not None else ("pca", "tsne")


def project_2d(embeddings: Tensor, method: Projection, *, seed: int = 0) -> npt.NDArray[np.float32]:
    """Map (N, D) embeddings to (N, 2) points for a scatter plot.

    Args:
        embeddings: (N, D), finite.
        method: ``"direct"`` (the embedding itself; needs D == 2), ``"pca"``, ``"tsne"``
            (perplexity ``min(30, (N - 1) / 3)``, PCA initialisation) or ``"umap"``
            (``n_neighbors = min(15, N - 1)``; needs ``umap-learn``).
        seed: random state of t-SNE and UMAP.

    Returns:
        (N, 2) float32.

    Corner cases:
        PCA, t-SNE and UMAP need N >= 3 and D >= 2; PCA of a 2-D embedding is a rotation.
    """
    _check_choice("projection", method, PROJECTIONS)
    x = embeddings.detach().cpu().double().numpy()
    n, d = x.shape
    if method == "direct":
        if d != 2:
            raise ValueError(
                f"a direct plot needs a 2-D embedding, got D={d}; use method 'pca', 'tsne' or "
                "'umap'"
            )
        return x.astype(np.float32)
    if n < 3 or d < 2:
        raise ValueError(
            f"{method} needs at least 3 points of dimension >= 2, got {n} of dimension {d}; "
            "pass more points (or use 'direct' for a 2-D embedding)"
        )
    if method == "pca":
        from sklearn.decomposition import PCA

        out = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (n - 1) / 3)
        out = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=seed,
        ).fit_transform(x)
    else:
        umap = _optional_umap()
        if umap is None:
            raise ValueError("the 'umap' projection needs umap-learn: pip install umap-learn")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def plot_embedding(
    embeddings: Tensor,
    labels: Tensor,
    path: Path,
    *,
    method: Projection = "pca",
    classes: Sequence[str] | None = None,
    title: str | None = None,
    max_points: int | None = None,
    seed: int = 0,
) -> Path:
    """Scatter plot of an embedding in 2-D, one colour per class, written to ``path``.

    Args:
        embeddings: (N, D), finite.
        labels: (N,) int64 class ids; the colour of a class depends on its id only, so the
            train and test plots of a run agree.
        path: the PNG to write.
        method: see :func:`project_2d`.
        classes: class names for the legend (indexed by label), else the ids.
        title: defaults to the method and the number of points drawn.
        max_points: at most this many points are drawn, a seeded random subset; default
            :data:`MAX_POINTS` of the method (3,000 for t-SNE, which is O(N log N) and slow
            on a CPU).
        seed: subsampling and projection seed.

    Returns:
        ``path``.
    """
    _check_set("plotted", embeddings, labels)
    _check_choice("projection", method, PROJECTIONS)
    n = embeddings.shape[0]
    keep = _subsample(n, max_points or MAX_POINTS[method], seed)
    xy = project_2d(embeddings[keep], method, seed=seed)  # (M, 2)
    y = labels[keep].cpu().numpy()
    num_classes = max(len(classes) if classes is not None else 0, int(y.max()) + 1)
    colors = _class_colors(num_classes)
    present = np.unique(y)
    fig = _new_figure(7.5 if len(present) <= 20 else 6.5, 6.0)
    ax = fig.add_subplot()
    size = float(np.clip(3000 / len(y), 2, 30))
    for c in present:
        mask = y == c
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=size,
            color=colors[c],
            alpha=0.7,
            linewidths=0,
            label=_class_name(int(c), classes),
        )
    names = {"direct": "embedding", "pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
    shown = f"{len(y):,} points" + (f" (random subset of {n:,})" if len(y) < n else "")
    ax.set_title(title or f"{names[method]} of {shown}")
    if method == "direct":
        ax.set_xlabel("dimension 1")
        ax.set_ylabel("dimension 2")
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if len(present) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, frameon=False)
    return _save(fig, path)


# ---------------------------------------------------------------------------------- neighbours


def worst_queries(
    query_labels: Tensor,
    neighbor_labels: Tensor,
    neighbor_distances: Tensor,
    count: int,
    *,
    eligible: Tensor | None = None,
) -> Tensor:
    """The ``count`` queries with the lowest precision@k, worst first.

    precision@k is the fraction of a query's k nearest gallery items that share its class.
    Ties (many queries score 0) are broken by the distance to the nearest wrong neighbour,
    smallest first: the most confident mistakes come first. Remaining ties go to the lower
    query index.

    Args:
        query_labels: (Q,) class ids.
        neighbor_labels: (Q, k) class ids of each query's neighbours, nearest first.
        neighbor_distances: (Q, k) their distances.
        count: how many queries to return (fewer if fewer are eligible).
        eligible: (Q,) bool; queries to rank (e.g. those with at least one item of their
            class in the gallery: a query with none cannot be answered right). Default all.

    Returns:
        (min(count, eligible),) int64 query indices.

    Example:
        >>> y = torch.tensor([0, 1, 2])
        >>> ny = torch.tensor([[0, 0], [0, 1], [0, 0]])
        >>> nd = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
        >>> worst_queries(y, ny, nd, 2).tolist()
        [2, 1]
    """
    q = query_labels.shape[0]
    hits = neighbor_labels == query_labels[:, None]  # (Q, k)
    precision = hits.double().mean(1)  # (Q,)
    wrong = torch.where(hits, torch.inf, neighbor_distances.double())  # (Q, k)
    nearest_wrong = wrong.min(1).values if q and hits.shape[1] else precision
    keys = (np.arange(q), nearest_wrong.cpu().numpy(), precision.cpu().numpy())
    order = torch.from_numpy(np.lexsort(keys))  # last key is the primary one
    if eligible is not None:
        order = order[eligible.cpu()[order]]
    return order[:count].long()


def _search(
    queries: Tensor, gallery: Tensor, k: int, self_rows: Tensor | None, distance: Distance
) -> tuple[Tensor, Tensor]:
    """``nearest_neighbors``, where query i may be gallery row ``self_rows[i]`` (skipped).

    Returns (Q, k) distances and gallery indices, nearest first.
    """
    if self_rows is None:
        return nearest_neighbors(queries, gallery, k, distance=distance)
    d, idx = nearest_neighbors(queries, gallery, k + 1, distance=distance)  # (Q, k + 1)
    keep = idx != self_rows[:, None].to(idx.device)  # (Q, k + 1)
    # With exact duplicates the query itself may fall beyond k + 1: drop the last instead.
    keep[keep.all(1), -1] = False
    q = queries.shape[0]
    return d[keep].view(q, k), idx[keep].view(q, k)


def _to_rgb(image: Tensor) -> npt.NDArray[np.uint8]:
    """(C, H, W) uint8 with C in (1, 3) -> (H, W, 3)."""
    x = image.cpu().permute(1, 2, 0).numpy()
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else np.ascontiguousarray(x)


def plot_neighbor_grid(
    query_images: Tensor,
    query_labels: Tensor,
    neighbor_images: Tensor,
    neighbor_labels: Tensor,
    path: Path,
    *,
    neighbor_distances: Tensor | None = None,
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw one row per query: the query (grey frame), then its neighbours, nearest first.

    A neighbour of the query's class gets a green frame, any other a red one; each tile is
    captioned with its class (and distance). Images are enlarged by an integer factor to at
    least 64 pixels, nearest-neighbour, so that small images (8 x 8 digits) stay legible.

    Args:
        query_images: (Q, C, H, W) uint8, C in (1, 3).
        query_labels: (Q,).
        neighbor_images: (Q, k, C, H, W) uint8.
        neighbor_labels: (Q, k).
        path: the PNG to write.
        neighbor_distances: (Q, k), shown under the tiles when given.
        classes: class names, indexed by label.
        title: a line above the grid.

    Returns:
        ``path``.
    """
    if query_images.shape[0] == 0:
        raise ValueError("no queries to draw; pass at least one query image")
    _check_images("query", query_images, query_labels.shape[0])
    q, k = neighbor_labels.shape
    if q != query_images.shape[0]:
        raise ValueError(
            f"{query_images.shape[0]} queries but neighbour labels for {q}; pass one row of "
            "neighbours per query"
        )
    if neighbor_images.shape[:2] != (q, k) or neighbor_images.shape[2:] != query_images.shape[1:]:
        raise ValueError(
            f"neighbour images must be (Q, k, C, H, W) = ({q}, {k}, "
            f"{', '.join(map(str, query_images.shape[1:]))}), got "
            f"{tuple(neighbor_images.shape)}; index the gallery images with the neighbour indices"
        )
    _, h, w = query_images.shape[1:]
    scale = max(1, math.ceil(64 / max(h, w)))
    th, tw = h * scale, w * scale
    border, gap, caption, top = max(2, th // 16), 4, 16, 28 if title else 6
    cell_w, cell_h = tw + 2 * border + gap, th + 2 * border + caption + gap
    sep = 3 * gap  # between the query column and its neighbours
    width, height = (k + 1) * cell_w + sep + gap, top + q * cell_h
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)  # (H, W, 3) white
    texts: list[tuple[float, float, str]] = []

    def tile(row: int, col: int, image: Tensor, frame: tuple[int, int, int], text: str) -> None:
        x0 = gap + col * cell_w + (sep if col else 0)
        y0 = top + row * cell_h
        canvas[y0 : y0 + th + 2 * border, x0 : x0 + tw + 2 * border] = frame
        big = _to_rgb(image).repeat(scale, 0).repeat(scale, 1)  # (th, tw, 3)
        canvas[y0 + border : y0 + border + th, x0 + border : x0 + border + tw] = big
        texts.append((x0 + border + tw / 2, y0 + th + 2 * border + 1, text))

    for r in range(q):
        yq = int(query_labels[r])
        tile(r, 0, query_images[r], GREY, _class_name(yq, classes))
        for c in range(k):
            yn = int(neighbor_labels[r, c])
            text = _class_name(yn, classes)
            if neighbor_distances is not None:
                text += f" {float(neighbor_distances[r, c]):.2f}"
            tile(r, c + 1, neighbor_images[r, c], GREEN if yn == yq else RED, text)

    dpi = 100
    fig = _new_figure(width / dpi, height / dpi, dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text in texts:
        ax.text(x, y, text[:18], ha="center", va="top", fontsize=6.5, clip_on=True)
    if title:
        ax.text(gap, top / 2, title, ha="left", va="center", fontsize=9)
    return _save(fig, path, tight=False)


def plot_neighbors(
    embeddings: Tensor,
    labels: Tensor,
    images: Tensor,
    path: Path,
    *,
    gallery_embeddings: Tensor | None = None,
    gallery_labels: Tensor | None = None,
    gallery_images: Tensor | None = None,
    k: int = 8,
    num_queries: int = 8,
    select: QuerySelection = "random",
    distance: Distance = "euclidean",
    classes: Sequence[str] | None = None,
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Nearest-neighbour grid of some queries (see :func:`plot_neighbor_grid`).

    The neighbours come from :func:`tripletlab.metrics.nearest_neighbors`. Without a gallery,
    each query is searched among the other items of its own set (leave-one-out, as
    :func:`tripletlab.metrics.retrieval_scores`).

    Args:
        embeddings, labels, images: the query set, (N, D), (N,), (N, C, H, W) uint8.
        path: the PNG to write.
        gallery_embeddings, gallery_labels, gallery_images: a separate gallery (all three or
            none), (G, D), (G,), (G, C, H, W).
        k: neighbours per query, at most G (N - 1 without a gallery).
        num_queries: rows of the grid; fewer if the set has fewer (eligible) queries.
        select: ``"random"``: a seeded random sample of queries. ``"worst"``: the queries
            with the lowest precision@k, ties broken by the nearest wrong neighbour (see
            :func:`worst_queries`), among at most :data:`NEIGHBOR_MAX_QUERIES` candidates
            (a seeded subset); queries with no item of their class in the gallery are left
            out, since no embedding could answer them.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        classes: class names, indexed by label.
        title: defaults to a description of the selection.
        seed: the query sample's seed.

    Returns:
        ``path``.

    Raises:
        ValueError: bad shapes, NaN embeddings, ``k`` too large, an empty set, or (``worst``)
            no query with an item of its class in the gallery.
    """
    _check_choice("query selection", select, QUERY_SELECTIONS)
    check_distance(distance)
    _check_set("query", embeddings, labels)
    _check_images("query", images, embeddings.shape[0])
    given = [t is not None for t in (gallery_embeddings, gallery_labels, gallery_images)]
    if any(given) and not all(given):
        raise ValueError(
            "a gallery was only partly given; pass all three of gallery_embeddings, "
            "gallery_labels and gallery_images, or none to search each query's own set"
        )
    if gallery_embeddings is not None and gallery_labels is not None and gallery_images is not None:
        g_emb, g_lab, g_img = gallery_embeddings, gallery_labels, gallery_images
        _check_set("gallery", g_emb, g_lab)
        _check_images("gallery", g_img, g_emb.shape[0])
        if g_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"queries are {embeddings.shape[1]}-D but the gallery is {g_emb.shape[1]}-D; "
                "embed both with the same model"
            )
        leave_one_out = False
    else:
        g_emb, g_lab, g_img, leave_one_out = embeddings, labels, images, True
    n, limit = embeddings.shape[0], g_emb.shape[0] - int(leave_one_out)
    if not 1 <= k <= limit:
        where = f"{g_emb.shape[0]} items" + (", less the query itself" if leave_one_out else "")
        raise ValueError(
            f"k={k} neighbours asked for but the gallery has {limit} to choose from ({where}); "
            f"use 1 <= k <= {limit}"
        )
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1, got {num_queries}")
    g = torch.Generator().manual_seed(seed)
    if select == "random":
        rows = torch.randperm(n, generator=g)[:num_queries]
    else:
        rows = _subsample(n, NEIGHBOR_MAX_QUERIES, seed)
    self_rows = rows if leave_one_out else None
    e = embeddings[rows.to(embeddings.device)]  # (R, D)
    dist, idx = _search(e, g_emb, k, self_rows, distance)  # (R, k) each
    dist, idx = dist.cpu(), idx.cpu()  # the rest is small and on the CPU
    y, g_y = labels.cpu()[rows], g_lab.cpu()
    if select == "worst":
        values, counts = torch.unique(g_y, return_counts=True)  # (U,) sorted
        at = torch.searchsorted(values, y).clamp(max=values.shape[0] - 1)  # (R,)
        in_gallery = torch.where(values[at] == y, counts[at], 0) - int(leave_one_out)  # (R,)
        pick = worst_queries(y, g_y[idx], dist, num_queries, eligible=in_gallery > 0)
        if pick.numel() == 0:
            raise ValueError(
                "no query has an item of its class in the gallery, so there is no worst query "
                "to show; use select='random'"
            )
        rows, y, dist, idx = rows[pick], y[pick], dist[pick], idx[pick]
    shown = "random queries" if select == "random" else "worst queries (lowest precision@k)"
    return plot_neighbor_grid(
        images[rows.to(images.device)].cpu(),
        y,
        g_img[idx.to(g_img.device)].cpu(),  # (R, k, C, H, W)
        g_y[idx],
        path,
        neighbor_distances=dist,
        classes=classes,
        title=title or f"{shown} and their {k} nearest neighbours (green: same class)",
    )


# ---------------------------------------------------------------------------------- pairs


def plot_distance_histogram(
    embeddings: Tensor,
    labels: Tensor,
    path: Path,
    *,
    threshold: float | None = None,
    num_pairs: int = 20_000,
    distance: Distance = "euclidean",
    bins: int = 60,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Histograms of the distances of positive and negative pairs, threshold marked.

    About ``min(num_pairs, N (N - 1) / 2)`` random pairs, half positive and half negative,
    are sampled with :func:`tripletlab.data.pair_indices` (with replacement; never the N x N
    matrix). Both histograms are normalised to unit area. With a threshold, the legend gives
    the balanced accuracy of "same class iff distance <= threshold" on the sampled pairs.

    Args:
        embeddings: (N, D), finite.
        labels: (N,) class ids; at least 2 classes and one class with 2 items.
        path: the PNG to write.
        threshold: a distance to mark, e.g. ``metrics["pair_threshold"]``.
        num_pairs: pairs to sample.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        bins: histogram bins.
        seed: pair sampling seed.
        title: defaults to the number of pairs.

    Returns:
        ``path``.
    """
    check_distance(distance)
    _check_set("histogram", embeddings, labels)
    counts = torch.bincount(labels.cpu() - labels.min().cpu())
    if int((counts > 0).sum()) < 2 or int(counts.max()) < 2:
        raise ValueError(
            "distance histograms need at least 2 classes and a class with 2 items; pass a "
            "larger set"
        )
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be >= 2, got {num_pairs}")
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    num_pairs = min(num_pairs, n * (n - 1) // 2)  # no more pairs than there are
    i, j, same = pair_indices(labels.cpu(), num_pairs, generator=g)  # (P,) each
    dev = embeddings.device
    d = paired_distances(embeddings[i.to(dev)], embeddings[j.to(dev)], distance).double().cpu()
    pos, neg = d[same].numpy(), d[~same].numpy()
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(d.numpy(), bins=bins).tolist()
    ax.hist(
        pos,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:green",
        label=f"same class ({len(pos):,})",
    )
    ax.hist(
        neg,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:red",
        label=f"different classes ({len(neg):,})",
    )
    if threshold is not None:
        tpr = float((pos <= threshold).mean()) if len(pos) else 0.0
        tnr = float((neg > threshold).mean()) if len(neg) else 0.0
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {threshold:.3g} (balanced accuracy {(tpr + tnr) / 2:.1%})",
        )
    ax.set_xlabel(f"{distance} distance")
    ax.set_ylabel("density")
    ax.set_title(title or f"distances of {len(d):,} random pairs")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_calibration(
    calibration: Calibration,
    path: Path,
    *,
    distance: str = "euclidean",
    title: str | None = None,
) -> Path:
    """Precision, recall and F1 of "match when the nearest distance <= t" against ``t``,
    with the stored thresholds marked (see :mod:`tripletlab.calibration`).

    Args:
        calibration: from :meth:`tripletlab.search.EmbeddingIndex.calibrate`.
        path: the PNG to write.
        distance: the index's distance, for the axis label.
        title: defaults to the query counts.

    Returns:
        ``path``.

    Corner cases:
        An infinite candidate threshold (a query with no neighbour) is left out of the x
        axis; an unreachable target precision is listed in the legend without a line.
    """
    c = calibration.curve
    finite = torch.isfinite(c.thresholds)
    t = c.thresholds[finite].numpy()
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for values, name, color in (
        (c.precision, "precision", "tab:blue"),
        (c.recall, "recall", "tab:orange"),
        (c.f1, "F1", "tab:green"),
    ):
        ax.plot(t, values[finite].numpy(), color=color, label=name, drawstyle="steps-post")
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    for n, p in enumerate(calibration.points):
        if p.threshold is None:
            ax.plot([], [], " ", label=f"{p.name}: not reachable")
            continue
        ax.axvline(
            p.threshold,
            color="black",
            linestyle=styles[n % len(styles)],
            linewidth=1.0,
            label=f"{p.name}: t={p.threshold:.3g} (P {p.precision:.3f}, R {p.recall:.3f})",
        )
    ax.set_xlabel(f"threshold on the nearest {distance} distance")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(
        title or f"calibration on {c.num_queries:,} queries ({c.num_known:,} of indexed classes)"
    )
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------- history

#: History keys that are not curves (counters and timings).
_BOOKKEEPING = {"epoch", "steps", "samples", "seconds", "loss_seconds", "samples_per_second", "lr"}
_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("training loss", ("loss",)),
    ("fraction of active triplets (pairs)", ("fraction_active",)),
    ("mean distance in the batch", ("pos_distance", "neg_distance")),
)


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], path: Path, *, title: str | None = None
) -> Path:
    """One panel each for loss, fraction of active triplets, mean positive/negative distance,
    and evaluation metrics, per epoch, from :func:`tripletlab.training.fit`'s history.

    Every other numeric key of the records (e.g. ``val_knn_accuracy``) is drawn in the
    evaluation panel, except counters and timings (``steps``, ``samples``, ``seconds``,
    ``loss_seconds``, ``samples_per_second``, ``lr``). A key missing from some epochs, or a
    NaN, leaves a gap. Panels with no data are left out. For the softmax objective,
    ``fraction_active`` is the batch error rate.

    Args:
        history: one dict per epoch, with ``epoch`` (1-based; else the position is used).
        path: the PNG to write.
        title: a title above the panels.

    Returns:
        ``path``.
    """
    if len(history) == 0:
        raise ValueError("the history is empty; train for at least one epoch first")
    for r in history:
        if not isinstance(r, Mapping):
            raise ValueError(f"history records must be dicts, got {type(r).__name__}")
    x = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(history)])

    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def series(key: str) -> npt.NDArray[np.float64]:
        return np.array([float(r[key]) if is_number(r.get(key)) else np.nan for r in history])

    known = {k for _, keys in _PANELS for k in keys} | _BOOKKEEPING
    in_order = dict.fromkeys(k for r in history for k in r)  # keys in order of appearance
    numeric = [k for k in in_order if k not in known and any(is_number(r.get(k)) for r in history)]
    panels = [(name, keys) for name, keys in _PANELS if any(k in r for r in history for k in keys)]
    if numeric:
        panels.append(("evaluation", tuple(numeric)))
    if not panels:
        raise ValueError(
            "the history has no curve to draw (no loss, fraction_active or metric keys); pass "
            "the history of training.fit"
        )
    fig = _new_figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(x, series(key), marker="o", markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1 or name == "evaluation":
            ax.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------- projector


def _tsv_cell(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a cell


def write_projector(
    out_dir: Path,
    embeddings: Tensor,
    labels: Tensor,
    *,
    images: Tensor | None = None,
    classes: Sequence[str] | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
    max_points: int = PROJECTOR_MAX_POINTS,
    seed: int = 0,
    tensor_name: str = "embedding",
) -> dict[str, Path]:
    """Write a TensorBoard projector export as plain files (no TensorFlow or TensorBoard).

    Files in ``out_dir``: ``tensors.tsv`` (one row of D values per point), ``metadata.tsv``
    (a header row ``label<TAB>class[<TAB>column...]``, then one row per point),
    ``sprite.png`` (with ``images``: the thumbnails in row-major order on a square grid, each
    shrunk if needed to keep the sprite within 8192 x 8192) and ``projector_config.pbtxt``
    (paths relative to ``out_dir``). View with ``tensorboard --logdir OUT_DIR`` (Projector
    tab), or load the two TSV files at https://projector.tensorflow.org.

    Args:
        out_dir: the folder to write (created if needed).
        embeddings: (N, D), finite.
        labels: (N,) class ids.
        images: (N, C, H, W) uint8, for the sprite.
        classes: class names, indexed by label.
        columns: extra metadata columns, each a sequence of N strings (e.g. the split).
        max_points: at most this many points, a seeded random subset (in order).
        seed: subsampling seed.
        tensor_name: the name shown in the projector.

    Returns:
        ``{"tensors": ..., "metadata": ..., "sprite": ..., "config": ...}`` (no sprite
        without images).
    """
    _check_set("projector", embeddings, labels)
    n = embeddings.shape[0]
    if images is not None:
        _check_images("projector", images, n)
    extra = dict(columns or {})
    for name, values in extra.items():
        if len(values) != n:
            raise ValueError(
                f"metadata column {name!r} has {len(values)} values for {n} points; pass one "
                "value per embedding row"
            )
    keep = _subsample(n, max_points, seed)
    e = embeddings[keep.to(embeddings.device)].detach().cpu().double().numpy()  # (M, D)
    y = labels[keep.to(labels.device)].cpu().tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    buf = io.StringIO()
    np.savetxt(buf, e, fmt="%.6g", delimiter="\t")
    written["tensors"] = write_atomic(out_dir / "tensors.tsv", buf.getvalue().encode())

    header = ["label", "class", *(_tsv_cell(c) for c in extra)]
    rows = ["\t".join(header)]
    for pos, i in enumerate(keep.tolist()):
        cells = [str(y[pos]), _class_name(y[pos], classes), *(str(v[i]) for v in extra.values())]
        rows.append("\t".join(_tsv_cell(c) for c in cells))
    meta = "\n".join(rows) + "\n"
    written["metadata"] = write_atomic(out_dir / "metadata.tsv", meta.encode())

    sprite = ""
    if images is not None:
        m = len(keep)
        side = math.ceil(math.sqrt(m))  # tiles per row and column
        h, w = images.shape[2:]
        shrink = min(1.0, SPRITE_MAX_SIDE / (side * max(h, w)))
        th, tw = max(1, int(h * shrink)), max(1, int(w * shrink))
        mode = "L" if images.shape[1] == 1 else "RGB"
        sheet = Image.new(mode, (side * tw, side * th), 0)
        for pos, i in enumerate(keep.tolist()):
            x = images[i].cpu().permute(1, 2, 0).numpy()  # (H, W, C)
            thumb = Image.fromarray(x[:, :, 0] if mode == "L" else x, mode)
            if (th, tw) != (h, w):
                thumb = thumb.resize((tw, th), Image.Resampling.BILINEAR)
            sheet.paste(thumb, ((pos % side) * tw, (pos // side) * th))
        png = io.BytesIO()
        sheet.save(png, format="PNG")
        written["sprite"] = write_atomic(out_dir / "sprite.png", png.getvalue())
        sprite = (
            "  sprite {\n"
            '    image_path: "sprite.png"\n'
            f"    single_image_dim: {tw}\n"
            f"    single_image_dim: {th}\n"
            "  }\n"
        )
    name = tensor_name.replace("\\", "\\\\").replace('"', '\\"')
    config = (
        "embeddings {\n"
        f'  tensor_name: "{name}"\n'
        '  tensor_path: "tensors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n'
        f"{sprite}"
        "}\n"
    )
    written["config"] = write_atomic(out_dir / "projector_config.pbtxt", config.encode())
    return written


# ---------------------------------------------------------------------------------- all


def write_pictures(
    out_dir: Path,
    *,
    test: ImageSet,
    test_embeddings: Tensor,
    train: ImageSet | None = None,
    train_embeddings: Tensor | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    threshold: float | None = None,
    distance: Distance = "euclidean",
    k: int = 8,
    num_queries: int = 8,
    projections: Sequence[Projection] | None = None,
    max_points: int | None = None,
    projector: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write the full set of pictures of a run into ``out_dir``; return name -> path.

    Names (each a PNG in ``out_dir`` unless said otherwise):

    - ``learning_curves``: :func:`plot_learning_curves` of ``history`` (when not empty).
    - ``embedding_{split}_{method}``, split ``train`` (when given) and ``test``, method from
      ``projections`` (default :func:`available_projections`: ``direct`` for a 2-D
      embedding, else ``pca``, ``tsne`` and ``umap`` when installed).
    - ``neighbors_random``, ``neighbors_worst``: :func:`plot_neighbors` of test queries among
      the rest of the test set (leave-one-out, as the test metrics; works with class-disjoint
      splits). ``neighbors_worst`` is left out when no test class has two items.
    - ``distances``: :func:`plot_distance_histogram` of test pairs with ``threshold``
      marked; left out when the test set has one class or no class with two items.
    - ``projector_tensors``, ``projector_metadata``, ``projector_sprite``,
      ``projector_config``: :func:`write_projector` in ``out_dir / "projector"`` of up to
      5,000 points of each split, with a ``split`` column.

    Inputs are checked before the slow steps, so that bad data fails at once.

    Args:
        out_dir: the folder to write (created if needed), e.g. ``run_dir / "pictures"``.
        test, test_embeddings: the test images and their (N, D) embeddings, in order.
        train, train_embeddings: the same for the training set (both or neither).
        history: :func:`tripletlab.training.fit`'s per-epoch records.
        threshold: marked on the distance histogram, e.g. ``metrics["pair_threshold"]``.
        distance: the run's distance.
        k: neighbours per query in the grids.
        num_queries: rows of each grid.
        projections: which 2-D projections to draw.
        max_points: cap on points per embedding plot (default :data:`MAX_POINTS`).
        projector: write the projector export.
        seed: every random choice.
        progress: see :data:`Progress`; t-SNE steps take tens of seconds each.

    Returns:
        ``{name: path}`` in drawing order.
    """
    check_distance(distance)
    _check_set("test", test_embeddings, test.labels)
    _check_images("test", test.images, test_embeddings.shape[0])
    if (train is None) != (train_embeddings is None):
        given = "train" if train is not None else "train_embeddings"
        raise ValueError(
            f"only {given} was given; pass both train and train_embeddings, or neither"
        )
    sets: list[tuple[str, ImageSet, Tensor]] = []
    if train is not None and train_embeddings is not None:
        _check_set("train", train_embeddings, train.labels)
        _check_images("train", train.images, train_embeddings.shape[0])
        if train_embeddings.shape[1] != test_embeddings.shape[1]:
            raise ValueError(
                f"train embeddings are {train_embeddings.shape[1]}-D but test embeddings "
                f"{test_embeddings.shape[1]}-D; embed both with the same model"
            )
        sets.append(("train", train, train_embeddings))
    sets.append(("test", test, test_embeddings))
    dim = test_embeddings.shape[1]
    methods = tuple(projections) if projections is not None else available_projections(dim)
    for m in methods:
        _check_choice("projection", m, PROJECTIONS)
        if m == "direct" and dim != 2:
            raise ValueError(f"a direct plot needs a 2-D embedding, got D={dim}; drop 'direct'")
    if not 1 <= k <= len(test) - 1:
        raise ValueError(
            f"k={k} neighbours asked for but the test set has {len(test)} items (k <= "
            f"{len(test) - 1} with the query left out); lower k"
        )
    classes = test.classes
    counts = torch.bincount(test.labels.cpu(), minlength=len(classes))
    steps: list[tuple[str, Callable[[], dict[str, Path]]]] = []

    def one(name: str, draw: Callable[[Path], Path]) -> None:
        steps.append((name, lambda: {name: draw(out_dir / f"{name}.png")}))

    if len(history):
        one("learning_curves", lambda p: plot_learning_curves(history, p))
    for m in methods:  # train and test side by side, method by method
        for split, images, emb in sets:

            def draw(
                p: Path, emb: Tensor = emb, labels: Tensor = images.labels, m: Any = m
            ) -> Path:
                return plot_embedding(
                    emb, labels, p, method=m, classes=classes, max_points=max_points, seed=seed
                )

            one(f"embedding_{split}_{m}", draw)
    nb: dict[str, Any] = {"k": k, "num_queries": num_queries, "distance": distance}
    one(
        "neighbors_random",
        lambda p: plot_neighbors(
            test_embeddings, test.labels, test.images, p, classes=classes, seed=seed, **nb
        ),
    )
    if int(counts.max()) >= 2:
        one(
            "neighbors_worst",
            lambda p: plot_neighbors(
                test_embeddings,
                test.labels,
                test.images,
                p,
                select="worst",
                classes=classes,
                seed=seed,
                **nb,
            ),
        )
    if int((counts > 0).sum()) >= 2 and int(counts.max()) >= 2:
        one(
            "distances",
            lambda p: plot_distance_histogram(
                test_embeddings, test.labels, p, threshold=threshold, distance=distance, seed=seed
            ),
        )
    if projector:

        def export() -> dict[str, Path]:
            half = PROJECTOR_MAX_POINTS // len(sets)
            parts = [(s, x, e, _subsample(len(x), half, seed)) for s, x, e in sets]
            files = write_projector(
                out_dir / "projector",
                torch.cat([e[i.to(e.device)].cpu() for _, _, e, i in parts]),
                torch.cat([x.labels[i] for _, x, _, i in parts]),
                images=torch.cat([x.images[i] for _, x, _, i in parts]),
                classes=classes,
                columns={"split": [s for s, _, _, i in parts for _ in range(len(i))]},
                max_points=PROJECTOR_MAX_POINTS,
                seed=seed,
            )
            return {f"projector_{name}": path for name, path in files.items()}

        steps.append(("projector", export))

    written: dict[str, Path] = {}
    for done, (name, step) in enumerate(steps):
        if progress is not None:
            progress(name, done, len(steps))
        written.update(step())
    if progress is not None:
        progress("done", len(steps), len(steps))
    return written
