"""Index files (:mod:`tripletlab.search.files`): the save/load round trip of every
backend, no unpickling, one clear error for each kind of bad file."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_faiss
from search_helpers import faiss_config, gaussian, ids, make_index

from tripletlab.embeddingfile import EmbeddingFile, save_embeddings
from tripletlab.search import EmbeddingIndex, IndexConfig, IndexFileError


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(),
        IndexConfig(distance="cosine"),
        pytest.param(faiss_config("flat", "sqeuclidean"), marks=needs_faiss),
        pytest.param(faiss_config("hnsw", "cosine", hnsw_m=8, ef_search=40), marks=needs_faiss),
        pytest.param(faiss_config("ivf", nlist=8, nprobe=3), marks=needs_faiss),
    ],
    ids=["exact", "exact-cosine", "flat", "hnsw", "ivf"],
)
def test_save_load_round_trip(config: IndexConfig, tmp_path: Path) -> None:
    x, y = gaussian(400, 6, 0)
    index = EmbeddingIndex(6, config, classes=["a", "b", "c", "d"], meta={"run": "r"})
    index.add(x, y, [f"g{i}" for i in range(400)])
    cal = index.calibrate(x[:100], y[:100], ids=[f"g{i}" for i in range(100)])
    path = index.save(tmp_path / "sub" / "index.npz")
    assert not [p for p in path.parent.iterdir() if p.name != "index.npz"]  # no temporary
    back = EmbeddingIndex.load(path)
    assert back.config == index.config and back.classes == index.classes
    assert back.meta == {"run": "r"} and back.ids == index.ids
    assert torch.equal(back.labels, index.labels)
    queries = gaussian(30, 6, 5)[0]
    a, b = index.search(queries, 7), back.search(queries, 7)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.distances, b.distances)
    assert back.calibration is not None and back.calibration.points == cal.points
    assert torch.equal(back.match(queries).labels, index.match(queries).labels)
    empty = EmbeddingIndex(6, config)
    assert len(EmbeddingIndex.load(empty.save(tmp_path / "empty.npz"))) == 0


def test_load_never_unpickles(tmp_path: Path) -> None:
    path = make_index(*gaussian(5, 2, 0)).save(tmp_path / "i.npz")
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    evil = np.array([object()], dtype=object)  # an object array needs pickle to load
    buf = io.BytesIO()
    np.save(buf, evil, allow_pickle=True)
    members["labels.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(IndexFileError, match="is corrupt or not a tripletlab index"):
        EmbeddingIndex.load(path)


def corrupt_file(tmp_path: Path, case: str) -> Path:
    x, y = gaussian(50, 4, 0)
    path = make_index(x, y, faiss_config("hnsw") if case == "faiss" else None).save(
        tmp_path / "i.npz"
    )
    data = path.read_bytes()
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "garbage":
        path.write_bytes(b"not an index at all")
    elif case == "flipped":  # a byte inside the vectors: the zip's CRC catches it
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("vectors.npy")
        at = info.header_offset + 30 + len(info.filename) + 200
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    elif case == "faiss":  # a bad faiss structure, the archive itself intact
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(b"\x00" * 64, dtype=np.uint8))
        members["faiss.npy"] = buf.getvalue()
        with zipfile.ZipFile(path, "w") as z:
            for name, blob in members.items():
                z.writestr(name, blob)
    elif case == "embeddings":
        path = save_embeddings(
            tmp_path / "e.npz", EmbeddingFile(x, torch.zeros(50, dtype=torch.long), ids(50), ("a",))
        )
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no index file at"),
        ("truncated", "is corrupt or not a tripletlab index"),
        ("garbage", "is corrupt or not a tripletlab index"),
        ("flipped", "is corrupt or not a tripletlab index"),
        pytest.param(
            "faiss", "is corrupt or not a tripletlab index (RuntimeError", marks=needs_faiss
        ),
        ("embeddings", "is not a tripletlab index (an embeddings file?"),
    ],
)
def test_bad_index_files(case: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "nothing.npz" if case == "missing" else corrupt_file(tmp_path, case)
    with pytest.raises(IndexFileError) as info:
        EmbeddingIndex.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)
