"""Scoring runs (:mod:`tripletlab.evaluation.evaluate`): one implementation for ``fit``
and ``evaluate_run``, seen/unseen groups, the JSON written and the command's checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from data_helpers import inshop_replica

from tripletlab.cli.common import format_metrics
from tripletlab.data import ImageSet, Splits
from tripletlab.embedding import embed
from tripletlab.evaluation import (
    EvalConfig,
    LoadedRun,
    PlotConfig,
    eval_groups,
    evaluate_run,
    evaluation_path,
    load_run,
    run_data,
    run_evaluate,
    to_json,
)
from tripletlab.scores import evaluate_embeddings
from tripletlab.training import config_from_dict, fit

pytest_plugins = ["evaluation_runs"]

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


def test_to_json_writes_null_for_nan() -> None:
    text = to_json({"roc_auc": float("nan"), "seen": {"x": float("inf"), "n": 3}})
    assert json.loads(text) == {"roc_auc": None, "seen": {"x": None, "n": 3}}


def test_fit_and_evaluate_run_agree(run_dir: Path, run: LoadedRun) -> None:
    """One implementation: a fresh evaluation of the best checkpoint reproduces metrics.json
    (same data, normalisation, validation set and seeds)."""
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in TRAINING_KEYS:
        assert key in saved, key
    fresh = evaluate_run(run, split="test")
    assert fresh["split"] == "test" and fresh["checkpoint"] == str(run.checkpoint)
    for key, value in saved.items():
        if key in fresh and key != "baselines":
            assert fresh[key] == pytest.approx(value), key
    # the same untrained network (the run's seed) on the same items: the same figures
    assert fresh["baselines"] == saved["baselines"]
    assert set(fresh["baselines"]) == {"raw_pixels", "untrained", "items"}
    assert "baselines" not in evaluate_run(run, metrics=["retrieval"], baselines=False)
    assert "baselines" not in evaluate_run(run, metrics=["knn"])  # they are retrieval scores
    assert saved["held_out_pairs_from"] == "validation (150 items)"
    assert "nmi" in saved and "tar_at_far_1e-2" in saved and "recall_at_8" in saved


def test_seen_and_unseen_groups(unseen_dir: Path) -> None:
    run = load_run(unseen_dir)
    out = evaluate_run(run, metrics=["retrieval", "knn"])  # a class-split run: both groups
    assert out["split"] == "unseen" and set(out) >= {"seen", "unseen"}
    seen, unseen = out["seen"], out["unseen"]
    assert seen["knn_gallery"] == "train" and unseen["knn_gallery"] == "leave-one-out"
    config, splits, _ = run_data(run)
    assert unseen["num_test"] == len(splits.test)  # every image of classes 7, 8, 9
    assert set(torch.unique(splits.test.labels).tolist()) == {7, 8, 9}
    assert unseen["num_excluded_queries"] == 0
    # seen: the test-split images of the classes trained on (the class split had dropped
    # them); 2 of classes 0-6 validate the run, class-disjoint, and are in neither group
    assert seen["num_test"] == 181
    saved = json.loads((unseen_dir / "metrics.json").read_text())  # fit groups them too
    for group, scores in (("seen", seen), ("unseen", unseen)):
        assert scores["precision_at_1"] == pytest.approx(saved[group]["precision_at_1"])
        assert scores["knn_accuracy"] == pytest.approx(saved[group]["knn_accuracy"])
        assert scores["baselines"] == saved[group]["baselines"], group
    assert "train_seconds" in saved and "train_seconds" not in saved["unseen"]
    _, groups = eval_groups(config, splits, "seen")
    assert list(groups) == ["seen"]


def test_split_errors(run: LoadedRun) -> None:
    config, splits, _ = run_data(run)
    with pytest.raises(ValueError, match="the run never trained on, and scoring unseen classes"):
        eval_groups(config, splits, "unseen")
    with pytest.raises(ValueError, match="unknown split 'train'; choose one of: test, seen"):
        eval_groups(config, splits, "train")
    resolved, groups = eval_groups(config, splits, "seen")  # every class was seen
    assert resolved == "seen" and len(groups["seen"].test) == len(splits.test)


def _labelled(*labels: int) -> ImageSet:
    y = torch.tensor(labels)
    return ImageSet(torch.zeros(len(y), 1, 2, 2, dtype=torch.uint8), y, tuple("abcdef"))


def test_split_layout_groups_divide_the_test_split_by_class() -> None:
    """A dataset's own train and test parts (no class split): seen = the test images of
    training classes, unseen = the rest; a test part of other classes only is all unseen."""
    config = config_from_dict({"dataset": "imagefolder:/x"})
    mixed = Splits("d", _labelled(0, 0, 1, 1), _labelled(1, 2, 0, 3, 2), (0.5,), (0.5,))
    resolved, groups = eval_groups(config, mixed, "unseen")
    assert resolved == "unseen" and list(groups) == ["seen", "unseen"]
    assert groups["seen"].test.labels.tolist() == [1, 0]
    assert groups["seen"].gallery is mixed.train
    assert groups["unseen"].test.labels.tolist() == [2, 3, 2]
    assert groups["unseen"].gallery is None  # leave-one-out
    assert eval_groups(config, mixed, "seen")[1]["seen"].test.labels.tolist() == [1, 0]
    assert eval_groups(config, mixed, None)[0] == "test"  # as at the end of training

    apart = Splits("d", _labelled(0, 0, 1, 1), _labelled(2, 2, 3, 3), (0.5,), (0.5,))
    _, groups = eval_groups(config, apart, "unseen")
    assert list(groups) == ["unseen"] and len(groups["unseen"].test) == 4
    with pytest.raises(ValueError, match="holds 0 classes the run trained on, and scoring seen"):
        eval_groups(config, apart, "seen")
    same = Splits("d", _labelled(0, 0, 1, 1), _labelled(1, 0), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="holds 0 classes the run never trained on, and "):
        eval_groups(config, same, "unseen")
    # one class on a side: every neighbour would be right, so that side is not scored
    one_new = Splits("d", _labelled(0, 0, 1, 1), _labelled(0, 1, 2, 2), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="holds 1 class the run never trained on"):
        eval_groups(config, one_new, "unseen")
    one_old = Splits("d", _labelled(0, 0, 1, 1), _labelled(0, 0, 2, 3), (0.5,), (0.5,))
    assert list(eval_groups(config, one_old, "unseen")[1]) == ["unseen"]
    with pytest.raises(ValueError, match=r"test split of imagefolder:/x holds 1 class the run t"):
        eval_groups(config, one_old, "seen")


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


def test_inshop_queries_are_scored_against_the_gallery(tmp_path: Path) -> None:
    """A tiny In-Shop trained for an epoch: metrics.json and evaluation.json score each query
    against the gallery (not leave-one-out), baselines alike, with the same figures."""
    data = inshop_replica(tmp_path / "inshop")  # 8 queries, 12 gallery images, 4 items
    config = {"dataset": f"inshop:{data.root}", "image_size": 16, "epochs": 1, "val_size": 6}
    config.update(seed=0, amp="off", width=8, embedding_dim=8)
    fit(config_from_dict(config), tmp_path / "run")
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_config["data"]["augment"] == "digits"  # from scratch, colour too; as used
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "seen" not in saved and "unseen" not in saved  # no class split: flat
    assert saved["retrieval_gallery"] == "gallery" and saved["knn_gallery"] == "gallery"
    assert saved["num_test"] == data.query == 8 and saved["num_gallery"] == data.gallery == 12
    assert saved["num_excluded_queries"] == 0 and saved["recall_at_8"] is not None
    assert saved["baselines"]["items"] == 8 and saved["baselines"]["gallery_items"] == 12
    # the scores are those of the queries' embeddings against the gallery's
    run = load_run(tmp_path / "run")
    _, splits, _ = run_data(run)
    assert splits.gallery is not None

    def embedded(images: torch.Tensor) -> torch.Tensor:
        return embed(run.model, images, run.stats, run.device, run.embed_mode())

    gallery = (embedded(splits.gallery.images[:]), splits.gallery.labels)
    want = evaluate_embeddings(
        embedded(splits.test.images[:]), splits.test.labels, query_gallery=gallery
    )
    for key in ("precision_at_1", "map_at_r", "recall_at_2", "knn_accuracy", "pair_accuracy"):
        assert saved[key] == pytest.approx(want[key]), key
    result = run_evaluate(EvalConfig(run=str(tmp_path / "run"), device="cpu"))
    written = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert result.path == tmp_path / "run" / "evaluation.json" and written == result.metrics
    assert written["split"] == "test" and written["retrieval_gallery"] == "gallery"
    assert written["num_test"] == 8 and written["num_gallery"] == 12
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_1", "knn_accuracy"):
        assert written[key] == pytest.approx(saved[key]), key
    assert written["baselines"] == saved["baselines"]
    assert "each of the 8 queries (the test images) against the 12 gallery images" in (
        format_metrics(written)
    )
