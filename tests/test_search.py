"""The search index against brute force, its backends, files, calibration, CLI and open-set
benchmark (on a tiny digits run)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference
import torch

from tripletlab.cli import main
from tripletlab.embeddingfile import EmbeddingFile, save_embeddings
from tripletlab.indexing import embed_image_files, labels_in_index_space
from tripletlab.metrics import blocks
from tripletlab.search import (
    EmbeddingIndex,
    IndexConfig,
    IndexFileError,
    SearchError,
    default_nlist,
)

faiss = pytest.importorskip("faiss")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DISTANCES = ["euclidean", "sqeuclidean", "cosine"]
FAISS_KINDS = ["flat", "hnsw", "ivf"]


def gaussian(n: int, d: int, seed: int, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def make_index(
    x: torch.Tensor, y: torch.Tensor, config: IndexConfig | None = None, prefix: str = "g"
) -> EmbeddingIndex:
    index = EmbeddingIndex(x.shape[1], config)
    index.add(x, y, [f"{prefix}{i}" for i in range(len(x))])
    return index


def faiss_config(kind: str, distance: str = "euclidean", **extra: int) -> IndexConfig:
    return IndexConfig(distance=distance, backend="faiss", faiss_index=kind, **extra)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ exact


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize(("n", "q", "k"), [(1, 3, 1), (9, 4, 3), (40, 7, 5), (25, 5, 25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunked", [False, True])
def test_exact_search_matches_brute_force(
    distance: str, n: int, q: int, k: int, seed: int, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if chunked:
        monkeypatch.setattr(blocks, "BLOCK", 2 * n)  # two queries per chunk
    x, y = gaussian(n, 6, seed)
    queries = gaussian(q, 6, seed + 100)[0]
    index = make_index(x, y, IndexConfig(distance=distance))  # type: ignore[arg-type]
    r = index.search(queries, k)
    expected = reference.knn(queries.numpy(), x.numpy(), k, distance)
    assert r.distances.shape == r.indices.shape == r.labels.shape == (q, min(k, n))
    assert r.distances.dtype == torch.float32 and r.indices.dtype == torch.int64
    for qi, row in enumerate(expected):
        np.testing.assert_allclose(
            r.distances[qi].numpy(), [d for d, _ in row], rtol=1e-4, atol=1e-4
        )
        assert r.indices[qi].tolist() == [j for _, j in row]  # Gaussian data: no ties
        assert r.labels[qi].tolist() == [int(y[j]) for _, j in row]
        assert r.ids[qi] == tuple(f"g{j}" for _, j in row)


@pytest.mark.parametrize("backend", ["exact", "flat"])
def test_ties_are_ordered_by_row(backend: str) -> None:
    base = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x = base.repeat(3, 1)  # rows 0, 3, 6 identical, etc.
    config = IndexConfig() if backend == "exact" else faiss_config("flat")
    index = make_index(x, torch.arange(9), config)
    r = index.search(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), 6)
    assert r.indices.tolist() == [[0, 3, 6, 1, 4, 7], [1, 4, 7, 0, 3, 6]]
    assert r.distances[0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # Ties at the k-th distance: the distances are right whichever tied rows are returned.
    r = index.search(torch.tensor([[0.0, 0.0]]), 2)
    assert r.distances[0].tolist() == [0.0, 0.0] and set(r.indices[0].tolist()) <= {0, 3, 6}


def test_k_larger_than_the_index_returns_every_item() -> None:
    x, y = gaussian(4, 3, 0)
    for config in (IndexConfig(), faiss_config("flat"), faiss_config("hnsw")):
        r = make_index(x, y, config).search(x[:2], 10)
        assert r.indices.shape == (2, 4)
        assert sorted(r.indices[0].tolist()) == [0, 1, 2, 3]


def test_the_index_keeps_its_own_copy() -> None:
    x, y = gaussian(5, 3, 0)
    index = make_index(x, y)
    before = index.search(x, 1).distances.clone()
    x.add_(100.0)
    y.fill_(3)
    assert torch.equal(index.search(x - 100.0, 1).distances, before)
    assert index.labels.tolist() != y.tolist()


def test_empty_queries_and_incremental_adds() -> None:
    x, y = gaussian(30, 5, 0)
    index = make_index(x[:10], y[:10])
    index.add(x[10:], y[10:], [f"g{i}" for i in range(10, 30)])
    index.add(x[:0], y[:0], [])
    assert len(index) == 30 and index.labels.tolist() == y.tolist()
    assert torch.equal(index.search(x, 3).indices, make_index(x, y).search(x, 3).indices)
    r = index.search(x[:0], 3)
    assert r.distances.shape == (0, 3) and r.ids == ()


# ------------------------------------------------------------------------------ faiss


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_flat_equals_exact(distance: str, seed: int) -> None:
    x, y = gaussian(300, 12, seed)
    queries = gaussian(20, 12, seed + 7)[0]
    exact = make_index(x, y, IndexConfig(distance=distance)).search(queries, 10)  # type: ignore[arg-type]
    flat = make_index(x, y, faiss_config("flat", distance)).search(queries, 10)
    np.testing.assert_allclose(flat.distances.numpy(), exact.distances.numpy(), atol=1e-4)
    assert torch.equal(flat.indices, exact.indices)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True))
    return hits / exact.numel()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_hnsw_recall_at_10(distance: str) -> None:
    x, y = gaussian(3000, 16, 0)
    queries = gaussian(200, 16, 1)[0]
    exact = make_index(x, y, IndexConfig(distance=distance)).search(queries, 10)  # type: ignore[arg-type]
    hnsw = make_index(x, y, faiss_config("hnsw", distance))
    assert recall_at_k(hnsw.search(queries, 10).indices, exact.indices) >= 0.95
    hnsw.set_search_parameters(ef_search=10)  # a narrower search finds fewer
    assert hnsw.config.ef_search == 10
    assert recall_at_k(hnsw.search(queries, 10).indices, exact.indices) < 0.95


def test_ivf() -> None:
    x, y = gaussian(2000, 8, 0)
    queries = gaussian(50, 8, 1)[0]
    exact = make_index(x, y).search(queries, 10)
    ivf = make_index(x, y, faiss_config("ivf"))
    assert ivf.config.nlist == default_nlist(2000) == 45
    all_lists = make_index(x, y, faiss_config("ivf", nlist=20, nprobe=20))  # every list: exact
    r = all_lists.search(queries, 10)
    assert torch.equal(r.indices, exact.indices)
    np.testing.assert_allclose(r.distances.numpy(), exact.distances.numpy(), atol=1e-4)
    ivf.set_search_parameters(nprobe=1)
    r = ivf.search(queries, 10)
    assert recall_at_k(r.indices, exact.indices) < 1.0
    assert bool((r.distances[:, 1:] >= r.distances[:, :-1]).all())
    assert default_nlist(10) == 1 and default_nlist(1_000_000) == 1000


def test_ivf_with_too_few_vectors_to_train() -> None:
    x, y = gaussian(100, 4, 0)
    with pytest.raises(
        SearchError, match=r"^an IVF index with nlist=10 needs at least 390 vectors"
    ):
        make_index(x, y, faiss_config("ivf", nlist=10))


# ------------------------------------------------------------------------------ files


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(),
        IndexConfig(distance="cosine"),
        faiss_config("flat", "sqeuclidean"),
        faiss_config("hnsw", "cosine", hnsw_m=8, ef_search=40),
        faiss_config("ivf", nlist=8, nprobe=3),
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


def ids(n: int, prefix: str = "g") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no index file at"),
        ("truncated", "is corrupt or not a tripletlab index"),
        ("garbage", "is corrupt or not a tripletlab index"),
        ("flipped", "is corrupt or not a tripletlab index"),
        ("faiss", "is corrupt or not a tripletlab index (RuntimeError"),
        ("embeddings", "is not a tripletlab index (an embeddings file?"),
    ],
)
def test_bad_index_files(case: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "nothing.npz" if case == "missing" else corrupt_file(tmp_path, case)
    with pytest.raises(IndexFileError) as info:
        EmbeddingIndex.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_faiss_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    with pytest.raises(SearchError, match=r"pip install 'tripletlab\[faiss\]'"):
        EmbeddingIndex(4, faiss_config("flat"))
    make_index(*gaussian(5, 4, 0)).search(torch.zeros(1, 4), 1)  # exact needs no faiss


# ------------------------------------------------------------------------------ bad input


def test_bad_queries_and_arguments() -> None:
    index = make_index(*gaussian(10, 4, 0))
    bad_distance: dict[str, Any] = {"distance": "manhattan"}  # (not a Distance: mypy knows)
    bad_backend: dict[str, Any] = {"backend": "annoy"}
    bad_kind: dict[str, Any] = {"faiss_index": "pq"}
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: index.search(torch.zeros(4), 1), r"queries must be a 2-D float tensor \(n, 4\)"),
        (
            lambda: index.search(torch.zeros(2, 3), 1),
            "queries have dimension 3 but the index holds 4-d",
        ),
        (lambda: index.search(torch.zeros(2, 4, dtype=torch.long), 1), "2-D float tensor"),
        (lambda: index.search(torch.full((2, 4), float("nan")), 1), "NaN or Inf in 2 of 2 rows"),
        (lambda: index.search(torch.zeros(2, 4), 0), "k must be a positive integer, got 0"),
        (lambda: EmbeddingIndex(4).search(torch.zeros(2, 4), 1), "the index is empty; add"),
        (
            lambda: index.add(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), ["g3"]),
            "duplicate id 'g3'",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a", "a"]),
            "duplicate id 'a'",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), ["a", "b"]),
            r"shape \(2,\)",
        ),
        (
            lambda: index.add(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a"]),
            "2 embeddings but 1 ids",
        ),
        (lambda: index.add(torch.zeros(1, 4), torch.tensor([-2]), ["a"]), "must be >= -1"),
        (lambda: IndexConfig(**bad_distance), "unknown distance 'manhattan'; choose one of"),
        (lambda: IndexConfig(**bad_backend), "unknown backend 'annoy'; choose one of: exact"),
        (lambda: IndexConfig(**bad_kind), "unknown faiss index 'pq'; choose one of: flat"),
        (lambda: IndexConfig(ef_search=0), "ef_search must be a positive integer"),
        (
            lambda: index.match(torch.zeros(1, 4)),
            "the index is not calibrated; run 'tripletlab calibrate",
        ),
        (lambda: EmbeddingIndex(0), "dim must be a positive integer"),
    ]
    for call, message in cases:
        with pytest.raises(SearchError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert len(index) == 10  # failed adds add nothing


# ------------------------------------------------------------------------------ calibration


def clusters(
    n_per: int, classes: list[int], seed: int, spread: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around class centres 0, 3, 6, ... on a line in 2-D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n_per)
    x = torch.randn(len(y), 2, generator=g) * spread
    x[:, 0] += 3.0 * y
    return x, y


def test_calibrate_on_the_indexed_set_skips_self_matches() -> None:
    x, y = clusters(20, [0, 1, 2], 0)
    index = make_index(x, y)
    cal = index.calibrate(x, y, ids=index.ids)
    d_self = index.search(x, 2).distances[:, 1]  # the nearest other item
    assert cal.curve.thresholds.min() == pytest.approx(float(d_self.min()), abs=1e-6)
    assert float(cal.curve.thresholds.min()) > 0  # no self-match at distance 0
    with_self = make_index(x, y).calibrate(x, y)  # no ids: every query matches itself
    assert float(with_self.curve.thresholds.max()) < 1e-3  # 0 up to the |q|^2 + |g|^2 - 2qg
    assert with_self.points[0].precision == 1.0


def test_match_rejects_beyond_the_threshold() -> None:
    x, y = clusters(30, [0, 1, 2], 0)
    index = make_index(x, y)
    cal_x, cal_y = clusters(10, [0, 1, 2, 5], 1)  # class 5 is not indexed
    cal = index.calibrate(cal_x, cal_y)
    assert cal.curve.num_known == 30 and cal.curve.num_queries == 40
    best = cal.point("max_f1")
    assert best.threshold is not None and best.threshold < 3.0  # class 5 lies 9 away
    queries = torch.tensor([[0.0, 0.0], [3.0, 0.1], [30.0, 0.0], [6.0, 5.0]])
    m = index.match(queries)
    assert m.labels.tolist() == [0, 1, -1, -1] and m.threshold == best.threshold
    assert m.distances[2] == pytest.approx(
        float((queries[2] - x[y == 2]).norm(dim=1).min()), rel=1e-5
    )
    assert index.match(queries, threshold=100.0).labels.tolist() == [0, 1, 2, 2]
    assert index.match(queries, threshold="precision_0.9").labels[2] == -1
    index.add(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), ["new"])
    assert index.calibration is None  # stale thresholds are dropped


def test_unreachable_threshold_and_open_set() -> None:
    x, y = clusters(10, [0, 1], 0, spread=2.0)  # overlapping classes
    index = make_index(x, y)
    index.calibrate(*clusters(10, [0, 1], 1, spread=2.0), precisions=(1.0,))
    assert index.calibration is not None
    if not index.calibration.point("precision_1").reachable:
        with pytest.raises(SearchError, match="precision_1 was not reachable"):
            index.match(x, threshold="precision_1")
    queries, labels = clusters(5, [0, 1, 9], 2)
    rows = index.open_set(queries, labels)
    assert [r.name for r in rows][:2] == ["closed_set", "max_f1"]
    assert rows[0].num_known == 10 and rows[0].num_unseen == 5
    assert rows[0].unseen_rejected == 0.0 and rows[0].known_accepted == 1.0


def test_labels_in_index_space_by_class_name() -> None:
    index = EmbeddingIndex(2, classes=["cat", "dog"])
    data = EmbeddingFile(
        torch.zeros(4, 2), torch.tensor([0, 1, 2, -1]), ids(4), ("dog", "emu", "cat")
    )
    assert labels_in_index_space(data, index).tolist() == [1, 2, 0, -1]
    same = EmbeddingFile(torch.zeros(2, 2), torch.tensor([1, 0]), ids(2), ("cat", "dog"))
    assert labels_in_index_space(same, index).tolist() == [1, 0]


# ------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write_embeddings(
    path: Path, x: torch.Tensor, y: torch.Tensor, prefix: str = "g", **meta: str
) -> Path:
    classes = tuple(f"c{i}" for i in range(int(y.max()) + 1))
    return save_embeddings(path, EmbeddingFile(x, y, ids(len(x), prefix), classes, dict(meta)))


def test_cli_build_search_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = clusters(15, [0, 1, 2], 0)
    emb = write_embeddings(tmp_path / "e.npz", x, y, distance="sqeuclidean")
    out = tmp_path / "index.npz"
    code, stdout, err = run_cli(
        ["index", "build", "--embeddings", str(emb), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert "45 items of dimension 2, exact, sqeuclidean distance" in stdout  # the file's
    q = write_embeddings(tmp_path / "q.npz", x[:3] + 0.01, y[:3], prefix="q")
    code, stdout, _ = run_cli(["search", str(out), "--embeddings", str(q), "--k", "2"], capsys)
    lines = stdout.strip().splitlines()
    assert code == 0 and lines[0].split() == ["query", "rank", "id", "label", "distance"]
    assert len(lines) == 1 + 3 * 2 and lines[1].split()[:4] == ["q0", "1", "g0", "c0"]
    plot = tmp_path / "pr.png"
    cal = write_embeddings(tmp_path / "cal.npz", *clusters(5, [0, 1, 2], 1), prefix="cal")
    argv = [
        "calibrate",
        str(out),
        "--embeddings",
        str(cal),
        "--precision",
        "0.5",
        "--plot",
        str(plot),
    ]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert (
        "| max_f1 |" in stdout
        and "| precision_0.5 |" in stdout
        and "wrote the thresholds" in stdout
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = EmbeddingIndex.load(out)
    assert loaded.calibration is not None and loaded.calibration.points[1].name == "precision_0.5"
    # the faiss flags: --faiss-index implies --backend faiss
    hnsw = tmp_path / "hnsw.npz"
    argv = ["index", "build", "--embeddings", str(emb), "--out", str(hnsw), "--faiss-index", "hnsw"]
    argv += ["--distance", "cosine", "--hnsw-m", "8"]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0 and "faiss hnsw (M=8" in stdout and "cosine" in stdout
    code, stdout, _ = run_cli(
        ["search", str(hnsw), "--embeddings", str(q), "--ef-search", "16", "--limit", "1"], capsys
    )
    assert code == 0 and "(the first 1 of 3 queries" in stdout


def test_cli_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, flags in (
        (["index", "build", "-h"], ["--embeddings", "--faiss-index", "--ef-search", "--nprobe"]),
        (["search", "-h"], ["--images", "--grid", "--run", "--k"]),
        (["calibrate", "-h"], ["--embeddings", "--precision", "--plot"]),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), text


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-embeddings", "no embeddings file at"),
        ("backend", "unknown backend 'annoy'; choose one of: exact, faiss"),
        ("distance", "unknown distance 'l1'"),
        ("ivf", "an IVF index with nlist=100 needs at least 3900 vectors"),
        ("nlist", "nlist must be a positive integer, got 0"),
        ("missing-index", "no index file at"),
        ("corrupt-index", "is corrupt or not a tripletlab index"),
        ("dim", "queries have dimension 3 but the index holds 2-d embeddings"),
        ("k", "k must be a positive integer, got 0"),
        ("no-run", "cannot embed the images: the index does not name the run"),
        ("single-class", "the calibration set has a single class (label 1)"),
        ("precision", "target precisions must lie in (0, 1], got 1.5"),
        ("cal-dim", "calibration embeddings have dimension 3 but the index holds 2-d"),
        ("cal-unseen", "none of the 5 calibration labels occurs in the index"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = clusters(15, [0, 1, 2], 0)
    emb = write_embeddings(tmp_path / "e.npz", x, y)
    index = tmp_path / "index.npz"
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(index)]) == 0
    capsys.readouterr()
    before = index.read_bytes()
    build = ["index", "build", "--embeddings", str(emb), "--out", str(tmp_path / "new.npz")]
    other = write_embeddings(
        tmp_path / "o.npz", torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)
    )
    one = write_embeddings(tmp_path / "one.npz", x[:5], torch.ones(5, dtype=torch.long))
    far = save_embeddings(
        tmp_path / "far.npz",
        EmbeddingFile(x[:5], torch.tensor([0, 1, 0, 1, 0]), ids(5, "f"), ("x", "y")),
    )  # classes x and y: the index has c0..c2, so none of these labels occurs in it
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    argv = {
        "no-embeddings": [*build[:3], str(tmp_path / "none.npz"), *build[4:]],
        "backend": [*build, "--backend", "annoy"],
        "distance": [*build, "--distance", "l1"],
        "ivf": [*build, "--faiss-index", "ivf", "--nlist", "100"],
        "nlist": [*build, "--faiss-index", "ivf", "--nlist", "0"],
        "missing-index": ["search", str(tmp_path / "none.npz"), "--embeddings", str(emb)],
        "corrupt-index": ["search", str(bad), "--embeddings", str(emb)],
        "dim": ["search", str(index), "--embeddings", str(other)],
        "k": ["search", str(index), "--embeddings", str(emb), "--k", "0"],
        "no-run": ["search", str(index), "--images", str(tmp_path / "a.png")],
        "single-class": ["calibrate", str(index), "--embeddings", str(one)],
        "precision": ["calibrate", str(index), "--embeddings", str(emb), "--precision", "1.5"],
        "cal-dim": ["calibrate", str(index), "--embeddings", str(other)],
        "cal-unseen": ["calibrate", str(index), "--embeddings", str(far)],
    }[case]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "new.npz").exists()  # a failed build writes nothing
    assert index.read_bytes() == before  # a failed calibrate leaves the index as it was
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_grid_needs_image_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        p = tmp_path / f"c{i % 2}" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p)
        paths.append(str(p))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    data = EmbeddingFile(x, y, tuple(paths), ("c0", "c1"))
    emb = save_embeddings(tmp_path / "e.npz", data)
    index = tmp_path / "i.npz"
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(index)]) == 0
    grid = tmp_path / "grid.png"
    code, stdout, err = run_cli(
        ["search", str(index), "--embeddings", str(emb), "--k", "3", "--grid", str(grid)], capsys
    )
    assert code == 0 and f"grid: {grid}" in stdout and grid.read_bytes()[:4] == b"\x89PNG"
    plain = write_embeddings(tmp_path / "p.npz", x, y)  # ids g0..g5: not images
    index2 = tmp_path / "i2.npz"
    assert main(["index", "build", "--embeddings", str(plain), "--out", str(index2)]) == 0
    capsys.readouterr()
    grid.unlink()
    code, _, err = run_cli(
        ["search", str(index2), "--embeddings", str(plain), "--grid", str(grid)], capsys
    )
    assert code == 0 and "no grid: the items are not image files (e.g. 'g" in err
    assert not grid.exists()


# ------------------------------------------------------------------------------ a run


@pytest.fixture(scope="module")
def unseen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch digits run with classes 7-9 held out (a few seconds)."""
    out = tmp_path_factory.mktemp("search") / "unseen"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--val-size", "150", "--quiet"]
    argv += ["--seed", "0", "--no-report", "--unseen-classes", "3", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


def load_benchmark(name: str) -> object:
    sys.path.insert(0, str(BENCHMARKS))  # for `from machine import ...`
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_open_set_benchmark_on_a_digits_run(
    unseen_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("open_set")
    out, plot = tmp_path / "open_set.md", tmp_path / "pr.png"
    assert bench.main([str(unseen_run), "--out", str(out), "--plot", str(plot)]) == 0  # type: ignore[attr-defined]
    text = capsys.readouterr().out
    assert text == out.read_text() and plot.read_bytes()[:4] == b"\x89PNG"
    assert "known classes [0, 1, 2, 3, 4, 5, 6]" in text and "unseen classes [7, 8, 9]" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| closed_set")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2:4] == ["0.0000", "1.0000"]  # closed set: rejects nothing, accepts all
    assert 0.5 < float(cells[4]) <= 1.0  # 1-NN accuracy of the known classes
    assert "| max_f1 |" in text and "| precision_0.99 |" in text


def test_search_images_with_the_run(
    unseen_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(12):
        folder = tmp_path / str(int(digits.target[i]))
        folder.mkdir(exist_ok=True)
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)  # (8, 8) in 0..16
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    e, images = embed_image_files(str(unseen_run), tuple(paths), "cpu")
    assert e.shape == (12, 64) and images.shape == (12, 1, 8, 8)
    labels = torch.tensor([int(t) for t in digits.target[:12]])
    data = EmbeddingFile(
        e, labels, tuple(paths), tuple(str(c) for c in range(10)), {"run": str(unseen_run)}
    )
    index = tmp_path / "i.npz"
    assert (
        main(
            [
                "index",
                "build",
                "--embeddings",
                str(save_embeddings(tmp_path / "e.npz", data)),
                "--out",
                str(index),
            ]
        )
        == 0
    )
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    argv = ["search", str(index), "--images", paths[0], paths[5], "--k", "3", "--grid", str(grid)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    first = stdout.splitlines()[1].split()
    assert first[:3] == [paths[0], "1", paths[0]] and float(first[4]) < 1e-2  # itself
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_grid_of_dataset_items_from_embed(
    unseen_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items embedded from an IDX-like dataset have ids train/I, test/I: the grid reads their
    images back from the run's dataset; without the run it says why in a note."""
    from PIL import Image

    from tripletlab.evaluation import load_run
    from tripletlab.indexing import _ItemImages
    from tripletlab.inference import load_run_dataset
    from tripletlab.search import EmbeddingIndex

    emb, index = tmp_path / "e.npz", tmp_path / "i.npz"
    assert main(["embed", str(unseen_run), "--split", "test", "--out", str(emb), "--quiet"]) == 0
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(index)]) == 0
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    argv = ["search", str(index), "--embeddings", str(emb), "--k", "4", "--grid", str(grid)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0 and f"grid: {grid}" in stdout, err
    with Image.open(grid) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10  # drawn digits, not a blank page

    items = _ItemImages(EmbeddingIndex.load(index))
    assert items.why_not(["test/0", "test/3"]) is None
    x = items.read(["test/3"], 1, 8)[0, 0]  # the dataset's own pixels, as the run loads them
    data = load_run_dataset(load_run(unseen_run), dataset="digits")
    assert torch.equal(x, data.splits.test.images[3, 0])
    assert "not an item of digits" in str(items.why_not(["test/99999"]))

    moved = EmbeddingIndex.load(index)
    moved.meta["run"] = str(tmp_path / "gone")
    note = _ItemImages(moved).why_not(["test/0"])
    assert note is not None and note.startswith("no grid:") and "gone" in note


def test_search_benchmark_cells(tmp_path: Path) -> None:
    bench = load_benchmark("bench_search")
    argv = ["--queries", "30", "--repeats", "1", "--threads", str(torch.get_num_threads())]
    argv += [
        "--clusters",
        "20",
        "--ef-search",
        "64",
        "--nprobe",
        "4",
        "--truth",
        str(tmp_path / "t.npy"),
    ]
    args = bench.parse_args(argv)  # type: ignore[attr-defined]
    x = bench.vectors(600, 1, args)  # type: ignore[attr-defined]
    assert x.shape == (600, 128) and torch.allclose(x.norm(dim=1), torch.ones(600))
    assert torch.equal(x, bench.vectors(600, 1, args))  # type: ignore[attr-defined]
    (exact,) = bench.measure("exact", 600, args)  # type: ignore[attr-defined]
    assert exact["recall"] == 1.0 and exact["qps"] > 0 and exact["index_mb"] > 0
    (flat,) = bench.measure("faiss-flat", 600, args)  # type: ignore[attr-defined]
    assert flat["recall"] >= 0.99
    (hnsw,) = bench.measure("faiss-hnsw", 600, args)  # type: ignore[attr-defined]
    assert hnsw["params"] == {"ef_search": 64} and hnsw["recall"] >= 0.95
    (ivf,) = bench.measure("faiss-ivf", 600, args)  # type: ignore[attr-defined]
    assert 0.0 < ivf["recall"] <= 1.0 and "nlist=15" in ivf["config"]
