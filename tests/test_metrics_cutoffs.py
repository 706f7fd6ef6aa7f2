"""tripletlab.metrics.cutoffs: the cut-off lists against brute force and the old top-k path.

Each test runs both forms, numpy one query at a time (CPU) and torch a chunk at a time (any
other device; forced here), and with a tiny column sample, whose cut-offs are often short
and must be raised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference
import torch
from retrieval_topk import topk_values

from tripletlab.metrics import cutoffs, retrieval_metrics

KS = [1, 2, 5]


@pytest.fixture(params=["numpy", "torch"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The numpy and the torch form of the lists, both on the CPU."""
    if request.param == "torch":
        monkeypatch.setattr(cutoffs, "_use_numpy", lambda d: False)
    return str(request.param)


@pytest.fixture(params=[1024, 3])
def sample(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The default sample (every column at these sizes) and one of 3 columns."""
    monkeypatch.setattr(cutoffs, "SAMPLE", request.param)
    return int(request.param)


def brute_values(d: np.ndarray, yq: list[int], yg: list[int], same_set: bool) -> np.ndarray:
    """(Q, 3 + len(KS)) P@1, R-precision, MAP@R, Recall@K by definition; zeros for R = 0."""
    rows = reference.retrieval_per_query(d, yq, yg, same_set, KS)
    names = ["precision_at_1", "r_precision", "map_at_r", *[f"recall@{k}" for k in KS]]
    return np.array([[0.0] * len(names) if v is None else [v[k] for k in names] for v in rows])


def class_ids(yq: torch.Tensor, yg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, ids = torch.unique(torch.cat([yq, yg]), return_inverse=True)
    return ids[: len(yq)], ids[len(yq) :]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("nq", "ng", "classes", "levels", "same_set", "seed"),
    [
        (23, 23, 3, 0, True, 0),  # continuous distances, a set against itself
        (31, 31, 4, 3, True, 1),  # three distance levels: ties everywhere
        (17, 40, 5, 5, False, 2),  # separate gallery, a query class absent from it
        (12, 12, 2, 1, True, 3),  # every distance equal
        (20, 26, 9, 2, False, 4),  # many small classes, two levels
    ],
)
def test_cutoff_values_match_brute_force(
    form: str,
    sample: int,
    dtype: torch.dtype,
    nq: int,
    ng: int,
    classes: int,
    levels: int,
    same_set: bool,
    seed: int,
) -> None:
    """cutoff_values on a given distance block equals the definitions, ties included."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(nq, ng, generator=g, dtype=torch.float64)
    if levels:
        d = (d * levels).floor() / levels  # exactly tied values
    yg = torch.randint(0, classes, (ng,), generator=g)
    yq = yg[:nq].clone() if same_set else torch.randint(0, classes + 1, (nq,), generator=g)
    want = brute_values(d.numpy(), yq.tolist(), yg.tolist(), same_set)
    own = torch.arange(nq) if same_set else None
    d = d.to(dtype)
    if own is not None:
        d[own, own] = float("inf")
    q_ids, g_ids = class_ids(yq, yg)
    r = (g_ids[None, :] == q_ids[:, None]).sum(1) - int(same_set)
    cols = cutoffs.sample_columns(ng, d.device)
    assert len(cols) == min(ng, sample)
    got = cutoffs.cutoff_values(d, q_ids, g_ids, own, r, KS, cols)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=0)


