"""tripletlab.losses.contrastive: all pairs, hard-negative pairs and the offline form against
brute force and pytorch-metric-learning."""

from __future__ import annotations

import numpy as np
import pytest
import reference
import torch
from conftest import SEEDS
from losses_data import CASES, batch, ref_d
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance

from tripletlab.distances import DISTANCES, Distance
from tripletlab.losses import ContrastiveLoss, contrastive_loss

# Every test here runs through both mining strategies (see conftest.mining_path).
pytestmark = pytest.mark.usefixtures("mining_path")

# ---------------------------------------------------------------- contrastive


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("distance", DISTANCES)
def test_contrastive_all_matches_brute_force(layout: str, seed: int, distance: Distance) -> None:
    x, y = batch(layout, seed)
    got = ContrastiveLoss(0.1, 1.5, distance)(x, y)
    d = ref_d(x, distance)
    want = reference.contrastive_loss(d, reference.unordered_pairs(y.tolist()), 0.1, 1.5)
    assert got.item() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_contrastive_hard_negative_matches_brute_force(layout: str, seed: int) -> None:
    x, y = batch(layout, seed)
    d = ref_d(x)
    n_pos, neg_d = reference.hard_negative_pairs(d, y.tolist())
    yl = y.tolist()
    pos_d = [d[i, j] for i in range(len(yl)) for j in range(i + 1, len(yl)) if yl[i] == yl[j]]
    terms = [v**2 for v in pos_d] + [max(1.0 - v, 0.0) ** 2 for v in neg_d]
    want = sum(terms) / len(terms) if terms else 0.0
    assert len(pos_d) == n_pos
    got = ContrastiveLoss(mining="hard_negative")(x, y)
    assert got.item() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_contrastive_matches_pml_per_pair(seed: int) -> None:
    x, y = batch("unbalanced", seed, dim=6)
    pml = pml_losses.ContrastiveLoss(
        pos_margin=0.1, neg_margin=1.5, distance=LpDistance(normalize_embeddings=False)
    )
    parts = pml.compute_loss(x, y, None, x, y)  # per-pair hinges, both orders of each pair
    terms = torch.cat([parts["pos_loss"]["losses"], parts["neg_loss"]["losses"]]) ** 2
    ours = ContrastiveLoss(0.1, 1.5)(x, y)
    assert ours.item() == pytest.approx(terms.mean().item(), rel=1e-6)


# ---------------------------------------------------------------- offline form


def test_offline_contrastive_matches_brute_force() -> None:
    x1, x2 = torch.randn(15, 4, dtype=torch.float64), torch.randn(15, 4, dtype=torch.float64)
    same = torch.rand(15) > 0.5
    got = contrastive_loss(x1, x2, same, 0.2, 2.0)
    d = (x1 - x2).norm(dim=1).tolist()
    want = np.mean(
        [
            max(v - 0.2, 0) ** 2 if s else max(2.0 - v, 0) ** 2
            for v, s in zip(d, same.tolist(), strict=True)
        ]
    )
    assert got.item() == pytest.approx(want)
    x = torch.ones(3, 4, requires_grad=True)
    contrastive_loss(x, x.detach(), torch.ones(3, dtype=torch.bool)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
