"""Atomic writes (temporary file + rename) and the checkpoints :func:`~tripletlab.training.fit`
writes and reads."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from tripletlab.training.errors import TrainingError

CHECKPOINT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader sees the old file or the new one, never a part; a failed write leaves no
    temporary file. The folder is created if needed; the file gets the usual permissions
    (``0o666`` less the umask, where ``mkstemp`` would give ``0o600``). Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to memory, then :func:`atomic_write_bytes` (so the usual permissions)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer().tobytes())


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
