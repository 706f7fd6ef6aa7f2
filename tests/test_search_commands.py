"""The index build, search and calibrate commands (:mod:`tripletlab.search.commands`, through the
CLI), labels by class name, and the open-set and search benchmarks (on a tiny digits
run)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_helpers import load_benchmark
from conftest import needs_faiss
from search_helpers import clusters, ids

from tripletlab.calibration import operating_points
from tripletlab.cli import main
from tripletlab.embeddingfile import EmbeddingFile, save_embeddings
from tripletlab.plots import neighbors
from tripletlab.search import EmbeddingIndex
from tripletlab.search.commands import embed_image_files, labels_in_index_space


def test_labels_in_index_space_by_class_name() -> None:
    index = EmbeddingIndex(2, classes=["cat", "dog"])
    data = EmbeddingFile(
        torch.zeros(4, 2), torch.tensor([0, 1, 2, -1]), ids(4), ("dog", "emu", "cat")
    )
    assert labels_in_index_space(data, index).tolist() == [1, 2, 0, -1]
    same = EmbeddingFile(torch.zeros(2, 2), torch.tensor([1, 0]), ids(2), ("cat", "dog"))
    assert labels_in_index_space(same, index).tolist() == [1, 0]


def count_near(path: Path, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """Pixels of the PNG at ``path`` within ``tol`` of ``rgb`` in every channel."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(int)
    return int((np.abs(a - np.array(rgb)).max(2) <= tol).sum())


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
    header = ["query", "query_label", "rank", "id", "label", "distance"]
    assert code == 0 and lines[0].split() == header
    assert len(lines) == 1 + 3 * 2 and lines[1].split()[:5] == ["q0", "c0", "1", "g0", "c0"]
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
    pytest.importorskip("faiss")
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
        (["search", "-h"], ["--images", "--grid", "--run", "--k", "--dataset", "--data-dir"]),
        (["calibrate", "-h"], ["--embeddings", "--precision", "--plot"]),
        (["match", "-h"], ["--embeddings", "--images", "--threshold", "--run", "max_f1"]),
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
        pytest.param(
            "ivf", "an IVF index with nlist=100 needs at least 3900 vectors", marks=needs_faiss
        ),
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


@pytest.fixture(scope="module")
def unseen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch digits run with classes 7-9 held out (a few seconds)."""
    out = tmp_path_factory.mktemp("search") / "unseen"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--val-size", "150", "--quiet"]
    argv += ["--seed", "0", "--no-report", "--unseen-classes", "3", "--amp", "off"]
    argv += ["--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


def test_open_set_benchmark_on_a_digits_run(
    unseen_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("open_set")
    out, plot = tmp_path / "open_set.md", tmp_path / "pr.png"
    assert bench.main([str(unseen_run), "--out", str(out), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text() and plot.read_bytes()[:4] == b"\x89PNG"
    # training classes: 0-6 less the two held out for class-disjoint validation
    assert "known classes [0, 1, 3, 5, 6]" in text and "unseen classes [7, 8, 9]" in text
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
    own = str(int(digits.target[0]))  # the query's folder names its class
    assert first[:4] == [paths[0], own, "1", paths[0]] and float(first[5]) < 1e-2  # itself
    assert grid.read_bytes()[:4] == b"\x89PNG"
    assert count_near(grid, neighbors.GREEN) > 0  # digits are grey: only frames are green
    # an image outside the index's class folders: its class is unknown, its neighbours
    # are neither right nor wrong (grey frames, not red)
    (tmp_path / "unsorted").mkdir()
    stray = tmp_path / "unsorted" / "x.png"
    stray.write_bytes(Path(paths[5]).read_bytes())
    argv = ["search", str(index), "--images", str(stray), "--k", "3", "--grid", str(grid)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert stdout.splitlines()[1].split()[:3] == [str(stray), "-", "1"]
    assert count_near(grid, neighbors.GREEN) == 0 and count_near(grid, neighbors.RED) == 0
    assert count_near(grid, neighbors.GREY) > 0


def test_grid_of_dataset_items_from_embed(
    unseen_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items embedded from an IDX-like dataset have ids train/I, test/I: the grid reads their
    images back from the run's dataset; without the run it says why in a note."""
    from PIL import Image

    from tripletlab.evaluation import load_run
    from tripletlab.inference import load_run_dataset
    from tripletlab.search import EmbeddingIndex
    from tripletlab.search.commands import ItemImages

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

    items = ItemImages(EmbeddingIndex.load(index).meta)
    assert items.why_not(["test/0", "test/3"]) is None
    x = items.read(["test/3"], 1, 8)[0, 0]  # the dataset's own pixels, as the run loads them
    data = load_run_dataset(load_run(unseen_run), dataset="digits")
    assert torch.equal(x, data.splits.test.images[3, 0])
    assert "not an item of digits" in str(items.why_not(["test/99999"]))

    moved = EmbeddingIndex.load(index)
    moved.meta["run"] = str(tmp_path / "gone")
    note = ItemImages(moved.meta).why_not(["test/0"])
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
    args = bench.parse_args(argv)
    x = bench.vectors(600, 1, args)
    assert x.shape == (600, 128) and torch.allclose(x.norm(dim=1), torch.ones(600))
    assert torch.equal(x, bench.vectors(600, 1, args))
    pytest.importorskip("faiss")  # the benchmark sets faiss's threads for every method
    (exact,) = bench.measure("exact", 600, args)
    assert exact["recall"] == 1.0 and exact["qps"] > 0 and exact["index_mb"] > 0
    (flat,) = bench.measure("faiss-flat", 600, args)
    assert flat["recall"] >= 0.99
    (hnsw,) = bench.measure("faiss-hnsw", 600, args)
    assert hnsw["params"] == {"ef_search": 64} and hnsw["recall"] >= 0.95
    (ivf,) = bench.measure("faiss-ivf", 600, args)
    assert 0.0 < ivf["recall"] <= 1.0 and "nlist=15" in ivf["config"]


