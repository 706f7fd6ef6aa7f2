"""The embedding in 2-D, coloured by class: :func:`plot_embedding`.

Drawn directly when the embedding is 2-D (as the figures of the siamese-triplet repository),
else projected (:func:`project_2d`) with PCA, t-SNE (van der Maaten and Hinton, "Visualizing
Data using t-SNE", JMLR 2008) or UMAP (McInnes, Healy and Melville, arXiv:1802.03426, 2018;
only when the optional ``umap-learn`` package is installed).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from torch import Tensor

from tripletlab.checks import check_choice
from tripletlab.plots._common import (
    _check_set,
    _class_colors,
    _class_name,
    _new_figure,
    _save,
    _subsample,
)

Projection = Literal["direct", "pca", "tsne", "umap"]
PROJECTIONS: tuple[Projection, ...] = get_args(Projection)

#: Points drawn per embedding plot, by method; larger sets are subsampled with a seeded
#: generator. t-SNE (scikit-learn's Barnes-Hut) took 10 s for 1,000 and 40 s for 3,000
#: 64-D points on one busy CPU core; the others are cheap, and the cap only keeps the
#: scatter readable and the PNG small.
MAX_POINTS: dict[str, int] = {"direct": 20_000, "pca": 20_000, "tsne": 3_000, "umap": 10_000}


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
    check_choice("projection", method, PROJECTIONS)
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
            train and test plots of a run agree (consecutive ids of many classes, such as a
            run's unseen ones, get distinct colours: see ``_class_colors``).
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
    check_choice("projection", method, PROJECTIONS)
    n = embeddings.shape[0]
    keep = _subsample(n, max_points or MAX_POINTS[method], seed)
    xy = project_2d(embeddings[keep], method, seed=seed)  # (M, 2)
    y = labels[keep].cpu().numpy()
    num_classes = max(len(classes) if classes is not None else 0, int(y.max()) + 1)
    present = np.unique(y)
    colors = _class_colors(num_classes)[present]  # (len(present), 4)
    fig = _new_figure(7.5 if len(present) <= 20 else 6.5, 6.0)
    ax = fig.add_subplot()
    size = float(np.clip(3000 / len(y), 2, 30))
    for c, color in zip(present, colors, strict=True):
        mask = y == c
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=size,
            color=color,
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
