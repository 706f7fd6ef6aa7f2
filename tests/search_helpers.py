"""Shared by the tests of :mod:`tripletlab.search` and :mod:`tripletlab.search.commands`: seeded
Gaussian and clustered embeddings, an index of them, faiss configs and item ids."""

from __future__ import annotations

import torch

from tripletlab.search import EmbeddingIndex, IndexConfig

DISTANCES = ["euclidean", "sqeuclidean", "cosine"]


def gaussian(n: int, d: int, seed: int, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def make_index(
    x: torch.Tensor, y: torch.Tensor, config: IndexConfig | None = None, prefix: str = "g"
) -> EmbeddingIndex:
    index = EmbeddingIndex(x.shape[1], config)
    index.add(x, y, [f"{prefix}{i}" for i in range(len(x))])
    return index


def faiss_config(kind: str, distance: str = "euclidean", **extra: int) -> IndexConfig:
    return IndexConfig(distance=distance, backend="faiss", faiss_index=kind, **extra)  # type: ignore[arg-type]


def clusters(
    n_per: int, classes: list[int], seed: int, spread: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around class centres 0, 3, 6, ... on a line in 2-D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n_per)
    x = torch.randn(len(y), 2, generator=g) * spread
    x[:, 0] += 3.0 * y
    return x, y


def ids(n: int, prefix: str = "g") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))