def test_exact_search_benchmark_cells() -> None:
    pytest.importorskip("faiss")
    bench = load_benchmark("bench_exact_search")
    argv = ["--queries", "40", "--repeats", "1", "--ks", "1", "5", "--threads", "1"]
    args = bench.parse_args([*argv, "--clusters", "20", "--floor-chunk", "16"])
    before = torch.get_num_threads()
    rows = bench.measure(700, "cosine", args)
    assert torch.get_num_threads() == before  # the thread count is restored
    assert [(r["k"], r["threads"]) for r in rows] == [(1, 1), (5, 1)]
    for r in rows:
        assert set(r["qps"]) == {"ours", "faiss", "floor"} and min(r["qps"].values()) > 0
        assert r["same"] >= 0.99 and r["index_mb"] > r["faiss_mb"] > 0  # unit rows + vectors
    report = bench.render_report(rows, args, {"command": "c", "load": "l", "span": "s"})
    assert report.startswith("## Exact search against faiss's flat index (issue 17)")
    assert "| 700 | cosine | 5 | 1 |" in report


def test_exact_parts_benchmark_cells() -> None:
    # The parts of the kernel, timed beside it; the known-bound variant must find the
    # kernel's rows (measure asserts it) at every k, a k of 30 included (groups of 32).
    pytest.importorskip("faiss")
    bench = load_benchmark("bench_exact_parts")
    argv = ["--queries", "40", "--repeats", "1", "--ks", "1", "30", "--clusters", "20"]
    rows = bench.measure(900, "euclidean", bench.parse_args(argv))
    assert [r["k"] for r in rows] == [1, 30]
    for r in rows:
        assert set(r["qps"]) == set(bench.METHODS) and min(r["qps"].values()) > 0
    report = bench.render_report(
        rows, {"command": "c", "load": "l", "span": "s", "queries": "40", "repeats": "1"}
    )
    assert "| 900 | euclidean | 30 |" in report


# ------------------------------------------------------------------ query labels, thresholds


def nearest_by_loop(queries: torch.Tensor, gallery: torch.Tensor) -> list[tuple[int, float]]:
    """Brute-force twin of the exact Euclidean 1-NN: (row, distance) per query, float64."""
    out = []
    for q in queries.double().tolist():
        best = min(
            (sum((a - b) ** 2 for a, b in zip(q, g, strict=True)) ** 0.5, row)
            for row, g in enumerate(gallery.double().tolist())
        )
        out.append((best[1], best[0]))
    return out


@pytest.fixture
def calibrated(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """An exact index of three clusters (classes c0, c1, c2), calibrated at max F1 and a
    target precision of 0.5; its vectors and labels."""
    x, y = clusters(15, [0, 1, 2], 0)
    emb = write_embeddings(tmp_path / "e.npz", x, y)
    index = tmp_path / "index.npz"
    cal = write_embeddings(tmp_path / "cal.npz", *clusters(5, [0, 1, 2], 1), prefix="cal")
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(index)]) == 0
    assert main(["calibrate", str(index), "--embeddings", str(cal), "--precision", "0.5"]) == 0
    return index, x, y


