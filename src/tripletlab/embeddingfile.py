"""The embeddings file: what ``tripletlab embed`` writes and ``index build`` / ``search`` read.

One ``.npz`` archive (numpy's zip of ``.npy`` arrays), read with ``allow_pickle=False`` so
loading a file never runs code:

- ``embeddings``: (N, D) float32, one row per item;
- ``labels``: (N,) int64, an index into ``classes``, or ``-1`` for an item without a label;
- ``ids``: (N,) unicode strings, one per item (a file path, or ``"<split>/<index>"``);
- ``classes``: (C,) unicode strings, the class names (may be empty);
- ``meta``: a 0-d unicode string holding a JSON object: ``format_version`` (1), and what the
  writer knows: ``run`` (the run folder), ``dataset``, ``split``, ``distance``, ``normalized``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tripletlab.checks import nonfinite_rows
from tripletlab.io import NpzError, atomic_write_bytes, load_npz

FORMAT_VERSION = 1
_KEYS = ("embeddings", "labels", "ids", "classes", "meta")


class EmbeddingFileError(ValueError):
    """An embeddings file that cannot be read, or data that cannot be written as one."""


@dataclass(frozen=True)
class EmbeddingFile:
    """Embeddings with their labels, ids and class names.

    Attributes:
        embeddings: (N, D) float32 on the CPU, N >= 0, D >= 1.
        labels: (N,) int64, each in ``[-1, len(classes))``; -1 = unlabelled.
        ids: N strings.
        classes: class names, indexed by the labels.
        meta: JSON-serialisable facts about how the embeddings were made.

    Raises:
        EmbeddingFileError: on construction, if the shapes, dtypes or labels do not fit.
    """

    embeddings: Tensor
    labels: Tensor
    ids: tuple[str, ...]
    classes: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e, y = self.embeddings, self.labels
        if e.dim() != 2 or e.shape[1] < 1 or e.dtype != torch.float32:
            raise EmbeddingFileError(
                f"embeddings must be float32 of shape (N, D) with D >= 1, got {e.dtype} "
                f"of shape {tuple(e.shape)}"
            )
        if y.dim() != 1 or y.dtype != torch.int64 or y.shape[0] != e.shape[0]:
            raise EmbeddingFileError(
                f"labels must be int64 of shape ({e.shape[0]},), got {y.dtype} of shape "
                f"{tuple(y.shape)}"
            )
        if len(self.ids) != e.shape[0]:
            raise EmbeddingFileError(f"{e.shape[0]} embeddings but {len(self.ids)} ids")
        if y.numel() and (int(y.min()) < -1 or int(y.max()) >= len(self.classes)):
            raise EmbeddingFileError(
                f"labels must lie in [-1, {len(self.classes)}) (-1 = unlabelled; one class "
                f"name per label), got [{int(y.min())}, {int(y.max())}]"
            )
        bad = nonfinite_rows(e)
        if bad:
            raise EmbeddingFileError(
                f"embeddings contain NaN or infinite values in {bad} of {e.shape[0]} rows"
            )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """The embedding dimension D."""
        return int(self.embeddings.shape[1])


def save_embeddings(path: Path, data: EmbeddingFile) -> Path:
    """Write ``data`` to ``path`` (an ``.npz``; the suffix is not added) atomically.

    Raises:
        tripletlab.io.WriteError (a ``ValueError``): ``path`` cannot be written; it is left
            as it was.
    """
    buf = io.BytesIO()
    np.savez(
        buf,
        embeddings=data.embeddings.detach().cpu().numpy(),
        labels=data.labels.cpu().numpy(),
        ids=np.array(data.ids, dtype=np.str_).reshape(len(data.ids)),
        classes=np.array(data.classes, dtype=np.str_).reshape(len(data.classes)),
        meta=np.array(json.dumps({"format_version": FORMAT_VERSION, **data.meta})),
    )
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_embeddings(path: Path) -> EmbeddingFile:
    """Read an embeddings file written by :func:`save_embeddings` (no code runs).

    Raises:
        EmbeddingFileError: a missing, unreadable or corrupt file, a missing array, a newer
            format version; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbeddingFileError(
            f"no embeddings file at {path}; write one with 'tripletlab embed RUN --out {path}'"
        )
    try:
        arrays = load_npz(path)
    except NpzError as err:
        raise EmbeddingFileError(
            f"{path} is corrupt or not an embeddings file ({err}); write it again with "
            "'tripletlab embed'"
        ) from None
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise EmbeddingFileError(
            f"{path} is not a tripletlab embeddings file (missing {', '.join(missing)}); "
            "write one with 'tripletlab embed'"
        )
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as err:
        raise EmbeddingFileError(
            f"{path} is corrupt (its meta is not JSON: {err}); write it again with "
            "'tripletlab embed'"
        ) from None
    if not isinstance(meta, dict) or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise EmbeddingFileError(
            f"{path} has an unknown format version; upgrade tripletlab or re-embed"
        )
    try:
        return EmbeddingFile(
            embeddings=torch.from_numpy(np.ascontiguousarray(arrays["embeddings"])),
            labels=torch.from_numpy(np.ascontiguousarray(arrays["labels"])),
            ids=tuple(str(s) for s in arrays["ids"].reshape(-1)),
            classes=tuple(str(s) for s in arrays["classes"].reshape(-1)),
            meta=meta,
        )
    except EmbeddingFileError as err:
        raise EmbeddingFileError(f"{path}: {err}") from err
