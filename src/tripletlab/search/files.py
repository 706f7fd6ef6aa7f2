"""The index file of :class:`~tripletlab.search.EmbeddingIndex` (its format is in the
:mod:`tripletlab.search` docstring): what :meth:`~tripletlab.search.EmbeddingIndex.save` and
:meth:`~tripletlab.search.EmbeddingIndex.load` run. Every write is atomic; loading never
unpickles."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tripletlab.io import NpzError, atomic_save_npz, load_npz
from tripletlab.search.config import FaissMissing, IndexFileError, SearchError

T = TypeVar("T")

INDEX_KIND = "tripletlab-index"
FORMAT_VERSION = 1


def save_index_file(path: Path, arrays: Mapping[str, np.ndarray], header: dict[str, Any]) -> Path:
    """Write an index's arrays and its JSON header (``dim``, ``size``, ``config``,
    ``calibration``, ``source``; the kind and format version are added here) atomically."""
    meta = {"kind": INDEX_KIND, "format_version": FORMAT_VERSION, **header}
    return atomic_save_npz(Path(path), {**arrays, "meta": np.array(json.dumps(meta))})


def load_index_file(path: Path, build: Callable[[dict[str, np.ndarray], dict[str, Any]], T]) -> T:
    """Read an index file and ``build(arrays, header)`` the index from it
    (:meth:`EmbeddingIndex.from_arrays <tripletlab.search.EmbeddingIndex.from_arrays>`).

    Raises:
        IndexFileError: no such file; not an index; a newer format; a corrupt file (any
            :class:`SearchError` that ``build`` raises counts as corrupt).
        FaissMissing: a faiss index without faiss installed.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(
            f"no index file at {path}; build one with 'tripletlab index build "
            f"--embeddings FILE.npz --out {path}'"
        )
    try:
        arrays = load_npz(path)
    except NpzError as err:
        raise IndexFileError(
            f"{path} is corrupt or not a tripletlab index ({err}); build the index again "
            "with 'tripletlab index build'"
        ) from None
    try:
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
        index = build(arrays, meta)
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
