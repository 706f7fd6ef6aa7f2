from __future__ import annotations

import numpy as np
import pytest
import reference
import torch
from tolerances import assert_distances_close, gram_error

from tripletlab.distances import (
    DISTANCES,
    Distance,
    paired_distances,
    pairwise_distances,
    safe_sqrt,
)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(("n", "dim", "seed"), [(1, 3, 0), (7, 2, 1), (16, 8, 2), (33, 5, 3)])
def test_pairwise_matches_brute_force(distance: Distance, n: int, dim: int, seed: int) -> None:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = pairwise_distances(x, distance=distance)
    np.testing.assert_allclose(got.numpy(), reference.distances(x.numpy(), distance), atol=1e-10)


@pytest.mark.parametrize("distance", DISTANCES)
def test_pairwise_two_sets_matches_brute_force(distance: Distance) -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    got = pairwise_distances(x, y, distance)
    full = reference.distances(torch.cat([x, y]).numpy(), distance)
    assert got.shape == (6, 9)
    want = torch.from_numpy(full[:6, 6:])  # float64 differences: exact for this purpose
    assert_distances_close(got, want, distance, gram_error(x, y, distance=distance))


@pytest.mark.parametrize("distance", DISTANCES)
def test_float32_diagonal_exact_zero_and_nonnegative(distance: Distance) -> None:
    x = torch.randn(64, 16) * 100
    d = pairwise_distances(x, distance=distance)
    assert torch.all(d.diagonal() == 0)
    assert torch.all(d >= 0)


def test_near_identical_rows_stay_nonnegative() -> None:
    # cos slightly above 1 in float32 must not give a negative cosine distance.
    x = torch.tensor([[1.0, 0.0], [1.0 + 2e-7, 0.0], [1.0 - 2e-7, 1e-8]])
    for distance in DISTANCES:
        d = pairwise_distances(x, distance=distance)
        assert torch.all(d >= 0), distance
        want = torch.from_numpy(reference.distances(x.numpy(), distance))
        # ~1e-7 apart: all that is left is the rounding of |x|^2 + |y|^2 - 2 x.y
        assert_distances_close(d, want, distance, gram_error(x, distance=distance))
    d = pairwise_distances(x[:1], x[1:], "cosine")
    assert torch.all(d >= 0)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_finite_for_duplicates_and_identical(
    distance: Distance, dtype: torch.dtype
) -> None:
    base = torch.randn(3, 4, dtype=dtype)
    for x0 in (torch.cat([base, base[:1], base[:1]]), torch.ones(5, 4, dtype=dtype)):
        x = x0.clone().requires_grad_(True)
        d = pairwise_distances(x, distance=distance)
        (d * torch.rand_like(d)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    zeros = torch.zeros(4, 3, dtype=dtype, requires_grad=True)
    pairwise_distances(zeros, distance=distance).sum().backward()
    assert zeros.grad is not None and torch.isfinite(zeros.grad).all()


def test_gradcheck_euclidean_float64() -> None:
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: pairwise_distances(a, b), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: paired_distances(a[:4], b), (x, y))


def test_safe_sqrt_gradient() -> None:
    x = torch.tensor([0.0, 4.0, 1e-30], requires_grad=True)
    safe_sqrt(x).sum().backward()
    assert x.grad is not None
    assert x.grad[0] == 0
    assert x.grad[1] == pytest.approx(0.25)
    assert torch.isfinite(x.grad).all()


def test_bfloat16_is_computed_in_float32() -> None:
    x = torch.randn(10, 8)
    d16 = pairwise_distances(x.bfloat16())
    assert d16.dtype == torch.float32
    want = torch.from_numpy(reference.distances(x.bfloat16().float().numpy(), "euclidean"))
    # the bfloat16 values exactly, up to float32 rounding (bfloat16 arithmetic would be ~1e-2)
    assert_distances_close(d16, want, "euclidean", gram_error(x.bfloat16()))
    xb = x.bfloat16().requires_grad_(True)
    pairwise_distances(xb, distance="cosine").sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("distance", DISTANCES)
def test_paired_matches_pairwise_diagonal(distance: Distance) -> None:
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    got = paired_distances(x, y, distance)
    want = pairwise_distances(x, y, distance).diagonal()
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-10)
    same = x.clone().requires_grad_(True)
    d = paired_distances(same, x, distance)
    assert torch.all(d.abs() < 1e-12)
    d.sum().backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown distance 'manhattan'; choose one of"):
        pairwise_distances(torch.randn(3, 2), distance="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, D\).*\(3,\)"):
        pairwise_distances(torch.randn(3))
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(3, 4\)"):
        pairwise_distances(torch.randn(3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="one shape"):
        paired_distances(torch.randn(3, 2), torch.randn(4, 2))
