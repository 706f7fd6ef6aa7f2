"""A run folder is self-contained: its checkpoints carry what inference needs
(:class:`tripletlab.training.InferenceSpec`), so ``export``, ``embed``, ``evaluate
--dataset``, ``index build`` and ``search --images`` work with the training data deleted;
checkpoints written before the spec existed still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run
from PIL import Image

from tripletlab.cli import main
from tripletlab.embeddingfile import load_embeddings
from tripletlab.evaluation import load_run
from tripletlab.training import InferenceSpec, TrainingError


def image_folder(root: Path, classes: int, per_class: int, seed: int) -> Path:
    g = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = g.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            pixels[..., c % 3] = 255  # each class is tinted: something to learn
            Image.fromarray(pixels, "RGB").save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def orphan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    """A run trained on an image folder that is deleted afterwards; a second folder of new
    images; what embedding that folder gave while the training data was still there."""
    tmp = tmp_path_factory.mktemp("orphan")
    data = image_folder(tmp / "photos", classes=3, per_class=6, seed=0)
    new = image_folder(tmp / "new", classes=2, per_class=3, seed=1)
    out = tmp / "run"
    argv = ["train", "--dataset", f"imagefolder:{data}", "--image-size", "8", "--epochs", "1"]
    argv += ["--width", "4", "--embedding-dim", "8", "-p", "3", "-k", "2", "--val-size", "0"]
    argv += ["--amp", "off", "--quiet", "--no-report", "--out", str(out)]
    assert main(argv) == 0
    before = load_run(out, "cpu").spec
    shutil.rmtree(data)
    return out, new, {"spec": before}


def test_the_checkpoint_carries_the_inference_spec(
    orphan_run: tuple[Path, Path, dict[str, object]],
) -> None:
    out, _, facts = orphan_run
    ckpt = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    spec = InferenceSpec.from_dict(ckpt["inference"])
    assert spec == facts["spec"]
    assert spec.image_shape == (3, 8, 8) and spec.classes == ("c0", "c1", "c2")
    assert spec.embedding_dim == 8 and spec.distance == "euclidean" and spec.amp == "off"
    assert len(spec.mean) == 3 and all(s > 0 for s in spec.std)


def test_inference_works_without_the_training_data(
    orphan_run: tuple[Path, Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, new, _ = orphan_run
    npz = tmp_path / "new.npz"
    code, _, err = run(
        ["embed", str(out), "--dataset", f"imagefolder:{new}", "--out", str(npz), "--quiet"], capsys
    )
    assert code == 0, err
    data = load_embeddings(npz)
    assert data.embeddings.shape == (6, 8) and data.classes == ("c0", "c1")

    code, stdout, err = run(
        [
            "evaluate",
            str(out),
            "--dataset",
            f"imagefolder:{new}",
            "--out",
            str(tmp_path / "e.json"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "e.json").is_file()

    index = tmp_path / "index.npz"
    code, _, err = run(["index", "build", "--embeddings", str(npz), "--out", str(index)], capsys)
    assert code == 0, err
    query = new / "c1" / "0.png"
    code, stdout, err = run(
        ["search", str(index), "--images", str(query), "--run", str(out), "--k", "1"], capsys
    )
    assert code == 0, err
    assert "c1/0.png" in stdout  # the query's own file is its nearest item

    pytest.importorskip("onnxruntime")
    code, _, err = run(["export", str(out), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert code == 0, err


def test_runs_written_before_the_spec_still_load(digits_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(digits_run, copy)
    best = copy / "checkpoints" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    stored = InferenceSpec.from_dict(ckpt.pop("inference"))
    torch.save(ckpt, best)
    assert load_run(copy, "cpu").spec == stored  # recomputed from the digits data
    ckpt["config"]["data"]["dataset"] = "imagefolder:" + str(tmp_path / "gone")
    torch.save(ckpt, best)
    with pytest.raises(TrainingError, match=r"older tripletlab .* restore the data"):
        load_run(copy, "cpu")


def test_an_image_folder_given_relative_is_found_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --dataset imagefolder:photos` stores the folder's absolute path, so evaluate,
    embed, plot and search (with grids of the folder's relative ids) work from elsewhere;
    search --dataset says where a moved folder is."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    image_folder(work / "photos", classes=3, per_class=20, seed=0)  # 12 test images: plot's k=8
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    argv = ["train", "--dataset", "imagefolder:photos", "--image-size", "8", "--epochs", "1"]
    argv += ["--width", "4", "--embedding-dim", "8", "-p", "3", "-k", "2", "--val-size", "0"]
    argv += ["--amp", "off", "--quiet", "--no-report", "--out", str(tmp_path / "run")]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["dataset"] == f"imagefolder:{work / 'photos'}"

    monkeypatch.chdir(elsewhere)
    out = tmp_path / "run"
    for argv in (
        ["evaluate", str(out), "--out", "e.json", "--quiet"],
        ["plot", str(out), "--projections", "pca", "--train-items", "8", "--quiet"],
        ["embed", str(out), "--out", "all.npz", "--quiet"],
        ["index", "build", "--embeddings", "all.npz", "--out", "index.npz"],
    ):
        code, _, err = run(argv, capsys)
        assert code == 0, (argv[0], err)
    meta = load_embeddings(elsewhere / "all.npz")
    assert meta.meta["dataset"] == f"imagefolder:{work / 'photos'}"
    assert meta.ids[0] == "c0/0.png"  # ids stay relative to the folder the meta names
    argv = ["embed", str(out), "--dataset", "imagefolder:../work/photos", "--out", "t.npz"]
    assert run([*argv, "--quiet"], capsys)[0] == 0
    assert load_embeddings(elsewhere / "t.npz").meta["dataset"] == meta.meta["dataset"]
    search = ["search", "index.npz", "--embeddings", "all.npz", "--k", "2", "--grid", "g.png"]
    code, stdout, err = run(search, capsys)
    assert code == 0 and "grid: g.png" in stdout and "no grid" not in err, err
    query = str(work / "photos" / "c1" / "0.png")
    code, stdout, err = run(["search", "index.npz", "--images", query, "--grid", "q.png"], capsys)
    assert code == 0 and "grid: q.png" in stdout, err

    shutil.move(work / "photos", tmp_path / "moved")
    (elsewhere / "g.png").unlink()
    code, _, err = run(search, capsys)
    assert code == 0 and "no grid: the items are not image files under" in err
    assert "--dataset" in err and not (elsewhere / "g.png").exists()
    code, stdout, err = run([*search, "--dataset", f"imagefolder:{tmp_path / 'moved'}"], capsys)
    assert code == 0 and "grid: g.png" in stdout, err
