"""tripletlab.metrics.blocks: the in-place distance blocks against pairwise_distances."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from metrics_data import data
from tolerances import assert_distances_close, gram_error

from tripletlab.metrics import blocks


@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_distance_blocks_follow_pairwise_distances(distance: Any, dtype: torch.dtype) -> None:
    """The search's in-place blocks use pairwise_distances' formulas and dtype rules."""
    from tripletlab.distances import pairwise_distances

    x, _ = data(23, 3, 13, dim=6)
    x = x.to(dtype)
    x[5] = 0.0  # a zero row: cosine 0 with all
    prepared = blocks._prepare(x, distance)
    got = blocks._block(x[3:9], prepared, start=4)
    want = pairwise_distances(x[3:9], x[4:], distance)
    assert got.dtype == want.dtype
    # The same formula summed in another order (and by another kernel): equal up to the
    # rounding of |q|^2 + |g|^2 - 2 q.g in the compute dtype. Rows 4-8 meet themselves
    # (distance 0 up to that rounding, whose square root the Euclidean distance is).
    assert_distances_close(got, want, distance, gram_error(x, distance=distance))
    own = blocks._block(x[3:9], prepared, own=torch.arange(3, 9))
    assert bool(torch.isinf(own[torch.arange(6), torch.arange(3, 9)]).all())
