"""Shared by the tests of :mod:`tripletlab.models`: the one-thread fixture, the cheap image
size of each model, seeded images and a parameter count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

# Cheap configurations for the tests that build every model several times.
FAST = {"small": 8, "embeddingnet": 16, "resnet18": 8, "resnet34": 8, "resnet50": 8}


@pytest.fixture(autouse=True, scope="module", name="_one_thread")
def one_thread_fixture() -> Iterator[None]:
    """Run these tiny forwards on one thread: two OpenMP threads on a loaded 2-core machine
    spin against each other and made this module 7x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def images(b: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(seed))
