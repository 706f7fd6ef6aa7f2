"""Shared fixtures: seeded generators and the label layouts every miner and loss is tried on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `import reference`


def make_labels(layout: str, seed: int) -> torch.Tensor:
    """Label layouts: balanced P x K, unbalanced sizes, singletons mixed in, one class, tiny."""
    g = torch.Generator().manual_seed(seed)
    if layout == "balanced":
        labels = torch.arange(4).repeat_interleave(3)  # 4 classes x 3
    elif layout == "unbalanced":
        sizes = [1 + int(s) for s in torch.randint(0, 6, (5,), generator=g)]
        labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    elif layout == "singletons":
        labels = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5])
    elif layout == "one_class":
        labels = torch.zeros(6, dtype=torch.long)
    elif layout == "all_distinct":
        labels = torch.arange(7)
    elif layout == "pair":
        labels = torch.tensor([3, 3])
    else:
        raise ValueError(layout)
    return labels[torch.randperm(labels.shape[0], generator=g)].long()


LAYOUTS = ["balanced", "unbalanced", "singletons", "one_class", "all_distinct", "pair"]
SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=["direct", "direct_chunked", "sorted"])
def mining_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each of the miners' two strategies (and tiny anchor chunks)."""
    from tripletlab import miners

    if request.param == "sorted":
        monkeypatch.setattr(miners, "DENSE_MAX_POSITIVES", -1)
    else:
        monkeypatch.setattr(miners, "DENSE_MAX_POSITIVES", 10**9)
    if request.param == "direct_chunked":
        monkeypatch.setattr(miners, "CHUNK_ELEMENTS", 8)
    return str(request.param)
