from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest
import reference
import torch
import torch.nn.functional as F
from conftest import LAYOUTS, SEEDS, make_labels
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import MeanReducer

from tripletlab import miners
from tripletlab.distances import DISTANCES, Distance, pairwise_distances
from tripletlab.losses import (
    PAIR_MININGS,
    TRIPLET_MININGS,
    ContrastiveLoss,
    TripletMarginLoss,
    TripletMining,
    batch_all_triplet_loss,
    contrastive_loss,
    triplet_margin_loss,
)

# Every test here runs through both mining strategies (see conftest.mining_path).
pytestmark = pytest.mark.usefixtures("mining_path")

CASES = [(layout, seed) for layout in LAYOUTS for seed in SEEDS]
MARGIN = 0.5


def batch(layout: str, seed: int, dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    y = make_labels(layout, seed)
    x = torch.randn(y.shape[0], dim, generator=torch.Generator().manual_seed(seed + 7))
    return x.double().requires_grad_(True), y


def ref_d(x: torch.Tensor, distance: str = "euclidean") -> np.ndarray:
    return reference.distances(x.detach().numpy(), distance)


# ---------------------------------------------------------------- anchor masks


def anchor_terms(d: np.ndarray, y: list[int], mining: str) -> list[tuple[int, float]]:
    """Brute force: (anchor, loss term) of every tuple the mining selects on the batch."""
    if mining == "batch_all":
        terms = [(a, max(d[a, p] - d[a, n] + MARGIN, 0.0)) for a, p, n in reference.all_triplets(y)]
        return [(a, v) for a, v in terms if v > 0]  # mean over the active ones
    if mining == "batch_hard":
        return [(a, max(dp - dn + MARGIN, 0.0)) for a, dp, dn in reference.batch_hard(d, y)]
    if mining == "semi_hard":
        return [(a, max(d[a, p] - dn + MARGIN, 0.0)) for a, p, dn in reference.semi_hard(d, y)]
    n = len(y)  # contrastive "all": every ordered pair (i, j), i != j, as a row of the matrix
    return [
        (i, d[i, j] ** 2 if y[i] == y[j] else max(1.0 - d[i, j], 0.0) ** 2)
        for i in range(n)
        for j in range(n)
        if i != j
    ]


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard", "contrastive"])
def test_anchor_mask_keeps_the_tuples_of_the_marked_anchors(
    layout: str, seed: int, mining: TripletMining | Literal["contrastive"]
) -> None:
    x, y = batch(layout, seed)
    loss_fn = (
        ContrastiveLoss(0.0, 1.0, mining="all")
        if mining == "contrastive"
        else TripletMarginLoss(MARGIN, mining)
    )
    mask = torch.rand(y.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5
    everyone = torch.ones_like(mask)
    assert loss_fn.forward_with_stats(x, y, everyone)[0].item() == loss_fn(x, y).item()
    got, stats = loss_fn.forward_with_stats(x, y, mask)
    d = ref_d(x)
    kept = [v for a, v in anchor_terms(d, y.tolist(), mining) if mask[a]]
    want = sum(kept) / len(kept) if kept else 0.0
    assert got.item() == pytest.approx(want, abs=1e-9)
    if mining == "batch_all":
        trips = [(a, p, n) for a, p, n in reference.all_triplets(y.tolist()) if mask[a]]
        assert stats.num_tuples.item() == len(trips)
        if trips:
            assert stats.pos_distance.item() == pytest.approx(
                np.mean([d[a, p] for a, p, _ in trips])
            )
            assert stats.neg_distance.item() == pytest.approx(
                np.mean([d[a, n] for a, _, n in trips])
            )
    got.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


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


# ---------------------------------------------------------------- offline forms


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


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("mining", [m for m in TRIPLET_MININGS if "random" not in m])
@pytest.mark.parametrize("seed", SEEDS)
def test_permutation_and_translation_invariance(mining: TripletMining, seed: int) -> None:
    x, y = batch("unbalanced", seed, dim=4)
    loss_fn = TripletMarginLoss(MARGIN, mining)
    base = loss_fn(x, y).item()
    perm = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed))
    assert loss_fn(x[perm], y[perm]).item() == pytest.approx(base, abs=1e-9)
    assert loss_fn(x + 3.0, y).item() == pytest.approx(base, abs=1e-6)
    contrastive = ContrastiveLoss()
    assert contrastive(x[perm], y[perm]).item() == pytest.approx(contrastive(x, y).item())


