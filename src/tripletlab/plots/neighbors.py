"""Nearest-neighbour grids: query images with their nearest gallery images, correct neighbours
framed green, wrong ones red and those of an unknown query grey (:func:`plot_neighbor_grid`),
for random queries or the worst ones (:func:`plot_neighbors`, ranked by
:func:`worst_queries`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from tripletlab.checks import check_choice, printable
from tripletlab.data import DiskImages, Images
from tripletlab.distances import Distance, check_distance
from tripletlab.metrics import nearest_neighbors
from tripletlab.plots._common import (
    _check_images,
    _check_set,
    _class_name,
    _new_figure,
    _save,
    _subsample,
    wrap_text,
)

QuerySelection = Literal["random", "worst"]
QUERY_SELECTIONS: tuple[str, ...] = get_args(QuerySelection)

#: Candidate queries searched for the worst ones (each against the whole gallery).
NEIGHBOR_MAX_QUERIES = 10_000

GREEN, RED, GREY = (44, 160, 44), (214, 39, 40), (150, 150, 150)


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


def _on(index: Tensor, images: Images) -> Tensor:
    """``index`` where ``images`` can take it: their device, or the CPU for images on disk."""
    return index.cpu() if isinstance(images, DiskImages) else index.to(images.device)


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
    beyond: Tensor | None = None,
) -> Path:
    """Draw one row per query: the query (grey frame), then its neighbours, nearest first.

    A neighbour of the query's class gets a green frame, one of another class a red one;
    when the query's label or the neighbour's is unknown (< 0) the frame is grey, since
    there is nothing to compare. Each tile is captioned with its class ("unknown" for a
    label < 0; names with newlines or tabs escaped) and distance. Neighbours marked in
    ``beyond`` (e.g. farther than a match threshold) are drawn faded, half-way to white.
    Images are enlarged by an integer factor to at least 64 pixels, nearest-neighbour, so
    that small images (8 x 8 digits) stay legible.

    Args:
        query_images: (Q, C, H, W) uint8, C in (1, 3).
        query_labels: (Q,).
        neighbor_images: (Q, k, C, H, W) uint8.
        neighbor_labels: (Q, k).
        path: the PNG to write.
        neighbor_distances: (Q, k), shown under the tiles when given.
        classes: class names, indexed by label.
        title: text above the grid, wrapped to its width.
        beyond: (Q, k) bool, the neighbours to draw faded.

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
    if beyond is not None and tuple(beyond.shape) != (q, k):
        raise ValueError(f"beyond must be (Q, k) = ({q}, {k}), got {tuple(beyond.shape)}")
    _, h, w = query_images.shape[1:]
    scale = max(1, math.ceil(64 / max(h, w)))
    th, tw = h * scale, w * scale
    border, gap, caption = max(2, th // 16), 4, 16
    cell_w, cell_h = tw + 2 * border + gap, th + 2 * border + caption + gap
    sep = 3 * gap  # between the query column and its neighbours
    width = (k + 1) * cell_w + sep + gap
    lines = wrap_text(title or "", width - 2 * gap, fontsize=9)  # as wide as the grid
    top = 14 * len(lines) + 14 if lines else 6
    height = top + q * cell_h
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)  # (H, W, 3) white
    texts: list[tuple[float, float, str]] = []

    def tile(
        row: int, col: int, image: Tensor, frame: tuple[int, int, int], text: str, faded: bool
    ) -> None:
        x0 = gap + col * cell_w + (sep if col else 0)
        y0 = top + row * cell_h
        cell = canvas[y0 : y0 + th + 2 * border, x0 : x0 + tw + 2 * border]  # a view
        cell[:] = frame
        big = _to_rgb(image).repeat(scale, 0).repeat(scale, 1)  # (th, tw, 3)
        cell[border : border + th, border : border + tw] = big
        if faded:
            cell[:] = (cell.astype(np.uint16) + 255) // 2
        texts.append((x0 + border + tw / 2, y0 + th + 2 * border + 1, text))

    def name(label: int) -> str:
        return printable(_class_name(label, classes)) if label >= 0 else "unknown"

    for r in range(q):
        yq = int(query_labels[r])
        tile(r, 0, query_images[r], GREY, name(yq), False)
        for c in range(k):
            yn = int(neighbor_labels[r, c])
            text = name(yn)
            if neighbor_distances is not None:
                text += f" {float(neighbor_distances[r, c]):.2f}"
            frame = GREY if yq < 0 or yn < 0 else GREEN if yn == yq else RED
            far = beyond is not None and bool(beyond[r, c])
            tile(r, c + 1, neighbor_images[r, c], frame, text, far)

    dpi = 100
    fig = _new_figure(width / dpi, height / dpi, dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text in texts:
        ax.text(x, y, text[:18], ha="center", va="top", fontsize=6.5, clip_on=True)
    if lines:
        ax.text(gap, top / 2, "\n".join(lines), ha="left", va="center", fontsize=9)
    return _save(fig, path, tight=False)


def plot_neighbors(
    embeddings: Tensor,
    labels: Tensor,
    images: Images,
    path: Path,
    *,
    gallery_embeddings: Tensor | None = None,
    gallery_labels: Tensor | None = None,
    gallery_images: Images | None = None,
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
    check_choice("query selection", select, QUERY_SELECTIONS)
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
        images[_on(rows, images)].cpu(),
        y,
        g_img[_on(idx, g_img)].cpu(),  # (R, k, C, H, W)
        g_y[idx],
        path,
        neighbor_distances=dist,
        classes=classes,
        title=title or f"{shown} and their {k} nearest neighbours (green: same class)",
    )
