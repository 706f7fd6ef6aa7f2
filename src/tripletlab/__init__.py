"""tripletlab: similarity learning with triplet loss in PyTorch."""

from tripletlab.distances import paired_distances, pairwise_distances
from tripletlab.losses import (
    ContrastiveLoss,
    LossStats,
    TripletMarginLoss,
    contrastive_loss,
    triplet_margin_loss,
)
from tripletlab.samplers import PKSampler

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "LossStats",
    "PKSampler",
    "TripletMarginLoss",
    "__version__",
    "contrastive_loss",
    "paired_distances",
    "pairwise_distances",
    "triplet_margin_loss",
]
