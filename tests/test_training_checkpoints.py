"""Atomic writes and checkpoints (:mod:`tripletlab.training.checkpoints`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tripletlab.io import atomic_torch_save, atomic_write_bytes
from tripletlab.training import RESUME_KEYS, TrainingError, load_checkpoint


def test_checkpoints_get_the_same_permissions_as_other_files(tmp_path: Path) -> None:
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    atomic_write_bytes(tmp_path / "b.json", b"{}")
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert mode["a.pt"] == mode["b.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert mode["a.pt"] == 0o666 & ~umask  # not mkstemp's 0o600
    assert torch.load(tmp_path / "a.pt", weights_only=True)["x"].sum() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.json"]  # no temp files


def test_load_checkpoint_names_the_keys_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    model = {"version": 1, "config": {}, "model": {"w": torch.ones(1)}, "epoch": 1, "history": []}
    torch.save(model, path)
    assert load_checkpoint(path)["epoch"] == 1  # enough to use the model
    with pytest.raises(TrainingError, match=r"lacks optimizer, scheduler, .*, train_seconds \("):
        load_checkpoint(path, RESUME_KEYS)  # not enough to resume
    torch.save({**model, "model": {"w": [1.0]}}, path)
    with pytest.raises(TrainingError, match="its model is not a dict of tensors"):
        load_checkpoint(path)
    torch.save({**model, "epoch": "1"}, path)
    with pytest.raises(TrainingError, match="its epoch is not an integer"):
        load_checkpoint(path)
