"""Retrieval, verification and clustering metrics, computed in chunks: never an N x N matrix.

One module per family, every public name re-exported here
(``from tripletlab.metrics import retrieval_metrics``):

- :mod:`~tripletlab.metrics.retrieval`: precision@1, R-precision, MAP@R, Recall@K, mAP and
  MRR, overall and per class, for a set against itself or queries against a gallery; its
  docstring states the conventions of every retrieval metric (self-matches, queries with no
  relevant item, ties).
- :mod:`~tripletlab.metrics.neighbors`: exact k-nearest-neighbour search (torch, by blocks
  of queries and gallery rows with a running top k, on a gallery prepared once; or faiss)
  and k-NN classification accuracy.
- :mod:`~tripletlab.metrics.verification`: pair accuracy (best and held-out threshold), ROC
  AUC and TAR at fixed FAR over all pairs ``i < j``.
- :mod:`~tripletlab.metrics.clustering`: NMI and AMI of k-means clusters.
- :mod:`~tripletlab.metrics.triplets`: SpikeKing's fixed-triplet ordering accuracy.
- :mod:`~tripletlab.metrics.blocks` and :mod:`~tripletlab.metrics.checks`: the chunked
  distance blocks (and ``BLOCK``, their default size) and the input checks they all share.
"""

from tripletlab.metrics.clustering import ClusteringScores, clustering_scores
from tripletlab.metrics.neighbors import (
    BACKENDS,
    Backend,
    ExactGallery,
    exact_gallery,
    exact_search,
    extend_gallery,
    knn_accuracy,
    nearest_neighbors,
)
from tripletlab.metrics.retrieval import (
    RetrievalMetrics,
    RetrievalScores,
    retrieval_metrics,
    retrieval_scores,
)
from tripletlab.metrics.triplets import TripletAccuracy, fixed_triplets, triplet_accuracy
from tripletlab.metrics.verification import (
    HeldOutPairAccuracy,
    PairAccuracy,
    VerificationScores,
    held_out_pair_accuracy,
    pair_accuracy,
    verification_scores,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "ClusteringScores",
    "ExactGallery",
    "HeldOutPairAccuracy",
    "PairAccuracy",
    "RetrievalMetrics",
    "RetrievalScores",
    "TripletAccuracy",
    "VerificationScores",
    "clustering_scores",
    "exact_gallery",
    "exact_search",
    "extend_gallery",
    "fixed_triplets",
    "held_out_pair_accuracy",
    "knn_accuracy",
    "nearest_neighbors",
    "pair_accuracy",
    "retrieval_metrics",
    "retrieval_scores",
    "triplet_accuracy",
    "verification_scores",
]
