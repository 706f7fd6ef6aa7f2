"""Pictures of a trained embedding, written into a run folder as PNG files.

- :func:`plot_embedding` (:mod:`~tripletlab.plots.embedding`): the embedding in 2-D, coloured
  by class: drawn directly when it is 2-D (as the figures of the siamese-triplet repository),
  else projected with PCA, t-SNE (van der Maaten and Hinton, "Visualizing Data using t-SNE",
  JMLR 2008) or UMAP (McInnes, Healy and Melville, arXiv:1802.03426, 2018; only when the
  optional ``umap-learn`` package is installed).
- :func:`plot_neighbors` (:mod:`~tripletlab.plots.neighbors`): query images with their nearest
  gallery images, correct neighbours framed green and wrong ones red, for random queries or
  the worst ones (:func:`worst_queries`).
- :func:`plot_distance_histogram` (:mod:`~tripletlab.plots.thresholds`): distances of sampled
  positive and negative pairs, with a threshold marked.
- :func:`plot_calibration` (:mod:`~tripletlab.plots.thresholds`): precision, recall and F1 of
  an index's match threshold against the threshold, the stored thresholds marked.
- :func:`plot_learning_curves` (:mod:`~tripletlab.plots.curves`): loss, fraction of active
  triplets, mean distances and evaluation metrics per epoch, from
  :func:`tripletlab.training.fit`'s history.
- :func:`write_projector` (:mod:`~tripletlab.plots.projector`): a TensorBoard projector export
  as plain files.
- :func:`write_pictures` (:mod:`~tripletlab.plots.pictures`): all of the above for a run's
  train and test sets.

Every function takes tensors and an output path, draws on a fresh ``Figure`` with the Agg
canvas (no pyplot, no global backend state, no display needed), writes the file atomically
(temporary file in the same folder, then ``os.replace``) and returns the written path
(helpers shared by the plots: :mod:`~tripletlab.plots._common`). Randomness (subsampling, pair
sampling, random queries, t-SNE, UMAP) comes from ``seed`` only: the same inputs give the same
pictures.

The names below are re-exported from the submodules; the module constants (e.g.
``SPRITE_MAX_SIDE``) are read where they are defined, so patch them there.
"""

from __future__ import annotations

from tripletlab.plots.curves import plot_learning_curves
from tripletlab.plots.embedding import (
    MAX_POINTS,
    PROJECTIONS,
    Projection,
    available_projections,
    plot_embedding,
    project_2d,
)
from tripletlab.plots.neighbors import (
    GREEN,
    GREY,
    NEIGHBOR_MAX_QUERIES,
    QUERY_SELECTIONS,
    RED,
    QuerySelection,
    plot_neighbor_grid,
    plot_neighbors,
    worst_queries,
)
from tripletlab.plots.pictures import Progress, write_pictures
from tripletlab.plots.projector import PROJECTOR_MAX_POINTS, SPRITE_MAX_SIDE, write_projector
from tripletlab.plots.thresholds import plot_calibration, plot_distance_histogram

__all__ = [
    "GREEN",
    "GREY",
    "MAX_POINTS",
    "NEIGHBOR_MAX_QUERIES",
    "PROJECTIONS",
    "PROJECTOR_MAX_POINTS",
    "QUERY_SELECTIONS",
    "RED",
    "SPRITE_MAX_SIDE",
    "Progress",
    "Projection",
    "QuerySelection",
    "available_projections",
    "plot_calibration",
    "plot_distance_histogram",
    "plot_embedding",
    "plot_learning_curves",
    "plot_neighbor_grid",
    "plot_neighbors",
    "project_2d",
    "worst_queries",
    "write_pictures",
    "write_projector",
]
