"""All the pictures of a run: :func:`write_pictures` draws every plot of the package for a
run's train and test sets, checking the inputs before the slow steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tripletlab.checks import check_choice
from tripletlab.data import ImageSet
from tripletlab.distances import Distance, check_distance
from tripletlab.plots._common import _check_images, _check_set, _subsample
from tripletlab.plots.curves import plot_learning_curves
from tripletlab.plots.embedding import (
    PROJECTIONS,
    Projection,
    available_projections,
    plot_embedding,
)
from tripletlab.plots.neighbors import plot_neighbors
from tripletlab.plots.projector import PROJECTOR_MAX_POINTS, write_projector
from tripletlab.plots.thresholds import plot_distance_histogram

#: ``progress(step, done, total)``: called before each step of :func:`write_pictures` with
#: the step's name and the number of steps done, and once at the end with ``"done"``.
Progress = Callable[[str, int, int], None]


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
        check_choice("projection", m, PROJECTIONS)
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
