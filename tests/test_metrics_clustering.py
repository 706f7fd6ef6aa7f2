"""tripletlab.metrics.clustering against scikit-learn, pytorch-metric-learning and brute force."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import reference
import torch
from metrics_data import data
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from tripletlab.metrics import clustering_scores


def sklearn_kmeans(x: torch.Tensor, k: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(x.cpu().double().numpy())  # type: ignore[no-any-return]


@pytest.mark.parametrize(("n", "classes", "seed"), [(60, 3, 0), (80, 6, 1)])
def test_clustering_scores_match_sklearn_pml_and_brute_force(
    n: int, classes: int, seed: int
) -> None:
    x, y = data(n, classes, seed)
    x = x.float()  # PML casts to float32; the same values reach k-means on both sides
    got = clustering_scores(x, y)
    clusters = sklearn_kmeans(x, classes)
    assert got.nmi == pytest.approx(normalized_mutual_info_score(y.numpy(), clusters))
    assert got.ami == pytest.approx(adjusted_mutual_info_score(y.numpy(), clusters))
    nmi, ami, _, _ = reference.mutual_information(y.tolist(), clusters.tolist())
    assert (got.nmi, got.ami) == pytest.approx((nmi, ami))
    assert got.num_clusters == len(torch.unique(y))
    empty = clustering_scores(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert empty.num_clusters == 0 and math.isnan(empty.nmi) and math.isnan(empty.ami)
    pytest.importorskip("faiss")  # pytorch-metric-learning's AccuracyCalculator needs it
    pml = AccuracyCalculator(include=("NMI", "AMI"), kmeans_func=sklearn_kmeans).get_accuracy(x, y)
    assert (got.nmi, got.ami) == pytest.approx((pml["NMI"], pml["AMI"]))


def test_duplicated_points_cluster_without_a_warning() -> None:
    x = torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 3)  # 2 distinct points, 3 classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "fewer distinct clusters" is not shown
        scores = clustering_scores(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert scores.num_clusters == 3 and 0.0 <= scores.nmi <= 1.0
