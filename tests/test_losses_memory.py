"""Cross-batch memory (tripletlab.losses.memory) against brute-force loops over the batch and
the memory (float64, plain Python over anchors x candidates), and pytorch-metric-learning's
``CrossBatchMemory`` where the semantics agree (batch-all triplet loss: PML's default
all-triplets with ``AvgNonZeroReducer`` on un-normalised L2 over its memory holding the
current batch and the M before, i.e. ``memory_size = M + B``)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import LpDistance
from torch import Tensor

from tripletlab import miners
from tripletlab.losses import (
    PAIR_MININGS,
    TRIPLET_MININGS,
    ContrastiveLoss,
    EmbeddingMemory,
    TripletMarginLoss,
)
from tripletlab.losses.memory import candidate_distances

MARGIN = 0.5
SIZES = [(6, 5), (8, 12), (5, 3)]  # (B, M)
SEEDS = [0, 1]
STEPS = 4  # enough to wrap the smaller memories around


def batches(b: int, seed: int, steps: int = STEPS, dim: int = 3) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(b, dim, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (b,), generator=g),
        )
        for _ in range(steps)
    ]


def dist(u: Tensor, v: Tensor) -> Tensor:
    return torch.sqrt(((u - v) ** 2).sum())


def brute_triplet(e: Tensor, y: list[int], b: int, mining: str) -> Tensor:
    """The loss of anchors 0..b-1 against candidates e (N, D) by loops (d(a, a) never used)."""
    n = len(y)
    zero = e.sum() * 0
    hinges: list[Tensor] = []
    pos_pairs = 0
    for a in range(b):
        ps = [p for p in range(n) if p != a and y[p] == y[a]]
        ns = [j for j in range(n) if y[j] != y[a]]
        if not ns or not ps:
            continue
        d_n = {j: dist(e[a], e[j]) for j in ns}
        if mining == "batch_hard":
            far = max((dist(e[a], e[p]) for p in ps), key=lambda t: float(t.detach()))
            hinges.append(
                torch.relu(far - min(d_n.values(), key=lambda t: float(t.detach())) + MARGIN)
            )
            continue
        for p in ps:
            d_p = dist(e[a], e[p])
            pos_pairs += 1
            if mining == "batch_all":
                hinges += [h for h in (d_p - d_n[j] + MARGIN for j in ns) if float(h.detach()) > 0]
            elif mining == "semi_hard":
                farther = [d for d in d_n.values() if float(d) > float(d_p)]
                d = (
                    min(farther, key=lambda t: float(t.detach()))
                    if farther
                    else max(d_n.values(), key=lambda t: float(t.detach()))
                )
                hinges.append(torch.relu(d_p - d + MARGIN))
            elif mining == "hardest_negative":
                h = d_p - min(d_n.values(), key=lambda t: float(t.detach())) + MARGIN
                if float(h.detach()) > 0:
                    hinges.append(h)
    return sum(hinges, zero) / max(1, len(hinges))


def brute_contrastive(e: Tensor, y: list[int], b: int, mining: str) -> Tensor:
    n = len(y)
    zero = e.sum() * 0

    def term(i: int, j: int) -> Tensor:
        d = dist(e[i], e[j])
        return torch.relu(d) ** 2 if y[i] == y[j] else torch.relu(1.0 - d) ** 2

    if mining == "all":
        terms = [term(i, j) for i in range(b) for j in range(n) if j != i]
        return sum(terms, zero) / max(1, len(terms))
    pairs = [(i, j) for i in range(b) for j in range(i + 1, n)]
    pos = [term(i, j) for i, j in pairs if y[i] == y[j]]
    negs = sorted(
        (p for p in pairs if y[p[0]] != y[p[1]]), key=lambda p: float(dist(e[p[0]], e[p[1]]))
    )
    neg = [term(i, j) for i, j in negs[: min(len(pos), len(negs))]]
    return sum(pos + neg, zero) / max(1, len(pos) + len(neg))


def run_both(
    module: torch.nn.Module, b: int, m: int, seed: int, brute: object, mining: str
) -> None:
    history_e: list[Tensor] = []
    history_y: list[int] = []
    for x, y in batches(b, seed):
        x = x.clone().requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        loss = module(x, y)
        mem_e = torch.stack(history_e[-m:]) if history_e else x_ref[:0]
        expected = brute(torch.cat([x_ref, mem_e]), y.tolist() + history_y[-m:], b, mining)  # type: ignore[operator]
        assert math.isclose(
            float(loss.detach()), float(expected.detach()), rel_tol=1e-9, abs_tol=1e-12
        )
        loss.backward()
        expected.backward()
        assert x.grad is not None and x_ref.grad is not None
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-7, atol=1e-10)
        history_e += list(x.detach())
        history_y += y.tolist()


@pytest.mark.usefixtures("mining_path")  # the direct and the sorted (threshold) paths
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard", "hardest_negative"])
@pytest.mark.parametrize(("b", "m"), SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_triplet_memory_matches_brute_force(mining: str, b: int, m: int, seed: int) -> None:
    loss = TripletMarginLoss(MARGIN, mining, memory_size=m)  # type: ignore[arg-type]
    run_both(loss, b, m, seed, brute_triplet, mining)


@pytest.mark.parametrize("mining", ["all", "hard_negative"])
@pytest.mark.parametrize(("b", "m"), SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_contrastive_memory_matches_brute_force(mining: str, b: int, m: int, seed: int) -> None:
    loss = ContrastiveLoss(0.0, 1.0, mining=mining, memory_size=m)  # type: ignore[arg-type]
    run_both(loss, b, m, seed, brute_contrastive, mining)


@pytest.mark.parametrize("mining", ["random_hard", "semi_hard_random"])
@pytest.mark.parametrize(("b", "m"), SIZES)
def test_random_miners_on_candidates(mining: str, b: int, m: int) -> None:
    """Each positive pair (a < B, p != a) with a candidate gets one negative from its window."""
    (x, y), (xm, ym) = batches(b, 3, steps=2, dim=2)[0], batches(m, 4, steps=1, dim=2)[0]
    yc = torch.cat([y, ym])
    d = candidate_distances(x, xm)  # (B, B + M)
    fn = miners.random_hard if mining == "random_hard" else miners.semi_hard_random
    a, p, n = fn(d, yc, MARGIN, torch.Generator().manual_seed(0))
    got = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n, strict=True)}
    assert len(got) == a.shape[0]
    for i in range(b):
        for j in range(b + m):
            if j == i or int(yc[j]) != int(y[i]):
                continue
            lo = float(d[i, j]) if mining == "semi_hard_random" else -1.0
            window = [
                k
                for k in range(b + m)
                if int(yc[k]) != int(y[i]) and lo < float(d[i, k]) < float(d[i, j]) + MARGIN
            ]
            assert (got.get((i, j)) in window) if window else (i, j) not in got


def test_fifo_order_and_wrap_around() -> None:
    memory = EmbeddingMemory(5)
    rows = torch.arange(24, dtype=torch.float32).view(12, 2)
    for s in range(0, 12, 3):
        memory.push(rows[s : s + 3], torch.arange(s, s + 3))
        seen = min(5, s + 3)
        torch.testing.assert_close(memory.labels, torch.arange(s + 3 - seen, s + 3))
        torch.testing.assert_close(memory.embeddings, rows[s + 3 - seen : s + 3])
    assert memory.steps == 4


def test_never_self_as_positive_but_earlier_views_allowed() -> None:
    """Unique labels in the batch: the only positives are the same images pushed earlier."""
    x, y = 0.01 * torch.randn(6, 3, dtype=torch.float64), torch.arange(6)  # all within margin
    loss = TripletMarginLoss(MARGIN, "batch_hard", memory_size=6)
    assert float(loss(x, y)) == 0.0  # no positive anywhere: the anchor is not its own
    d = candidate_distances(x, x)  # the memory now holds the same six images
    a, p, _ = miners.batch_hard(d, torch.cat([y, y]))
    assert torch.equal(p, a + 6)
    value, stats = loss.forward_with_stats(x, y)
    assert float(value) > 0 and int(stats.num_tuples) == 6  # one triplet per anchor


def test_empty_memory_and_warmup_give_the_plain_loss() -> None:
    plain = TripletMarginLoss(MARGIN, "batch_all")
    warm = TripletMarginLoss(MARGIN, "batch_all", memory_size=8, memory_warmup_steps=2)
    assert warm.memory is not None
    steps = batches(6, 5, steps=4)
    for i, (x, y) in enumerate(steps[:3]):
        assert float(warm(x, y)) == float(plain(x, y))
        assert warm.memory.labels.shape[0] == (6 if i == 2 else 0)  # filled from step 2 on
    x, y = steps[3]
    assert float(warm(x, y)) != float(plain(x, y))


def test_memory_follows_to_and_stays_out_of_state_dict() -> None:
    loss = ContrastiveLoss(memory_size=4)
    loss(torch.randn(3, 2), torch.tensor([0, 0, 1]))
    assert "memory.embeddings" in dict(loss.named_buffers())
    assert not any(k.startswith("memory") for k in loss.state_dict())
    loss.to(torch.float64)
    assert loss.memory is not None and loss.memory.embeddings.dtype == torch.float64
    loss.to("meta")
    assert loss.memory.embeddings.device.type == "meta"


def test_memory_holds_no_graph() -> None:
    loss = TripletMarginLoss(MARGIN, "batch_hard", memory_size=4)
    x = torch.randn(4, 3, requires_grad=True)
    loss(x, torch.tensor([0, 0, 1, 1]))
    assert loss.memory is not None and not loss.memory.embeddings.requires_grad


@pytest.mark.parametrize(("b", "m"), [(6, 6), (8, 16)])
def test_batch_all_matches_pytorch_metric_learning(b: int, m: int) -> None:
    ours = TripletMarginLoss(MARGIN, "batch_all", memory_size=m)
    theirs = pml_losses.CrossBatchMemory(
        pml_losses.TripletMarginLoss(MARGIN, distance=LpDistance(normalize_embeddings=False)),
        embedding_size=3,
        memory_size=m + b,
    )
    for x, y in batches(b, 11, steps=5):
        x32 = x.float()
        torch.testing.assert_close(ours(x32, y), theirs(x32, y), rtol=1e-5, atol=1e-6)


def unit_rows(n: int, seed: int, dim: int = 16) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard", "hardest_negative", "random_hard"])
@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_memory_path_mines_the_same_and_matches_the_embeddings_path(
    mining: str, distance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a memory the loss reads the triplets' distances from the (B, B + M) matrix: the
    miner sees bit for bit the matrix of ``candidate_distances`` (so mines the same set), and
    the loss equals the per-triplet (embeddings) path within the rounding of the Gram
    expansion ``|x|^2 + |y|^2 - 2 x.y`` (float32, unit rows)."""
    from tripletlab.losses import triplet as triplet_module

    seen: list[tuple[Tensor, miners.Triplets]] = []
    original = getattr(triplet_module, mining)

    def recording(d: Tensor, y: Tensor, *rest: object) -> miners.Triplets:
        seen.append((d.clone(), original(d, y, *rest)))
        return seen[-1][1]

    monkeypatch.setattr(triplet_module, mining, recording)
    b, m, dim = 32, 64, 16
    loss = TripletMarginLoss(MARGIN, mining, distance, memory_size=m, seed=0)  # type: ignore[arg-type]
    mem, y_mem = unit_rows(m, 1, dim), torch.randint(0, 4, (m,))
    loss(mem[:b], y_mem[:b])  # fill the memory (B at a time)
    loss(mem[b:], y_mem[b:])
    x = unit_rows(b, 2, dim).requires_grad_(True)
    y = torch.randint(0, 4, (b,), generator=torch.Generator().manual_seed(3))
    value = loss(x, y)
    d_seen, triplets = seen[-1]
    order_only = mining in ("semi_hard", "batch_hard") and distance == "euclidean"
    with torch.no_grad():
        expected = candidate_distances(x, mem, "sqeuclidean" if order_only else distance)  # type: ignore[arg-type]
    assert torch.equal(d_seen, expected)
    assert triplets[0].numel() > 0

    x_ref = x.detach().clone().requires_grad_(True)
    ref, _ = triplet_module.triplet_loss_from_embeddings(
        torch.cat([x_ref, mem]),
        triplets,
        MARGIN,
        distance,  # type: ignore[arg-type]
    )
    # |rounding of d^2| <= (dim + 2) eps (|x|^2 + |y|^2) = 2 (dim + 2) eps for unit rows; a
    # distance d moves by at most that / (2 d) (squared: by that), and the mean hinge by twice.
    eps = torch.finfo(torch.float32).eps
    err_sq = 2 * (dim + 2) * eps
    if distance == "euclidean":
        a, p, n = triplets
        e64 = torch.cat([x.detach(), mem]).double()
        d_min = float(
            torch.cat([(e64[a] - e64[p]).norm(dim=1), (e64[a] - e64[n]).norm(dim=1)]).min()
        )
        tol = 2 * err_sq / (2 * d_min)
    else:
        tol = 2 * err_sq  # cosine: 1 - x.y rounds within (dim + 2) eps
    assert abs(float(value) - float(ref)) <= tol
    value.backward()
    ref.backward()
    assert x.grad is not None and x_ref.grad is not None
    # Gradients: the same rounding through (x - y) / d, far inside 1e-4 for unit rows.
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("family", "mining"),
    [("triplet", m) for m in TRIPLET_MININGS] + [("contrastive", m) for m in PAIR_MININGS],
)
@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("collapsed", [False, True])
def test_memory_gradients_stay_finite_with_duplicates(
    family: str, mining: str, distance: str, collapsed: bool
) -> None:
    """The memory holds exact copies of the batch (distance exactly 0 to an earlier view),
    or every embedding is the same: finite loss and gradients, never NaN."""
    m = 12
    loss: torch.nn.Module = (
        TripletMarginLoss(MARGIN, mining, distance, memory_size=m)  # type: ignore[arg-type]
        if family == "triplet"
        else ContrastiveLoss(0.0, 1.0, distance, mining, memory_size=m)  # type: ignore[arg-type]
    )
    x = torch.ones(6, 3) if collapsed else unit_rows(6, 0, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for _ in range(3):  # the memory fills with the same six rows
        xg = x.clone().requires_grad_(True)
        value = loss(xg, y)
        value.backward()
        assert xg.grad is not None
        assert torch.isfinite(value) and torch.isfinite(xg.grad).all()