def mixed_data(
    n: int, sizes: str, ties: str, seed: int, dim: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings with one class-size mix and one kind of ties."""
    g = torch.Generator().manual_seed(seed)
    if sizes == "few":
        y = torch.randint(0, 3, (n,), generator=g)
    elif sizes == "many":
        y = torch.randint(0, n // 2, (n,), generator=g)
    else:  # one big class, many small ones and singletons
        y = torch.where(torch.rand(n, generator=g) < 0.6, 0, torch.randint(1, n, (n,), generator=g))
    x = torch.randn(n, dim, generator=g) + y[:, None].float() % 3
    if ties == "quantized":
        x = x.round()
    elif ties == "duplicates":
        x = x[torch.randint(0, max(1, n // 4), (n,), generator=g)]
    elif ties == "equal":
        x = torch.ones(n, dim)
    return x, y


def oracle_metrics(
    q: torch.Tensor,
    yq: torch.Tensor,
    g: torch.Tensor | None,
    yg: torch.Tensor | None,
    ks: list[int],
    distance: Any,
    chunk: int,
) -> tuple[list[float], dict[int, list[float]], int]:
    """(overall means, per class means, queries scored) of the old top-k path."""
    values, r = topk_values(q, yq, g, yg, ks, distance, chunk)
    scored = r > 0
    none = torch.full((values.shape[1],), float("nan"))  # nothing scored: not computable
    overall = values[scored].mean(0) if scored.any() else none
    per_class = {}
    for c in torch.unique(yq).tolist():
        rows = scored & (yq == c)
        per_class[c] = (values[rows].mean(0) if rows.any() else none).tolist()
    return overall.tolist(), per_class, int(scored.sum())


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "sqeuclidean"])
@pytest.mark.parametrize(
    ("n", "sizes", "ties", "same_set", "seed"),
    [
        (60, "few", "none", True, 0),
        (70, "many", "quantized", True, 1),
        (80, "mixed", "duplicates", False, 2),
        (50, "few", "equal", True, 3),
        (90, "mixed", "quantized", True, 4),
        (64, "many", "duplicates", False, 5),
        (1500, "few", "quantized", True, 6),  # more columns than the default sample
        (1300, "mixed", "none", False, 7),
    ],
)
def test_retrieval_metrics_match_the_topk_oracle(
    form: str, distance: Any, n: int, sizes: str, ties: str, same_set: bool, seed: int
) -> None:
    """The scores of issue 17's cut-off path equal the top-(R_max + 1) path's to 1e-6."""
    x, y = mixed_data(n, sizes, ties, seed)
    if same_set:
        args: tuple[torch.Tensor, ...] = (x, y)
        q, yq, g, yg = x, y, None, None
    else:
        q, yq, g, yg = x[: n // 3], y[: n // 3], x[n // 3 :], y[n // 3 :]
        args = (q, yq, g, yg)
    ks = [1, 4, 8]
    chunk = 37
    got = retrieval_metrics(*args, recall_ks=ks, distance=distance, chunk=chunk)
    overall, per_class, scored = oracle_metrics(q, yq, g, yg, ks, distance, chunk)

    def flat(m: Any) -> list[float]:
        return [m.precision_at_1, m.r_precision, m.map_at_r, *[m.recall_at_k[k] for k in ks]]

    assert got.num_queries == scored
    assert flat(got) == pytest.approx(overall, abs=1e-6, nan_ok=True)
    assert sorted(got.per_class) == sorted(per_class)
    for c, want in per_class.items():
        assert flat(got.per_class[c]) == pytest.approx(want, abs=1e-6, nan_ok=True)


def test_sample_columns_are_fixed_distinct_and_sorted() -> None:
    a, b = (
        cutoffs.sample_columns(5000, torch.device("cpu")),
        cutoffs.sample_columns(5000, torch.device("cpu")),
    )
    assert torch.equal(a, b) and len(a) == cutoffs.SAMPLE
    assert bool((a[1:] > a[:-1]).all()) and int(a[-1]) < 5000
    assert torch.equal(cutoffs.sample_columns(7, torch.device("cpu")), torch.arange(7))


@pytest.mark.parametrize("same_set", [True, False])
def test_a_misleading_sample_raises_the_cutoff(
    form: str, monkeypatch: pytest.MonkeyPatch, same_set: bool
) -> None:
    """Sampled columns nearer than every other item put the first cut-off short of R: it is
    raised (j doubled within the sample, then past it) and the scores stay exact."""
    monkeypatch.setattr(cutoffs, "SAMPLE", 16)
    n, g = 200, torch.Generator().manual_seed(8)
    cols = cutoffs.sample_columns(n, torch.device("cpu"))
    d = 0.5 + 0.5 * torch.rand(n, n, generator=g, dtype=torch.float64)
    d[:, cols] = 0.1 * torch.rand(n, len(cols), generator=g, dtype=torch.float64)
    yg = torch.arange(n) % 25  # R = 8 (7 against itself): need = max(R, 5)
    yq = yg.clone() if same_set else (torch.arange(n) * 7) % 25
    want = brute_values(d.numpy(), yq.tolist(), yg.tolist(), same_set)
    own = torch.arange(n) if same_set else None
    if own is not None:
        d[own, own] = float("inf")
    q_ids, g_ids = class_ids(yq, yg)
    r = (g_ids[None, :] == q_ids[:, None]).sum(1) - int(same_set)
    need = r.clamp_min(max(KS))
    sample, j = cutoffs._sampled(d, need, cols)
    first = cutoffs._pick(sample, j, need)
    assert bool(((d <= first[:, None]).sum(1) < need).all()), "the sample should mislead"
    got = cutoffs.cutoff_values(d, q_ids, g_ids, own, r, KS, cols)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=0)
