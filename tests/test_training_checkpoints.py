"""Atomic writes and checkpoints (:mod:`tripletlab.training.checkpoints`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tripletlab.io import atomic_torch_save, atomic_write_bytes


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
