"""Property tests: no NaN ever leaves a loss, whatever the batch."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from losses_data import all_losses

from tripletlab import miners
from tripletlab.distances import pairwise_distances

# Values chosen to make duplicates, zero vectors, tiny and large gaps likely.
VALUES = st.sampled_from([0.0, 1.0, -1.0, 1e-8, -1e-8, 0.5, 1e3])


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    b = draw(st.integers(0, 10))
    dim = draw(st.integers(1, 3))
    flat = draw(st.lists(VALUES, min_size=b * dim, max_size=b * dim))
    labels = draw(st.lists(st.integers(0, 3), min_size=b, max_size=b))
    x = torch.tensor(flat, dtype=torch.float32).reshape(b, dim)
    return x, torch.tensor(labels, dtype=torch.long)


LOSSES = all_losses()


@settings(max_examples=80, deadline=None)
@given(batches())
def test_no_nan_in_loss_or_gradient(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x0, y = batch
    for loss_fn in LOSSES:
        x = x0.clone().requires_grad_(True)
        loss = loss_fn(x, y)
        assert torch.isfinite(loss), loss_fn
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), loss_fn


@settings(max_examples=80, deadline=None)
@given(batches())
def test_mined_triplets_are_valid(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    d = pairwise_distances(x)
    g = torch.Generator().manual_seed(0)
    for a, p, n in (
        miners.batch_hard(d, y),
        miners.semi_hard(d, y),
        miners.hardest_negative(d, y, 0.2),
        miners.random_hard(d, y, 0.2, g),
        miners.semi_hard_random(d, y, 0.2, g),
    ):
        assert torch.all(a != p)
        assert torch.all(y[a] == y[p])
        assert torch.all(y[a] != y[n])