def test_match_answers_the_nearest_label_or_unknown(
    calibrated: tuple[Path, torch.Tensor, torch.Tensor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, x, y = calibrated
    capsys.readouterr()
    g = torch.Generator().manual_seed(5)
    q = torch.cat([x[::7] + 0.05, torch.randn(4, 2, generator=g) * 3 + torch.tensor([3.0, 9.0])])
    queries = write_embeddings(tmp_path / "q.npz", q, torch.zeros(len(q), dtype=torch.long), "q")
    stored = EmbeddingIndex.load(index)
    for flag, t in (([], stored.threshold("max_f1")), (["--threshold", "0.2"], 0.2)):
        code, stdout, err = run_cli(
            ["match", str(index), "--embeddings", str(queries), *flag], capsys
        )
        assert code == 0, err
        lines = stdout.strip().splitlines()
        assert lines[0].split() == ["query", "answer", "nearest", "distance"]
        assert len(lines) == 1 + len(q) + 1 and lines[-1].startswith("threshold ")
        answers = 0
        for line, (row, d) in zip(lines[1:-1], nearest_by_loop(q, x), strict=True):
            name = f"c{int(y[row])}" if d <= t else "unknown"
            answers += name != "unknown"
            _, answer, nearest, distance = line.split()
            assert (answer, nearest) == (name, f"g{row}") and float(distance) == pytest.approx(
                d, abs=1e-4
            )
        assert 0 < answers < len(q)  # some queries matched, the far ones not
        assert lines[-1].endswith(f"{answers} of {len(q)} queries matched")
    # a stored precision target, written as any float
    code, stdout, _ = run_cli(
        ["match", str(index), "--embeddings", str(queries), "--threshold", "precision_.50"], capsys
    )
    t = stored.threshold("precision_0.5")
    assert code == 0 and f"threshold precision_0.5 = {t:.6g} (euclidean distance)" in stdout
    # a target calibrate was not given: read off the stored curve, as calibrating for it would
    code, stdout, err = run_cli(
        ["match", str(index), "--embeddings", str(queries), "--threshold", "precision_0.3"], capsys
    )
    assert stored.calibration is not None
    read_off = operating_points(stored.calibration.curve, [0.3])[1].threshold
    assert read_off is not None and "precision_0.3" not in [
        p.name for p in stored.calibration.points
    ]
    assert code == 0 and f"precision_0.3 = {read_off:.6g} (euclidean distance)" in stdout, err


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "uncalibrated",
            "is not calibrated, so it has no max_f1 threshold; run `tripletlab calibrate",
        ),
        (
            "unknown-name",
            "no threshold called 'precision_1.5' is stored; choose one of: max_f1, precision_0.5, "
            "or precision_P for another target precision P in (0, 1]",
        ),
        ("negative", "--threshold must be max_f1, precision_P (P in (0, 1], from the calibra"),
        ("both", "argument --images: not allowed with argument --embeddings"),
    ],
)
def test_match_bad_input_exits_2_with_one_line(
    case: str,
    message: str,
    calibrated: tuple[Path, torch.Tensor, torch.Tensor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = calibrated[0]
    plain = tmp_path / "plain.npz"
    assert (
        main(["index", "build", "--embeddings", str(tmp_path / "e.npz"), "--out", str(plain)]) == 0
    )
    capsys.readouterr()
    q = ["--embeddings", str(tmp_path / "cal.npz")]
    argv = {
        "uncalibrated": ["match", str(plain), *q],
        "unknown-name": ["match", str(index), *q, "--threshold", "precision_1.5"],
        "negative": ["match", str(index), *q, "--threshold", "-1"],
        "both": ["match", str(index), *q, "--images", "a.png"],
    }[case]
    if case == "both":
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
        return
    code, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0], lines[0]
    # a distance needs no calibration
    code, stdout, err = run_cli(["match", str(plain), *q, "--threshold", "0.5"], capsys)
    assert code == 0 and "threshold 0.5 (euclidean distance)" in stdout, err


def test_search_shows_query_labels_and_marks_neighbours_beyond_the_threshold(
    calibrated: tuple[Path, torch.Tensor, torch.Tensor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, x, _ = calibrated
    capsys.readouterr()
    q = x[[0, 20, 40]] + 0.05
    data = EmbeddingFile(q, torch.tensor([1, 0, -1]), ("qa", "qb", "qc"), ("emu", "c1"))
    queries = save_embeddings(tmp_path / "q.npz", data)
    argv = ["search", str(index), "--embeddings", str(queries), "--k", "4", "--threshold", "0.3"]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0].split()[-1] == "threshold" and len(lines) == 1 + 3 * 4 + 1
    own = {"qa": "c1", "qb": "emu", "qc": "-"}  # by class name; emu is not in the index
    marks = []
    for line in lines[1:-1]:
        query, label, _, _, _, distance, mark = line.split()
        assert label == own[query]
        assert mark == ("within" if float(distance) <= 0.3 else "beyond")
        marks.append(mark)
    assert {"within", "beyond"} <= set(marks)
    assert lines[-1] == "threshold 0.3 (euclidean distance): neighbours farther are marked beyond"
    grid = tmp_path / "g.png"
    code, _, err = run_cli([*argv[:-2], "--threshold", "max_f1", "--grid", str(grid)], capsys)
    assert code == 0 and "no grid" in err  # ids g0..: not images, but the threshold applied


def test_names_with_newlines_and_tabs_print_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = clusters(4, [0, 1], 0)
    data = EmbeddingFile(x, y, tuple(f"i\t{i}" for i in range(8)), ("a\nb", "c\td"))
    emb = save_embeddings(tmp_path / "e.npz", data)
    index = tmp_path / "i.npz"
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(index)]) == 0
    capsys.readouterr()
    for argv in (
        ["search", str(index), "--embeddings", str(emb), "--k", "2"],
        ["match", str(index), "--embeddings", str(emb), "--threshold", "1"],
    ):
        code, stdout, err = run_cli(argv, capsys)
        assert code == 0, err
        rows = stdout.strip().splitlines()
        assert len(rows) == 1 + (16 if argv[0] == "search" else 8 + 1)
        assert "'a\\nb'" in stdout and "'c\\td'" in stdout and "'i\\t0'" in stdout
        assert "\t" not in stdout
