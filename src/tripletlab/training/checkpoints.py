"""The checkpoints :func:`~tripletlab.training.fit` writes (atomically, with
:func:`tripletlab.io.atomic_torch_save`) and reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tripletlab.training.errors import TrainingError

CHECKPOINT_VERSION = 1


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no code runs)."""
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; start a new run without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise TrainingError(
            f"checkpoint {path} is unreadable ({type(err).__name__}); resume from another run "
            "folder or start a new run"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path} is not a tripletlab checkpoint (version {CHECKPOINT_VERSION})")
    return ckpt
