"""Devices and a run's embedding mode (:mod:`tripletlab.training.devices`)."""

from __future__ import annotations

import pytest
import torch

from tripletlab import embedding
from tripletlab.embedding import EmbedMode
from tripletlab.training import config_from_dict, devices


def test_a_run_is_embedded_as_it_trained(monkeypatch: pytest.MonkeyPatch) -> None:
    # use_amp reads cpu_has_native_bf16 from tripletlab.embedding: patch it there
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: False)
    cpu = torch.device("cpu")
    config = config_from_dict(
        {"dataset": "digits", "amp": "auto", "tta": True, "eval_batch_size": 64}
    )
    assert devices.embedding_mode(config, cpu) == EmbedMode(flip=True, amp=False, batch_size=64)
    assert devices.embedding_mode(config, cpu, 8).batch_size == 8
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: True)
    assert devices.embedding_mode(config, cpu).amp
    with pytest.raises(ValueError, match="unknown amp 'yes'; choose one of: auto, on, off"):
        config_from_dict({"amp": "yes"})
