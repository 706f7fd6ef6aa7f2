"""Atomic writes: the one home of "temporary file beside the target, then a rename".

A reader sees the old file or the new one, never a part; a failed or interrupted write
leaves no temporary file behind (the temporary is removed on any exception, Ctrl-C
included). Every writer of the package (checkpoints, ``config.json``, embeddings and index
files, pictures, the report, ONNX models, downloads) goes through :func:`atomic_path`.

Temporary files are named ``.<name>.<random>.tmp`` in the target's folder, so the rename
never crosses a file system, and get the usual permissions (``0o666`` less the umask, where
``mkstemp`` would give ``0o600``).
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

__all__ = [
    "atomic_file",
    "atomic_path",
    "atomic_save_npz",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "temporary_path",
]


def temporary_path(path: Path) -> Path:
    """A fresh name for a temporary file beside ``path`` (``.<name>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to create and fill; on a clean exit it
    replaces ``path``, on an exception it is removed and ``path`` is left as it was.

    For writers that need a file name rather than a file object (a checker that reads the
    file back before it may replace the old one). The folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """:func:`atomic_path` opened for binary writing: what the block writes replaces
    ``path`` on a clean exit; raising inside the block (say after a checksum mismatch)
    discards it::

        with atomic_file(dest) as f:
            f.write(data)
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as f:
        f.write(data)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: Path) -> Path:
    """``torch.save`` to memory, then :func:`atomic_write_bytes`; returns ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getbuffer().tobytes())


def atomic_save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` straight into the temporary file (the archive is never
    held in memory), then the rename; returns ``path`` (no ``.npz`` suffix is added)."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path
