"""NMI and AMI of k-means clusters (scikit-learn's) against the classes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from tripletlab.distances import Distance, check_distance
from tripletlab.metrics.checks import _check_labeled


@dataclass(frozen=True)
class ClusteringScores:
    """Agreement of k-means clusters with the classes.

    Attributes:
        nmi: normalised mutual information ``I(Y; C) / ((H(Y) + H(C)) / 2)``.
        ami: adjusted mutual information ``(I - E[I]) / ((H(Y) + H(C)) / 2 - E[I])``, 0 for
            chance-level clusters.
        num_clusters: k, the number of classes.
    """

    nmi: float
    ami: float
    num_clusters: int


def clustering_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    seed: int = 0,
    n_init: int = 1,
    distance: Distance = "euclidean",
) -> ClusteringScores:
    """NMI and AMI of k-means clusters (as many clusters as classes) against the classes.

    scikit-learn's ``KMeans(n_clusters=k, n_init=n_init, random_state=seed)`` (k-means++
    seeding, Lloyd iterations) clusters the embeddings; ``normalized_mutual_info_score`` and
    ``adjusted_mutual_info_score`` (arithmetic mean normalisation, as pytorch-metric-learning)
    compare the clusters with the labels. ``distance="cosine"`` clusters the L2-normalised
    rows; ``"sqeuclidean"`` is the same as ``"euclidean"`` for k-means.

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        seed: k-means' random state.
        n_init: k-means restarts (the best inertia is kept).
        distance: as above.

    Corner cases:
        No item: NMI and AMI NaN (not computable), 0 clusters. One class: one cluster,
        NMI = AMI = 1. The cost is k-means' (O(N k D) per iteration), not quadratic.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
        >>> clustering_scores(x, torch.tensor([0, 0, 1, 1]))
        ClusteringScores(nmi=1.0, ami=1.0, num_clusters=2)
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    if embeddings.shape[0] == 0:
        return ClusteringScores(math.nan, math.nan, 0)
    x = embeddings.detach()
    if distance == "cosine":
        x = F.normalize(x, dim=1)
    y = labels.cpu().numpy()
    k = len(np.unique(y))
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    with warnings.catch_warnings():  # duplicated points: fewer distinct clusters, scored as such
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        clusters = km.fit_predict(x.cpu().double().numpy())
    nmi = float(normalized_mutual_info_score(y, clusters))
    ami = float(adjusted_mutual_info_score(y, clusters))
    return ClusteringScores(nmi, ami, k)
