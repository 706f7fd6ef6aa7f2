"""``tripletlab evaluate`` and ``tripletlab plot`` end to end (:mod:`tripletlab.cli.evaluate`),
on digits runs trained through the command line, with the pictures and report the training
drew."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST, KEYS, run

from tripletlab.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    """One digits run through the CLI with its default pictures and report: the run folder,
    the command's stdout and the pictures it wrote (later tests draw more)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--val-size", "150", "--quiet"]
    argv += ["--amp", "off"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([*argv, "--out", str(out)]) == 0
    return out, stdout.getvalue(), sorted(p.stem for p in (out / "pictures").glob("*.png"))


@pytest.fixture(scope="module")
def unseen_trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A digits run trained through the CLI on classes 0-6 (7, 8, 9 unseen), with its
    report: the run folder and the command's stdout."""
    out = tmp_path_factory.mktemp("cli") / "unseen"
    argv = ["train", *FAST[:-1], "--epochs", "1", "--unseen-classes", "3", "--amp", "off"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([*argv, "--out", str(out)]) == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def unseen_run(unseen_trained: tuple[Path, str]) -> Path:
    return unseen_trained[0]


def test_train_writes_quick_pictures_and_report(trained: tuple[Path, str, list[str]]) -> None:
    out, stdout, pictures = trained
    report = out / "report.html"
    assert report.is_file() and f"report: {report}" in stdout
    assert stdout.rstrip().endswith(f"run folder: {out}")
    assert {"embedding_train_pca", "embedding_test_pca", "learning_curves"} <= set(pictures)
    assert not any("tsne" in p for p in pictures)  # t-SNE is left to `tripletlab plot`
    assert "data:image/png;base64," in report.read_text()


def test_evaluate_a_run_folder(
    trained: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained[0]
    before = (out / "metrics.json").read_text()
    code, stdout, err = run(["evaluate", str(out), "--quiet"], capsys)
    assert code == 0, err
    written = json.loads((out / "evaluation.json").read_text())
    assert f"wrote {out / 'evaluation.json'}" in stdout and "precision_at_1" in stdout
    assert written["split"] == "test" and written["checkpoint"].endswith("best.pt")
    for key in (*KEYS[:-1], "recall_at_4", "held_out_pair_accuracy", "roc_auc", "nmi", "ami"):
        assert key in written, key
    assert "tar_at_far_1e-3" in written and written["knn_gallery"] == "train"
    assert (out / "metrics.json").read_text() == before  # the training's record is kept
    training = json.loads(before)
    assert written["map_at_r"] == pytest.approx(training["map_at_r"])
    # the baselines of metrics.json, the same figures, printed as train prints them
    assert written["baselines"] == training["baselines"]
    assert (
        "baseline raw_pixels map_at_r" in stdout and "baseline untrained precision_at_1" in stdout
    )


def test_evaluate_a_checkpoint_file(
    trained: tuple[Path, str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained[0]
    target = tmp_path / "e.json"
    argv = ["evaluate", str(out / "checkpoints" / "last.pt"), "--out", str(target)]
    argv += ["--metrics", "retrieval", "knn", "--k", "3", "--no-baselines"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    written = json.loads(target.read_text())
    assert written["checkpoint"].endswith("last.pt") and written["knn_k"] == 3
    assert "pair_accuracy" not in written and "map_at_r" in written
    assert "baselines" not in written and "baseline" not in stdout


def test_evaluate_seen_and_unseen(unseen_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(["evaluate", str(unseen_run), "--split", "unseen"], capsys)
    assert code == 0, err
    written = json.loads((unseen_run / "evaluation.json").read_text())
    assert written["split"] == "unseen"
    assert written["seen"]["knn_gallery"] == "train"
    assert written["unseen"]["knn_gallery"] == "leave-one-out"
    # unseen: every image of classes 7-9, from digits' train and test splits, each a
    # leave-one-out query; seen: the test images of the 5 classes trained on (2 of 0-6
    # validate the run, class-disjoint)
    assert written["unseen"]["num_test"] == 533 and written["unseen"]["num_excluded_queries"] == 0
    assert written["seen"]["num_test"] == 181
    header = stdout.splitlines()[0].split()
    assert header == ["metric", "seen", "unseen"]
    # the default for a class-split run is the same
    assert run(["evaluate", str(unseen_run), "--metrics", "knn"], capsys)[0] == 0
    assert set(json.loads((unseen_run / "evaluation.json").read_text())) >= {"seen", "unseen"}


def test_train_reports_seen_and_unseen_classes(
    unseen_trained: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """metrics.json, the printed table and report.html group the scores as `evaluate` does
    (docs/metrics.md), with the same words for the same gallery."""
    out, stdout = unseen_trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "seen",
        "unseen",
        "train_seconds",
        "best_epoch",
        "epochs_trained",
        "samples_per_second",
        "loss_time_share",
        "load_wait_share",
    }
    seen, unseen = metrics["seen"], metrics["unseen"]
    assert seen["knn_gallery"] == "train" and unseen["knn_gallery"] == "leave-one-out"
    assert seen["num_test"] == 181 and unseen["num_test"] == 533  # as in test_evaluate_seen_...
    assert stdout.splitlines()[0].split() == ["metric", "seen", "unseen"]
    assert "note: unseen: the images of the classes held out of training" in stdout
    report = (out / "report.html").read_text()
    assert "<th>metric</th><th>seen</th><th>unseen</th>" in report
    assert "unseen: the images of the classes held out of training" in report
    assert "baseline raw_pixels precision_at_1" in report  # metrics.json's baselines, shown
    for group in (seen, unseen):
        assert set(group["baselines"]) == {"raw_pixels", "untrained", "items"}
    code, _, err = run(["evaluate", str(out), "--quiet"], capsys)
    assert code == 0, err
    evaluated = json.loads((out / "evaluation.json").read_text())
    for group in ("seen", "unseen"):
        for key in ("precision_at_1", "map_at_r", "knn_accuracy", "pair_accuracy", "knn_gallery"):
            assert metrics[group][key] == pytest.approx(evaluated[group][key]), (group, key)


def test_plot_writes_pictures_and_report(
    trained: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained[0]
    report = out / "report.html"
    report.unlink()
    code, stdout, err = run(["plot", str(out), "--projections", "pca", "--quiet"], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[-1] == f"report: {report}" and report.is_file()
    pngs = [Path(line) for line in lines if line.endswith(".png")]
    assert {p.stem for p in pngs} >= {"embedding_test_pca", "neighbors_worst", "distances"}
    assert all(p.is_file() for p in pngs)


@pytest.mark.slow
def test_plot_adds_tsne_by_default(
    trained: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained[0]
    code, _, err = run(["plot", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert (out / "pictures" / "embedding_test_tsne.png").is_file()
    assert "embedding_train_tsne" in (out / "report.html").read_text()


def nan_checkpoint(run_dir: Path, tmp_path: Path) -> Path:
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    for value in ckpt["model"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    return tmp_path / "nan.pt"


def image_folder(root: Path, mode: str) -> Path:
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(10):
            shape = (8, 8, 3) if mode == "RGB" else (8, 8)
            pixels = g.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "softmax"
    argv = ["train", *FAST, "--epochs", "1", "--objective", "softmax", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("metric", "unknown metric group 'speed'; choose one of: retrieval, knn"),
        ("k", "k=5000 neighbours asked for but the training set has 1288 items"),
        ("nan", "gives NaN or Inf embeddings for 359 of 359 test images"),
        ("empty", "holds no checkpoint (looked for"),
        ("missing", "is neither a run folder nor a checkpoint file"),
        ("channels", "3-channel 8x8 images but"),
        ("softmax", "softmax head of"),
        ("split", "unknown split 'train'; choose one of: test, seen, unseen"),
        ("unseen", "holds 0 classes the run never trained on, and scoring unseen classes take"),
        ("out", "is the training's metrics.json"),
        ("projection", "unknown projection 'mds'; choose one of: direct, pca, tsne"),
        ("direct", "a direct plot needs a 2-D embedding, got D=64"),
        ("plot-nan", "gives NaN or Inf embeddings"),
    ],
)
def test_evaluate_and_plot_bad_input_exit_2_with_one_line(
    case: str,
    message: str,
    trained: tuple[Path, str, list[str]],
    softmax_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = trained[0]
    ev = ["evaluate", str(out), "--quiet"]
    argv = {
        "metric": [*ev, "--metrics", "knn", "speed"],
        "k": [*ev, "--k", "5000"],
        "empty": ["evaluate", str(tmp_path)],
        "missing": ["evaluate", str(tmp_path / "nothing")],
        "channels": [*ev, "--dataset", f"imagefolder:{tmp_path / 'rgb'}"],
        "softmax": ["evaluate", str(softmax_run), "--dataset", f"imagefolder:{tmp_path / 'g'}"],
        "split": [*ev, "--split", "train"],
        "unseen": [*ev, "--split", "unseen"],
        "out": [*ev, "--out", str(out / "metrics.json")],
        "projection": ["plot", str(out), "--projections", "pca", "mds"],
        "direct": ["plot", str(out), "--projections", "direct"],
    }.get(case, [])
    if case == "nan":
        argv = ["evaluate", str(nan_checkpoint(out, tmp_path))]
    if case == "plot-nan":
        copy = tmp_path / "copy"
        (copy / "checkpoints").mkdir(parents=True)
        (copy / "config.json").write_text((out / "config.json").read_text())
        nan_checkpoint(out, tmp_path).rename(copy / "checkpoints" / "best.pt")
        argv = ["plot", str(copy)]
    if case == "channels":
        image_folder(tmp_path / "rgb", "RGB")
    if case == "softmax":
        image_folder(tmp_path / "g", "L")
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0]
    assert "Traceback" not in err
