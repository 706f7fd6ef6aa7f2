from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import reference
import torch
from conftest import LAYOUTS, SEEDS, make_labels
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from tripletlab import miners
from tripletlab.distances import pairwise_distances

# Every test here runs through both mining strategies (see conftest.mining_path).
pytestmark = pytest.mark.usefixtures("mining_path")

CASES = [(layout, seed) for layout in LAYOUTS for seed in SEEDS]
MARGIN = 0.5


def setup(layout: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Labels, float64 embeddings, their distance matrix, labels as a list."""
    y = make_labels(layout, seed)
    x = torch.randn(y.shape[0], 3, generator=torch.Generator().manual_seed(seed + 100))
    x = x.double()
    return y, x, pairwise_distances(x), y.tolist()


def assert_valid_triplets(t: miners.Triplets, y: torch.Tensor) -> None:
    a, p, n = t
    assert a.dtype == p.dtype == n.dtype == torch.int64
    assert a.shape == p.shape == n.shape
    assert torch.all(a != p)
    assert torch.all(y[a] == y[p])
    assert torch.all(y[a] != y[n])


def assert_rows_close(got: Sequence[tuple[float, ...]], want: Sequence[tuple[float, ...]]) -> None:
    assert len(got) == len(want)
    if got:
        np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float))


def as_set(t: miners.Triplets) -> set[tuple[int, int, int]]:
    return set(zip(*(v.tolist() for v in t), strict=True))


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_all_triplets(layout: str, seed: int) -> None:
    y, _, _, yl = setup(layout, seed)
    t = miners.all_triplets(y)
    assert_valid_triplets(t, y)
    want = reference.all_triplets(yl)
    assert t[0].shape[0] == len(want) == len(as_set(t))
    assert as_set(t) == set(want)
    counts = Counter(yl)
    assert len(want) == sum(c * (c - 1) * (len(yl) - c) for c in counts.values())
    pml = lmu.get_all_triplets_indices(y)
    assert as_set(t) == as_set(pml)


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_batch_hard(layout: str, seed: int) -> None:
    y, x, d, yl = setup(layout, seed)
    t = miners.batch_hard(d, y)
    assert_valid_triplets(t, y)
    a, p, n = t
    got = list(zip(a.tolist(), d[a, p].tolist(), d[a, n].tolist(), strict=True))
    assert_rows_close(got, reference.batch_hard(d.numpy(), yl))
    pa, pp, pn = pml_miners.BatchHardMiner(distance=LpDistance(normalize_embeddings=False))(x, y)
    assert sorted(pa.tolist()) == a.tolist()
    order = torch.argsort(pa)
    assert d[pa, pp][order].tolist() == pytest.approx(d[a, p].tolist())
    assert d[pa, pn][order].tolist() == pytest.approx(d[a, n].tolist())


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_semi_hard(layout: str, seed: int) -> None:
    y, _, d, yl = setup(layout, seed)
    t = miners.semi_hard(d, y)
    assert_valid_triplets(t, y)
    a, p, n = t
    got = list(zip(a.tolist(), p.tolist(), d[a, n].tolist(), strict=True))
    assert_rows_close(got, reference.semi_hard(d.numpy(), yl))


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_hardest_negative(layout: str, seed: int) -> None:
    y, _, d, yl = setup(layout, seed)
    t = miners.hardest_negative(d, y, MARGIN)
    assert_valid_triplets(t, y)
    a, p, n = t
    got = list(zip(a.tolist(), p.tolist(), d[a, n].tolist(), strict=True))
    assert_rows_close(got, reference.hardest_negative(d.numpy(), yl, MARGIN))


@pytest.mark.parametrize(("layout", "seed"), CASES)
@pytest.mark.parametrize("kind", ["random_hard", "semi_hard_random"])
def test_random_miners_pick_within_candidates(layout: str, seed: int, kind: str) -> None:
    y, x, d, yl = setup(layout, seed)
    mine = miners.random_hard if kind == "random_hard" else miners.semi_hard_random
    ref = (
        reference.random_hard_candidates
        if kind == "random_hard"
        else (reference.semi_hard_candidates)
    )
    candidates = ref(d.numpy(), yl, MARGIN)
    t = mine(d, y, MARGIN, torch.Generator().manual_seed(seed))
    assert_valid_triplets(t, y)
    a, p, n = t
    assert sorted(zip(a.tolist(), p.tolist(), strict=True)) == sorted(candidates)
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
        assert ni in candidates[(ai, pi)]
    again = mine(d, y, MARGIN, torch.Generator().manual_seed(seed))
    assert all(torch.equal(u, v) for u, v in zip(t, again, strict=True))
    if kind == "semi_hard_random":
        # pytorch-metric-learning's "semihard" triplets are exactly our candidate set.
        pml = pml_miners.TripletMarginMiner(
            margin=MARGIN,
            type_of_triplets="semihard",
            distance=LpDistance(normalize_embeddings=False),
        )(x, y)
        pml_set = as_set(pml)
        ours = {(ai, pi, ni) for (ai, pi), c in candidates.items() for ni in c}
        assert pml_set == ours


def test_random_hard_is_uniform_over_candidates() -> None:
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1])
    d = torch.zeros(7, 7)
    d[0, 1] = d[1, 0] = 1.0  # every negative at distance 0 < 1 + margin: all 5 are candidates
    g = torch.Generator().manual_seed(0)
    picks: Counter[int] = Counter()
    for _ in range(2000):
        a, _p, n = miners.random_hard(d, y, 0.1, g)
        picks.update(n[(a == 0)].tolist())
    assert set(picks) == {2, 3, 4, 5, 6}
    assert max(picks.values()) - min(picks.values()) < 150  # 400 expected each


@pytest.mark.parametrize(("layout", "seed"), CASES)
def test_pair_miners(layout: str, seed: int) -> None:
    y, _, d, yl = setup(layout, seed)
    a1, p, a2, n = miners.all_pairs(y)
    got = sorted(
        [(i, j, True) for i, j in zip(a1.tolist(), p.tolist(), strict=True)]
        + [(i, j, False) for i, j in zip(a2.tolist(), n.tolist(), strict=True)]
    )
    assert got == sorted(reference.unordered_pairs(yl))
    h1, hp, h2, hn = miners.hard_negative_pairs(d, y)
    n_pos, neg_d = reference.hard_negative_pairs(d.numpy(), yl)
    assert h1.shape[0] == n_pos and torch.equal(h1, a1) and torch.equal(hp, p)
    assert torch.all(y[h2] != y[hn]) and torch.all(h2 < hn)
    assert sorted(d[h2, hn].tolist()) == pytest.approx(neg_d)


def test_miners_do_not_track_gradients_and_keep_device() -> None:
    x = torch.randn(12, 4, requires_grad=True)
    y = torch.arange(3).repeat(4)
    d = pairwise_distances(x)
    for t in (
        miners.batch_hard(d, y),
        miners.semi_hard(d, y),
        miners.hardest_negative(d, y, 0.2),
        miners.random_hard(d, y, 0.2),
        miners.semi_hard_random(d, y, 0.2),
    ):
        assert all(v.device == x.device and not v.requires_grad for v in t)


def test_miner_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        miners.batch_hard(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels have length 2 but there are 3"):
        miners.semi_hard(torch.zeros(3, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="1-D integer"):
        miners.all_triplets(torch.zeros(3))
    with pytest.raises(ValueError, match="margin must be a finite number"):
        miners.random_hard(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), -1.0)
