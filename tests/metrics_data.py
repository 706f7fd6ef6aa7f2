"""Seeded data shared by the tests of :mod:`tripletlab.metrics`."""

from __future__ import annotations

import torch


def data(n: int, classes: int, seed: int, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) + y[:, None].double() * 0.7
    return x, y
