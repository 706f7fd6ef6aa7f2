"""Loading runs (:mod:`tripletlab.evaluation.runs`): from a folder or a checkpoint, the
errors that say where to look, and other datasets that must fit the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_runs import digits_run
from PIL import Image

from tripletlab.data import DataError
from tripletlab.evaluation import LoadedRun, evaluate_run, load_run, run_data
from tripletlab.training import TrainingError

pytest_plugins = ["evaluation_runs"]


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
