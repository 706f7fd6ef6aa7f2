"""Shared by the tests of :mod:`tripletlab.losses`: the label layouts and seeds every loss is
tried on, the margin, a seeded float64 batch and its brute-force distances, and one module of
every loss, mining and distance (for the degenerate-batch and property tests)."""

from __future__ import annotations

import numpy as np
import reference
import torch
from conftest import LAYOUTS, SEEDS, make_labels

from tripletlab.distances import DISTANCES
from tripletlab.losses import PAIR_MININGS, TRIPLET_MININGS, ContrastiveLoss, TripletMarginLoss

CASES = [(layout, seed) for layout in LAYOUTS for seed in SEEDS]
MARGIN = 0.5


def batch(layout: str, seed: int, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    y = make_labels(layout, seed)
    x = torch.randn(y.shape[0], dim, generator=torch.Generator().manual_seed(seed + 7))
    return x.double().requires_grad_(True), y


def ref_d(x: torch.Tensor, distance: str = "euclidean") -> np.ndarray:
    return reference.distances(x.detach().numpy(), distance)


def all_losses() -> list[torch.nn.Module]:
    out: list[torch.nn.Module] = [
        TripletMarginLoss(MARGIN, m, dist, seed=0) for m in TRIPLET_MININGS for dist in DISTANCES
    ]
    out += [TripletMarginLoss(MARGIN, "batch_hard", soft_margin=True)]
    out += [ContrastiveLoss(0.0, 1.0, dist, m) for m in PAIR_MININGS for dist in DISTANCES]
    return out
