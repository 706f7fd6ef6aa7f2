"""The index file of :class:`~tripletlab.search.EmbeddingIndex` (its format is in the
:mod:`tripletlab.search` docstring): what :meth:`~tripletlab.search.EmbeddingIndex.save` and
:meth:`~tripletlab.search.EmbeddingIndex.load` run. Every write is atomic; loading never
unpickles."""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tripletlab.calibration import calibration_from_state, calibration_state
from tripletlab.search.config import FaissMissing, IndexConfig, IndexFileError, SearchError
from tripletlab.search.faiss_backend import import_faiss

if TYPE_CHECKING:
    from tripletlab.search.index import EmbeddingIndex

INDEX_KIND = "tripletlab-index"
FORMAT_VERSION = 1


def _save_index(index: EmbeddingIndex, path: Path) -> Path:
    """:meth:`EmbeddingIndex.save <tripletlab.search.EmbeddingIndex.save>`."""
    faiss_bytes = np.zeros(0, dtype=np.uint8)
    if index._faiss is not None:
        faiss_bytes = np.asarray(import_faiss().serialize_index(index._faiss), dtype=np.uint8)
    cal_arrays: dict[str, np.ndarray] = {}
    cal_info = None
    if index.calibration is not None:
        cal_arrays, cal_info = calibration_state(index.calibration)
    meta = {
        "kind": INDEX_KIND,
        "format_version": FORMAT_VERSION,
        "dim": index.dim,
        "size": len(index),
        "config": asdict(index.config),
        "calibration": cal_info,
        "source": index.meta,
    }
    arrays = {
        "vectors": index._vectors.numpy(),
        "faiss": faiss_bytes,
        "labels": index._labels.numpy(),
        "ids": np.array(index._ids, dtype=np.str_).reshape(len(index._ids)),
        "classes": np.array(index.classes, dtype=np.str_).reshape(len(index.classes)),
        "meta": np.array(json.dumps(meta)),
        **cal_arrays,
    }
    return _atomic_save_npz(Path(path), arrays)


def _load_index(cls: type[EmbeddingIndex], path: Path) -> EmbeddingIndex:
    """:meth:`EmbeddingIndex.load <tripletlab.search.EmbeddingIndex.load>`."""
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(
            f"no index file at {path}; build one with 'tripletlab index build "
            f"--embeddings FILE.npz --out {path}'"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("kind") != INDEX_KIND:
            raise IndexFileError(
                f"{path} is not a tripletlab index (an embeddings file? build an index "
                f"from it with 'tripletlab index build --embeddings {path} --out INDEX')"
            )
        if int(meta["format_version"]) > FORMAT_VERSION:
            raise IndexFileError(
                f"{path} has index format {meta['format_version']}, newer than this "
                f"tripletlab reads ({FORMAT_VERSION}); upgrade tripletlab"
            )
        index = _from_state(cls, arrays, meta)
    except (IndexFileError, FaissMissing):
        raise
    except SearchError as err:
        raise IndexFileError(f"{path} is corrupt ({err}); build the index again") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, zipfile.BadZipFile) as err:
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise IndexFileError(
            f"{path} is corrupt or not a tripletlab index ({type(err).__name__}: {first}); "
            "build the index again with 'tripletlab index build'"
        ) from None
    return index


def _from_state(
    cls: type[EmbeddingIndex], arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> EmbeddingIndex:
    config = IndexConfig(**meta["config"])
    dim, size = int(meta["dim"]), int(meta["size"])
    index = cls(dim, config, classes=[str(s) for s in arrays["classes"]], meta=meta["source"])
    labels = torch.from_numpy(np.array(arrays["labels"], dtype=np.int64))
    ids = [str(s) for s in arrays["ids"].reshape(-1)]
    if labels.shape != (size,) or len(ids) != size or len(set(ids)) != size:
        raise SearchError(f"{size} items but {labels.shape[0]} labels and {len(ids)} ids")
    if config.backend == "exact":
        vectors = torch.from_numpy(np.array(arrays["vectors"], dtype=np.float32))
        if vectors.shape != (size, dim):
            raise SearchError(f"vectors of shape {tuple(vectors.shape)}, not ({size}, {dim})")
        index._vectors = vectors
    elif size:
        structure = import_faiss().deserialize_index(np.array(arrays["faiss"], dtype=np.uint8))
        if int(structure.ntotal) != size or int(structure.d) != dim:
            raise SearchError(
                f"a faiss structure of {structure.ntotal} x {structure.d}, not {size} x {dim}"
            )
        index._faiss = structure
    index._labels = labels
    index._ids = ids
    index._positions = {s: i for i, s in enumerate(ids)}
    if meta["calibration"] is not None:
        index.calibration = calibration_from_state(arrays, meta["calibration"])
    return index


def _atomic_save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` straight into a temporary file beside ``path``, then a rename (as
    :func:`tripletlab.training.atomic_write_bytes`, without holding the archive in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
