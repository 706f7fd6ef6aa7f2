"""Tests for tripletlab.inference and ``tripletlab embed``: a digits run embedded end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tripletlab.cli import main
from tripletlab.data import load_dataset
from tripletlab.embedding import embed
from tripletlab.embeddingfile import load_embeddings
from tripletlab.evaluation import load_run, run_data
from tripletlab.inference import (
    EmbedConfig,
    check_output_path,
    embed_run,
    item_ids,
    load_run_dataset,
    run_embed,
)
from tripletlab.training import inference_spec, prepare_data


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def grey_folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat")) -> Path:
    """One sub-folder of 8x8 grey PNGs per class, 4 images each, one in a nested folder."""
    from PIL import Image

    g = np.random.default_rng(0)
    for c in classes:
        for i in range(4):
            path = root / c / (f"deep/{i}.png" if i == 3 else f"{i}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(path)
    return root


def test_embed_cli_round_trip_equals_embed(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "digits.npz"
    code, stdout, err = run_cli(["embed", str(digits_run), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("embedded 1797 images in ") and lines[0].endswith(" images/s)")
    assert lines[-1] == f"wrote {out}"
    data = load_embeddings(out)
    run = load_run(digits_run, "cpu")
    raw = load_dataset("digits", seed=run.config.run.seed)
    _, splits, _ = run_data(run)
    mode = run.embed_mode()
    amp = mode.amp
    images = torch.cat([raw.train.images[:], raw.test.images[:]])
    want = embed(run.model, images, (splits.mean, splits.std), run.device, mode)
    assert data.embeddings.shape == (1797, run.model.embedding_dim)
    assert torch.allclose(data.embeddings, want, atol=1e-6)
    tol = 1e-2 if amp else 1e-5  # the model's L2 normalisation ran in bfloat16 with amp
    assert torch.allclose(data.embeddings.norm(dim=1), torch.ones(1797), atol=tol)
    assert torch.equal(data.labels, torch.cat([raw.train.labels, raw.test.labels]))
    n_train = len(raw.train)
    assert data.ids[:2] == ("train/0", "train/1") and data.ids[n_train] == "test/0"
    assert data.ids[-1] == f"test/{len(raw.test) - 1}" and len(set(data.ids)) == 1797
    assert data.classes == tuple(str(d) for d in range(10))
    meta = data.meta
    assert meta["dataset"] == "digits" and meta["split"] == "all" and meta["run"] == str(digits_run)
    assert meta["distance"] == "euclidean" and meta["normalized"] is True
    assert meta["checkpoint"].endswith("best.pt") and meta["flip_tta"] is mode.flip
    assert meta["bf16"] is amp and meta["format_version"] == 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_embed_run_one_split(digits_run: Path, split: str) -> None:
    run = load_run(digits_run, "cpu")
    raw = getattr(load_dataset("digits", seed=run.config.run.seed), split)
    result = embed_run(run, split=split, batch_size=100)
    data = result.data
    assert len(data) == len(raw) and torch.equal(data.labels, raw.labels)
    assert data.ids == tuple(f"{split}/{i}" for i in range(len(raw)))
    assert data.meta["split"] == split and result.path is None
    assert result.seconds > 0 and result.images_per_second == len(raw) / result.seconds


def test_embed_an_image_folder_ids_are_paths(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = grey_folder(tmp_path / "imgs")
    out = tmp_path / "f.npz"
    argv = ["embed", str(digits_run), "--dataset", f"imagefolder:{root}", "--out", str(out)]
    code, stdout, err = run_cli([*argv, "--split", "test", "--batch-size", "2"], capsys)
    assert code == 0, err
    assert "embedded 3 images" in stdout  # one test image per class of 4
    data = load_embeddings(out)
    assert data.classes == ("ant", "bee", "cat")
    for path, label in zip(data.ids, data.labels.tolist(), strict=True):
        assert (root / path).is_file() and path.split("/")[0] == data.classes[label]
    assert data.meta["dataset"] == f"imagefolder:{root}"
    every = embed_run(load_run(digits_run, "cpu"), dataset=f"imagefolder:{root}").data
    assert sorted(every.ids) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert "ant/deep/3.png" in every.ids


def test_normalization_is_the_runs(digits_run: Path) -> None:
    run = load_run(digits_run, "cpu")
    _, splits, _ = run_data(run)
    assert run.stats == (splits.mean, splits.std) == load_run_dataset(run).stats
    # With a class split the run normalises with its training classes' statistics, and
    # that is what its checkpoint stores.
    config = dataclasses.replace(
        run.config, data=dataclasses.replace(run.config.data, unseen_classes=3)
    )
    seen, _ = prepare_data(config)
    raw = load_dataset("digits", seed=run.config.run.seed)
    assert inference_spec(config, seen).stats == (seen.mean, seen.std) != (raw.mean, raw.std)


def test_item_ids() -> None:
    raw = load_dataset("digits")
    assert item_ids(raw.test, "test")[:3] == ("test/0", "test/1", "test/2")
    named = dataclasses.replace(raw.test, paths=tuple(f"x/{i}.png" for i in range(len(raw.test))))
    assert item_ids(named, "test")[0] == "x/0.png"


def test_check_output_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "e.npz"
    assert check_output_path(target, "--out") == target
    assert not (tmp_path / "a").exists()  # nothing created
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        check_output_path(tmp_path, "--out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not a folder\\); choose another --out"):
        check_output_path(blocker / "e.npz", "--out")


def test_run_embed_returns_the_path(digits_run: Path, tmp_path: Path) -> None:
    config = EmbedConfig(run=str(digits_run), out=str(tmp_path / "t.npz"), split="test")
    result = run_embed(config)
    n_test = len(load_dataset("digits").test)
    assert result.path == tmp_path / "t.npz" and len(load_embeddings(result.path)) == n_test
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary file left


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "holds no checkpoint (looked for"),
        ("missing", "is neither a run folder nor a checkpoint file"),
        ("unwritable", "choose another --out"),
        ("folder", "is a folder; give a file name"),
        ("split", "unknown split 'val'; choose one of: train, test, all"),
        ("batch", "--batch-size must be >= 1, got 0"),
        ("device", "unknown device 'tpu'"),
        ("shape", "3-channel 8x8 images but"),
    ],
)
def test_embed_bad_input_exit_2_with_one_line(
    case: str,
    message: str,
    digits_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from PIL import Image

    out = tmp_path / "e.npz"
    run = str(digits_run)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    argv = {
        "empty": ["embed", str(tmp_path / "empty"), "--out", str(out)],
        "missing": ["embed", str(tmp_path / "nothing"), "--out", str(out)],
        "unwritable": ["embed", run, "--out", str(blocker / "e.npz")],
        "folder": ["embed", run, "--out", str(tmp_path)],
        "split": ["embed", run, "--out", str(out), "--split", "val"],
        "batch": ["embed", run, "--out", str(out), "--batch-size", "0"],
        "device": ["embed", run, "--out", str(out), "--device", "tpu"],
        "shape": ["embed", run, "--out", str(out), "--dataset", f"imagefolder:{tmp_path / 'rgb'}"],
    }[case]
    if case == "shape":
        for c in ("a", "b"):
            (tmp_path / "rgb" / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i, 9, 9)).save(tmp_path / "rgb" / c / f"{i}.png")
    code, stdout, err = run_cli([*argv, "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0], lines[0]
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["blocker", "empty", *(["rgb"] if case == "shape" else [])]
    )
