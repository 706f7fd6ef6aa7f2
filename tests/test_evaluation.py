"""Evaluation of runs: the metrics of an embedded set against closed forms and loops, one
implementation for ``fit`` and ``evaluate_run``, seen/unseen groups, run loading and its
errors, pictures and report. Two tiny digits runs are trained once for the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab import evaluation
from tripletlab.data import DataError
from tripletlab.evaluation import (
    EvalConfig,
    LoadedRun,
    PlotConfig,
    default_projections,
    eval_groups,
    evaluate_embeddings,
    evaluate_run,
    evaluation_path,
    load_run,
    plot_run,
    run_data,
    run_evaluate,
    to_json,
)
from tripletlab.training import TrainConfig, TrainingError, fit

TRAINING_KEYS = (
    "precision_at_1",
    "r_precision",
    "map_at_r",
    "knn_accuracy",
    "knn_gallery",
    "pair_accuracy",
    "pair_threshold",
    "pair_floor",
    "num_test",
    "num_excluded_queries",
)


def digits_run(folder: Path, **kw: object) -> Path:
    base: dict[str, object] = {"dataset": "digits", "epochs": 1, "val_size": 150, "seed": 0}
    base.update(kw)
    fit(TrainConfig(**base), folder)  # type: ignore[arg-type]
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_run(tmp_path_factory.mktemp("eval") / "run")


@pytest.fixture(scope="module")
def unseen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_run(tmp_path_factory.mktemp("eval") / "unseen", unseen_classes=3)


@pytest.fixture(scope="module")
def run(run_dir: Path) -> LoadedRun:
    return load_run(run_dir, "cpu")


def clusters(n_per: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight, well separated clusters: every metric at its best."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per)
    centres = torch.eye(classes, 4) * 10.0
    return centres[y] + 0.001 * torch.randn(len(y), 4, generator=g), y


# ------------------------------------------------------------------------------ metrics


def test_separated_clusters_score_perfectly() -> None:
    x, y = clusters()
    m = evaluate_embeddings(x, y, gallery=clusters(seed=1), held_out=clusters(seed=2))
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_8", "knn_accuracy"):
        assert m[key] == 1.0, key
    assert m["roc_auc"] == 1.0 and m["tar_at_far_1e-3"] == 1.0
    assert m["nmi"] == pytest.approx(1.0) and m["ami"] == pytest.approx(1.0)
    # pairs at distance ~0.001 (same) or ~14 (different): the grid 0.00, 0.01, ... splits
    # them, on the test pairs and on the held-out ones alike
    assert m["pair_accuracy"] == 1.0 and m["held_out_pair_accuracy"] == 1.0
    assert m["pair_floor"] == pytest.approx(108 / 153)  # 3 classes of 6: 153 pairs, 45 same
    assert m["knn_gallery"] == "train" and m["num_test"] == 18
    assert m["held_out_pairs_from"] == "validation (18 items)"


def test_collapsed_embedding_scores_its_worst() -> None:
    y = torch.arange(3).repeat_interleave(4)
    m = evaluate_embeddings(torch.zeros(12, 3), y, metrics=["retrieval", "verification"])
    assert m["precision_at_1"] == 0.0 and m["map_at_r"] == 0.0
    assert m["roc_auc"] == 0.5 and m["tar_at_far_1e-3"] == 0.0


def test_groups_select_keys() -> None:
    x, y = clusters()
    m = evaluate_embeddings(x, y, metrics=["knn"])
    assert set(m) == {"knn_accuracy", "knn_gallery", "knn_k", "num_test"}
    assert m["knn_gallery"] == "test (leave-one-out)"
    m = evaluate_embeddings(x, y, metrics=["pairs"])  # no held-out set: no held-out keys
    assert "held_out_pair_accuracy" not in m and "pair_threshold" in m


def brute_knn(
    x: torch.Tensor, y: torch.Tensor, k: int, gallery: tuple[torch.Tensor, torch.Tensor] | None
) -> float:
    """k-NN accuracy with float64 loops: leave-one-out without a gallery; the most frequent
    label of the k nearest (nearer first, then lower index), ties to the earliest vote."""
    gx, gy = (x, y) if gallery is None else gallery
    right = 0
    for i in range(len(x)):
        d = sorted(
            (float((x[i].double() - gx[j].double()).norm()), j)
            for j in range(len(gx))
            if gallery is not None or j != i
        )
        votes = [int(gy[j]) for _, j in d[:k]]
        best = max(votes, key=lambda c: (votes.count(c), -votes.index(c)))
        right += best == int(y[i])
    return right / len(x)


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_knn_matches_a_loop(k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    got = evaluate_embeddings(x, y, k=k, metrics=["knn"])["knn_accuracy"]
    assert got == pytest.approx(brute_knn(x, y, k, None))
    gallery = torch.randn(25, 3, generator=g), torch.randint(0, 4, (25,), generator=g)
    got = evaluate_embeddings(x, y, gallery=gallery, k=k, metrics=["knn"])["knn_accuracy"]
    assert got == pytest.approx(brute_knn(x, y, k, gallery))


def test_knn_leaves_out_the_query_among_duplicates() -> None:
    # Items 0 and 1 coincide: each must find the other, not itself.
    x = torch.tensor([[0.0], [0.0], [5.0], [5.1]])
    m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]), metrics=["knn"])
    assert m["knn_accuracy"] == 1.0


def test_knn_progress_reports_chunks() -> None:
    x, y = clusters(n_per=700)  # 2,100 queries: chunks of 1,024
    calls: list[tuple[str, int, int]] = []
    evaluate_embeddings(x, y, metrics=["knn"], progress=lambda *a: calls.append(a))
    knn = [c for c in calls if "NN" in c[0]]
    assert [c[1] for c in knn] == [0, 1024, 2048, 2100] and knn[0][2] == 2100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ["knn", "speed"]}, "unknown metric group 'speed'; choose from"),
        ({"k": 18}, "k=18 neighbours asked for but the rest of the test set has 17 items"),
        ({"k": 0}, "pass 1 <= k <= 17"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    x, y = clusters()
    with pytest.raises(ValueError, match=message):
        evaluate_embeddings(x, y, **kwargs)  # type: ignore[arg-type]


def test_nan_embeddings_are_refused() -> None:
    x, y = clusters()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf embeddings for 1 of 18 test images"):
        evaluate_embeddings(x, y)


def test_large_sets_are_subsampled_with_a_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "CLUSTERING_MAX_ITEMS", 10)
    monkeypatch.setattr(evaluation, "VERIFICATION_MAX_ITEMS", 12)
    x, y = clusters(n_per=10)
    a = evaluate_embeddings(x, y, metrics=["clustering", "verification"], seed=3)
    b = evaluate_embeddings(x, y, metrics=["clustering", "verification"], seed=3)
    assert a == b and a["clustering_items"] == 10 and a["verification_items"] == 12


def test_to_json_writes_null_for_nan() -> None:
    text = to_json({"roc_auc": float("nan"), "seen": {"x": float("inf"), "n": 3}})
    assert json.loads(text) == {"roc_auc": None, "seen": {"x": None, "n": 3}}


# ------------------------------------------------------------------------------ runs


def test_fit_and_evaluate_run_agree(run_dir: Path, run: LoadedRun) -> None:
    """One implementation: a fresh evaluation of the best checkpoint reproduces metrics.json
    (same data, normalisation, validation set and seeds)."""
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in TRAINING_KEYS:
        assert key in saved, key
    fresh = evaluate_run(run, split="test")
    assert fresh["split"] == "test" and fresh["checkpoint"] == str(run.checkpoint)
    for key, value in saved.items():
        if key in fresh:
            assert fresh[key] == pytest.approx(value), key
    assert saved["held_out_pairs_from"] == "validation (150 items)"
    assert "nmi" in saved and "tar_at_far_1e-2" in saved and "recall_at_8" in saved


def test_load_run_from_folder_and_checkpoint(run_dir: Path, run: LoadedRun) -> None:
    assert run.checkpoint == run_dir / "checkpoints" / "best.pt" and run.run_dir == run_dir
    assert run.image_shape == (1, 8, 8) and run.num_classes is None and run.epoch == 1
    last = load_run(run_dir / "checkpoints" / "last.pt")
    assert last.run_dir == run_dir and last.checkpoint.name == "last.pt"
    for a, b in zip(run.model.state_dict().values(), last.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # one epoch: best is last


def test_load_run_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="neither a run folder nor a checkpoint file"):
        load_run(tmp_path / "missing")
    with pytest.raises(TrainingError, match=r"holds no checkpoint .*tripletlab train --out"):
        load_run(tmp_path)
    parent = tmp_path / "runs"
    shutil.copytree(run_dir / "checkpoints", parent / "a" / "checkpoints")
    with pytest.raises(TrainingError, match=r"it holds runs, e\.g\. .*runs/a"):
        load_run(parent)
    (parent / "a" / "checkpoints" / "best.pt").unlink()
    with pytest.raises(TrainingError, match=r"no checkpoints/best\.pt yet.*--resume"):
        load_run(parent / "a")
    loose = tmp_path / "loose.pt"
    loose.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="unreadable"):
        load_run(loose)


def test_seen_and_unseen_groups(unseen_dir: Path) -> None:
    run = load_run(unseen_dir)
    out = evaluate_run(run, metrics=["retrieval", "knn"])  # a class-split run: both groups
    assert out["split"] == "unseen" and set(out) >= {"seen", "unseen"}
    seen, unseen = out["seen"], out["unseen"]
    assert seen["knn_gallery"] == "train" and unseen["knn_gallery"] == "unseen (leave-one-out)"
    config, splits, _ = run_data(run)
    assert unseen["num_test"] == len(splits.test)  # classes 7, 8, 9 of the test split
    assert set(torch.unique(splits.test.labels).tolist()) == {7, 8, 9}
    # seen: the test images of classes 0..6, which the class split had dropped
    assert seen["num_test"] == 359 - len(splits.test)
    saved = json.loads((unseen_dir / "metrics.json").read_text())
    assert unseen["precision_at_1"] == pytest.approx(saved["precision_at_1"])
    assert unseen["knn_accuracy"] == pytest.approx(saved["knn_accuracy"])
    _, groups = eval_groups(config, splits, "seen")
    assert list(groups) == ["seen"]


def test_split_errors(run: LoadedRun) -> None:
    config, splits, _ = run_data(run)
    with pytest.raises(ValueError, match="so no class is unseen; use --split test"):
        eval_groups(config, splits, "unseen")
    with pytest.raises(ValueError, match="unknown split 'train'; choose from: test, seen"):
        eval_groups(config, splits, "train")
    resolved, groups = eval_groups(config, splits, "seen")  # every class was seen
    assert resolved == "seen" and len(groups["seen"].test) == len(splits.test)


def write_folder(root: Path, mode: str, classes: int = 3, size: int = 8) -> Path:
    g = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(10):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(g.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


def test_other_datasets_must_fit_the_model(run: LoadedRun, tmp_path: Path) -> None:
    rgb = write_folder(tmp_path / "rgb", "RGB")
    with pytest.raises(DataError, match=r"3-channel 8x8 images but .* 1-channel 8x8"):
        run_data(run, dataset=f"imagefolder:{rgb}")
    grey = write_folder(tmp_path / "grey", "L", size=20)  # resized to the model's 8x8
    _, splits, _ = run_data(run, dataset=f"imagefolder:{grey}")
    assert tuple(splits.test.images.shape[1:]) == (1, 8, 8) and splits.train.classes[0] == "c0"
    out = evaluate_run(run, dataset=f"imagefolder:{grey}", metrics=["retrieval"])
    assert out["dataset"] == f"imagefolder:{grey}" and out["num_test"] == 6


def test_softmax_head_must_fit_the_classes(tmp_path: Path) -> None:
    folder = digits_run(tmp_path / "softmax", objective="softmax", val_size=0)
    run = load_run(folder)
    assert run.num_classes == 10
    grey = write_folder(tmp_path / "grey", "L")
    with pytest.raises(DataError, match=r"softmax head of .* has 10 classes but .* has 3"):
        run_data(run, dataset=f"imagefolder:{grey}")
    # without a validation set the held-out threshold is fitted on training pairs
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["held_out_pairs_from"].startswith("train (")


def test_nan_checkpoint_names_itself(run_dir: Path, tmp_path: Path) -> None:
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    for value in ckpt["model"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"checkpoint .*nan\.pt gives NaN or Inf embeddings"):
        evaluate_run(load_run(tmp_path / "nan.pt"), metrics=["retrieval"])


def test_evaluation_path_and_run_evaluate(run_dir: Path, run: LoadedRun, tmp_path: Path) -> None:
    assert evaluation_path(run, None) == run_dir / "evaluation.json"
    last = load_run(run_dir / "checkpoints" / "last.pt")
    assert evaluation_path(last, None) == run_dir / "evaluation-last.json"
    shutil.copy(run_dir / "checkpoints" / "best.pt", tmp_path / "model.pt")
    loose = load_run(tmp_path / "model.pt")
    assert loose.run_dir is None
    assert evaluation_path(loose, None) == tmp_path / "model.evaluation.json"
    with pytest.raises(ValueError, match=r"is the training's metrics\.json"):
        evaluation_path(run, str(run_dir / "metrics.json"))
    before = (run_dir / "metrics.json").read_text()
    out = tmp_path / "sub" / "e.json"
    result = run_evaluate(
        EvalConfig(run=str(run_dir), out=str(out), metrics=["retrieval"], device="cpu")
    )
    assert result.path == out and json.loads(out.read_text()) == result.metrics
    assert (run_dir / "metrics.json").read_text() == before
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (EvalConfig(run="x", split="val"), "unknown split 'val'"),
        (EvalConfig(run="x", metrics=["speed"]), "unknown metric group 'speed'"),
        (EvalConfig(run="x", k=0), "--k must be a positive number"),
        (EvalConfig(run="x", device="tpu"), "unknown device 'tpu'"),
        (PlotConfig(run="x", projections=["mds"]), "unknown projection 'mds'"),
    ],
)
def test_configs_fail_before_loading(config: EvalConfig | PlotConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.check()


def test_default_projections() -> None:
    assert default_projections(2) == ("direct",) == default_projections(2, quick=True)
    assert default_projections(64, quick=True) == ("pca",)
    assert default_projections(64)[:2] == ("pca", "tsne")


def test_plot_run_writes_pictures_and_report(run_dir: Path, run: LoadedRun) -> None:
    calls: list[tuple[str, int, int]] = []
    result = plot_run(run, quick=True, progress=lambda *a: calls.append(a))
    names = set(result.pictures)
    assert {"embedding_train_pca", "embedding_test_pca", "neighbors_random"} <= names
    assert "learning_curves" in names and not any("tsne" in n for n in names)
    for path in result.pictures.values():
        assert path.is_file() and path.is_relative_to(run_dir / "pictures")
    assert result.report == run_dir / "report.html"
    html = result.report.read_text()
    assert "embedding_test_pca" in html and "precision_at_1" in html
    assert ("embedding train", 0, 1288) in calls and calls[-1][1] == calls[-1][2]
    with pytest.raises(ValueError, match="direct plot needs a 2-D embedding, got D=64"):
        plot_run(run, projections=["direct"])
