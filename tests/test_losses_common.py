"""What every loss of :mod:`tripletlab.losses` shares: the ``anchors`` masks of distributed
training, the statistics, permutation and translation invariance, degenerate batches, the
messages of bad input and gradients that are bit-identical from call to call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest
import reference
import torch
from conftest import SEEDS
from losses_data import CASES, MARGIN, all_losses, batch, ref_d

from tripletlab.distances import DISTANCES
from tripletlab.losses import (
    TRIPLET_MININGS,
    ContrastiveLoss,
    TripletMarginLoss,
    TripletMining,
    contrastive_loss,
)

# Every test here runs through both mining strategies (see conftest.mining_path).
pytestmark = pytest.mark.usefixtures("mining_path")

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
    for loss_fn in all_losses():
        xg = x.clone().requires_grad_(True)
        loss = loss_fn(xg, y)
        assert loss.dim() == 0 and torch.isfinite(loss), loss_fn
        loss.backward()
        assert xg.grad is not None and torch.isfinite(xg.grad).all(), loss_fn


def test_nothing_mined_gives_exact_zero() -> None:
    x, y = torch.randn(5, 4), torch.arange(5)
    for loss_fn in all_losses()[: len(TRIPLET_MININGS) * len(DISTANCES)]:
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
