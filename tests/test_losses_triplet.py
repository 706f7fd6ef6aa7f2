"""tripletlab.losses.triplet: batch-all, the mined modes and the offline form against brute
force, pytorch-metric-learning and ``torch.nn.TripletMarginLoss``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F
from conftest import SEEDS
from losses_data import CASES, MARGIN, batch, ref_d
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import MeanReducer

from tripletlab import miners
from tripletlab.distances import DISTANCES, Distance, pairwise_distances
from tripletlab.losses import (
    TripletMarginLoss,
    TripletMining,
    batch_all_triplet_loss,
    triplet_margin_loss,
)

# Every test here runs through both mining strategies (see conftest.mining_path).
pytestmark = pytest.mark.usefixtures("mining_path")

# ---------------------------------------------------------------- batch-all


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("distance", DISTANCES)
def test_batch_all_matches_brute_force(layout: str, seed: int, distance: Distance) -> None:
    x, y = batch(layout, seed)
    loss_fn = TripletMarginLoss(MARGIN, "batch_all", distance)
    loss, stats = loss_fn.forward_with_stats(x, y)
    d, yl = ref_d(x, distance), y.tolist()
    want, n_active, n_valid = reference.batch_all_loss(d, yl, MARGIN)
    assert loss.item() == pytest.approx(want, abs=1e-9)
    assert stats.num_tuples.item() == n_valid
    assert stats.fraction_active.item() == pytest.approx(n_active / n_valid if n_valid else 0.0)
    trips = reference.all_triplets(yl)
    if trips:
        assert stats.pos_distance.item() == pytest.approx(np.mean([d[a, p] for a, p, _ in trips]))
        assert stats.neg_distance.item() == pytest.approx(np.mean([d[a, n] for a, _, n in trips]))


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_batch_all_gradient_matches_explicit_triplets(layout: str, seed: int) -> None:
    x, y = batch(layout, seed)
    loss = TripletMarginLoss(MARGIN, "batch_all")(x, y)
    (g_fast,) = torch.autograd.grad(loss, x)
    a, p, n = miners.all_triplets(y)
    d = pairwise_distances(x)
    per = F.relu(d[a, p] - d[a, n] + MARGIN)
    slow = per.sum() / (per > 0).sum().clamp_min(1)
    (g_slow,) = torch.autograd.grad(slow, x) if per.numel() else (torch.zeros_like(x),)
    torch.testing.assert_close(g_fast, g_slow)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_all_matches_pml(seed: int) -> None:
    x, y = batch("unbalanced", seed, dim=8)
    ours = TripletMarginLoss(MARGIN, "batch_all")(x, y)
    theirs = pml_losses.TripletMarginLoss(
        margin=MARGIN, distance=LpDistance(normalize_embeddings=False)
    )
    t = theirs(x, y)
    assert ours.item() == pytest.approx(t.item(), rel=1e-6)
    (g1,) = torch.autograd.grad(ours, x)
    (g2,) = torch.autograd.grad(theirs(x, y), x)
    torch.testing.assert_close(g1, g2)


def test_batch_all_large_batch_equals_dense() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 16, (96,), generator=g)
    x = torch.randn(96, 8, generator=g, dtype=torch.float64)
    d = pairwise_distances(x)
    loss, _ = batch_all_triplet_loss(d, y, 0.3)
    dense = d[:, :, None] - d[:, None, :] + 0.3  # (B, B, B): d_ap - d_an + m
    same = y[:, None] == y[None, :]
    valid = (same & ~torch.eye(96, dtype=torch.bool))[:, :, None] & ~same[:, None, :]
    active = F.relu(dense) * valid
    assert loss.item() == pytest.approx((active.sum() / (active > 0).sum()).item())


# ---------------------------------------------------------------- mined modes


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("distance", DISTANCES)
def test_batch_hard_matches_brute_force(layout: str, seed: int, distance: Distance) -> None:
    x, y = batch(layout, seed)
    d = ref_d(x, distance)
    rows = reference.batch_hard(d, y.tolist())
    hard = TripletMarginLoss(MARGIN, "batch_hard", distance)(x, y)
    assert hard.item() == pytest.approx(
        reference.mean_hinge([r[1] for r in rows], [r[2] for r in rows], MARGIN), abs=1e-9
    )
    soft = TripletMarginLoss(MARGIN, "batch_hard", distance, soft_margin=True)(x, y)
    want = np.mean([math.log1p(math.exp(r[1] - r[2])) for r in rows]) if rows else 0.0
    assert soft.item() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_hard_matches_pml(seed: int) -> None:
    x, y = batch("balanced", seed, dim=8)
    ours = TripletMarginLoss(MARGIN, "batch_hard")(x, y)
    dist = LpDistance(normalize_embeddings=False)
    theirs = pml_losses.TripletMarginLoss(margin=MARGIN, distance=dist, reducer=MeanReducer())
    t = theirs(x, y, pml_miners.BatchHardMiner(distance=dist)(x, y))
    assert ours.item() == pytest.approx(t.item(), rel=1e-6)
    (g1,) = torch.autograd.grad(ours, x)
    (g2,) = torch.autograd.grad(theirs(x, y, pml_miners.BatchHardMiner(distance=dist)(x, y)), x)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_semi_hard_is_tf_addons_reduction(layout: str, seed: int) -> None:
    x, y = batch(layout, seed)
    rows = reference.semi_hard(ref_d(x), y.tolist())
    d = ref_d(x)
    want = sum(max(d[a, p] - dn + MARGIN, 0.0) for a, p, dn in rows) / len(rows) if rows else 0.0
    got = TripletMarginLoss(MARGIN, "semi_hard")(x, y)
    assert got.item() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_hardest_negative_loss(layout: str, seed: int) -> None:
    x, y = batch(layout, seed)
    d = ref_d(x)
    rows = reference.hardest_negative(d, y.tolist(), MARGIN)
    want = reference.mean_hinge([d[a, p] for a, p, _ in rows], [r[2] for r in rows], MARGIN)
    got, stats = TripletMarginLoss(MARGIN, "hardest_negative").forward_with_stats(x, y)
    assert got.item() == pytest.approx(want, abs=1e-9)
    assert stats.num_tuples.item() == len(rows)
    assert stats.fraction_active.item() == (1.0 if rows else 0.0)


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("mining", ["random_hard", "semi_hard_random"])
def test_random_modes_average_their_triplets(layout: str, seed: int, mining: TripletMining) -> None:
    x, y = batch(layout, seed)
    loss_fn = TripletMarginLoss(MARGIN, mining, seed=seed)
    got = loss_fn(x, y)
    mine = miners.random_hard if mining == "random_hard" else miners.semi_hard_random
    a, p, n = mine(pairwise_distances(x), y, MARGIN, torch.Generator().manual_seed(seed))
    d = ref_d(x)
    want = reference.mean_hinge(d[a, p].tolist(), d[a, n].tolist(), MARGIN)
    assert got.item() == pytest.approx(want, abs=1e-9)


def test_custom_miner_callable_composes() -> None:
    x, y = batch("balanced", 0)
    loss = TripletMarginLoss(MARGIN, miners.batch_hard)(x, y)
    assert loss.item() == pytest.approx(TripletMarginLoss(MARGIN, "batch_hard")(x, y).item())
    assert "batch_hard" in repr(TripletMarginLoss(MARGIN, miners.batch_hard))


# ---------------------------------------------------------------- offline form


@pytest.mark.parametrize("soft", [False, True])
def test_offline_triplet_matches_torch(soft: bool) -> None:
    a, p, n = (torch.randn(20, 6, dtype=torch.float64) for _ in range(3))
    got = triplet_margin_loss(a, p, n, margin=0.3, soft_margin=soft)
    if soft:
        want = F.softplus((a - p).norm(dim=1) - (a - n).norm(dim=1)).mean()
    else:
        want = torch.nn.TripletMarginLoss(margin=0.3, eps=0.0)(a, p, n)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert triplet_margin_loss(a[:0], p[:0], n[:0]).item() == 0.0