def test_stats_are_device_tensors() -> None:
    x, y = batch("balanced", 0)
    for loss_fn in (TripletMarginLoss(), TripletMarginLoss(mining="semi_hard"), ContrastiveLoss()):
        _, stats = loss_fn.forward_with_stats(x, y)
        for v in stats:
            assert isinstance(v, torch.Tensor) and v.dim() == 0 and v.device == x.device


# ---------------------------------------------------------------- degenerate and bad input


def _all_losses() -> list[torch.nn.Module]:
    out: list[torch.nn.Module] = [
        TripletMarginLoss(MARGIN, m, dist, seed=0) for m in TRIPLET_MININGS for dist in DISTANCES
    ]
    out += [TripletMarginLoss(MARGIN, "batch_hard", soft_margin=True)]
    out += [ContrastiveLoss(0.0, 1.0, dist, m) for m in PAIR_MININGS for dist in DISTANCES]
    return out


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (torch.randn(1, 4), torch.tensor([0])),  # B = 1
        (torch.randn(5, 4), torch.zeros(5, dtype=torch.long)),  # single class
        (torch.randn(5, 4), torch.arange(5)),  # no positive pair
        (torch.ones(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])),  # all identical
        (torch.zeros(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])),  # all zero
        (torch.randn(0, 4), torch.zeros(0, dtype=torch.long)),  # empty
    ],
)
def test_degenerate_batches_give_finite_loss_and_gradients(
    x: torch.Tensor, y: torch.Tensor
) -> None:
    for loss_fn in _all_losses():
        xg = x.clone().requires_grad_(True)
        loss = loss_fn(xg, y)
        assert loss.dim() == 0 and torch.isfinite(loss), loss_fn
        loss.backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all(), loss_fn


def test_nothing_mined_gives_exact_zero() -> None:
    x, y = torch.randn(5, 4), torch.arange(5)
    for loss_fn in _all_losses()[: len(TRIPLET_MININGS) * len(DISTANCES)]:
        assert loss_fn(x, y).item() == 0.0


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="unknown mining 'hard'; choose one of: batch_all"):
        TripletMarginLoss(mining="hard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown distance 'l1'"):
        TripletMarginLoss(distance="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown mining 'semi'; choose one of: all"):
        ContrastiveLoss(mining="semi")  # type: ignore[arg-type]
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            TripletMarginLoss(margin=bad)
    with pytest.raises(ValueError, match="neg_margin must be"):
        ContrastiveLoss(neg_margin=-1)
    with pytest.raises(ValueError, match="soft_margin=True does not go with mining='batch_all'"):
        TripletMarginLoss(mining="batch_all", soft_margin=True)
    loss_fn = TripletMarginLoss()
    with pytest.raises(ValueError, match=r"embeddings must be 2-D.*\(4, 2, 2\)"):
        loss_fn(torch.randn(4, 2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels have length 3 but there are 4 embeddings"):
        loss_fn(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"1-D integer tensor, got shape \(4, 1\)"):
        loss_fn(torch.randn(4, 2), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"1-D integer tensor.*float32"):
        loss_fn(torch.randn(4, 2), torch.zeros(4))
    x = torch.randn(4, 2)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf in 1 of 4 rows"):
        loss_fn(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"same must have shape \(3,\)"):
        contrastive_loss(torch.randn(3, 2), torch.randn(3, 2), torch.ones(2))


@pytest.fixture
def four_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # oversubscribed on small machines; only the result matters
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("four_threads")
@pytest.mark.parametrize(
    "mining", [*TRIPLET_MININGS, "contrastive:all", "contrastive:hard_negative"]
)
def test_gradient_is_bit_identical_across_calls(mining: str) -> None:
    # Resume after Ctrl-C must reproduce a run exactly; a scatter-add backward with atomics
    # (multi-threaded CPU advanced indexing) made the gradients differ from call to call.
    y = torch.arange(8).repeat_interleave(16)
    x0 = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    if mining.startswith("contrastive:"):
        loss_fn: torch.nn.Module = ContrastiveLoss(mining=mining.split(":")[1])  # type: ignore[arg-type]
    else:
        loss_fn = TripletMarginLoss(0.2, mining, seed=0)  # type: ignore[arg-type]
    grads: list[torch.Tensor] = []
    for _ in range(4):
        if isinstance(loss_fn, TripletMarginLoss):
            loss_fn.generator.manual_seed(0)
        x = x0.clone().requires_grad_(True)
        loss_fn(x, y).backward()
        assert x.grad is not None
        grads.append(x.grad)
    for g in grads[1:]:
        assert torch.equal(g, grads[0])
