"""``tripletlab train --pretrained``, end to end on scikit-learn's digits with a ResNet-18:
weights from a local ``.safetensors`` file and from a download (a server on 127.0.0.1 into
torch's hub cache), the frozen backbone and BatchNorm statistics across a resume, evaluate
without the weights file, and every bad weights file as one line, exit 2 and no run folder.

The weights are made here (torchvision's names with an ``fc`` head, seeded values), as in
``test_models_pretrained.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_helpers import run
from http_helpers import serve_folder
from torch import Tensor

from tripletlab import distributed
from tripletlab.models import IMAGENET_FILES, WEIGHTS_URL_ENV, ResNet, build_model
from tripletlab.training import SilentReporter
from tripletlab.training.config import config_from_dict
from tripletlab.training.frozen import backbone_features
from tripletlab.training.loop import prepare_batch
from tripletlab.training.run import _set_up

TINY = ["--dataset", "digits", "--model", "resnet18", "--val-size", "100"]
TINY += ["--seed", "0", "--amp", "off", "--no-report", "-p", "4", "-k", "4"]
TINY += ["--steps-per-epoch", "3", "--eval-batch-size", "512", "--threads", "1"]


def weights(seed: int = 1, name: str = "resnet18") -> dict[str, Tensor]:
    torch.manual_seed(seed)
    net = build_model(name, in_channels=3, standard_stem=True).backbone
    assert isinstance(net, ResNet)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for value in state.values():
        if value.is_floating_point():
            value.uniform_(0.5, 1.0) if value.dim() == 1 else value.normal_(0, 0.05)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, net.feature_dim), torch.zeros(1000)
    return state


def backbone_of(run_dir: Path) -> dict[str, Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    model: dict[str, Tensor] = ckpt["model"]
    return {k[len("backbone.") :]: v for k, v in model.items() if k.startswith("backbone.")}


@pytest.mark.slow
def test_a_pretrained_run_freezes_then_fine_tunes_and_evaluates_without_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = weights()
    file = tmp_path / "r18.safetensors"
    safetensors.torch.save_file(state, file)
    out = tmp_path / "run"
    flags = ["--pretrained", str(file), "--freeze-backbone-epochs", "1", "--freeze-batchnorm"]
    flags += ["--backbone-lr-scale", "0.1"]
    code, _, err = run(["train", *TINY, *flags, "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"backbone: resnet18 from {file}; 3 channels, ImageNet's mean and std" in err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["pretrained"] == str(file)
    assert config["optim"]["freeze_backbone_epochs"] == 1
    frozen = backbone_of(out)
    assert all(torch.equal(frozen[k], state[k]) for k in frozen)  # epoch 1: the head alone
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["inference"]["channels"] == 3
    assert ckpt["inference"]["mean"] == [0.485, 0.456, 0.406]
    assert [g["lr_scale"] for g in ckpt["optimizer"]["param_groups"]] == [1.0, 0.1]
    file.unlink()  # resume and evaluate rebuild the network without the file
    code, _, err = run(["train", "--resume", str(out), "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    tuned = backbone_of(out)
    assert not torch.equal(tuned["conv1.weight"], state["conv1.weight"])  # epoch 2 trains it
    stats = [k for k in tuned if "running_" in k]
    assert stats and all(torch.equal(tuned[k], state[k]) for k in stats)  # --freeze-batchnorm
    code, _, err = run(["evaluate", str(out), "--no-baselines", "--quiet"], capsys)
    assert code == 0, err


@pytest.mark.slow
def test_imagenet_weights_download_once_into_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    torch.save(weights(), served / "w.pth")
    name = f"resnet18-{hashlib.sha256((served / 'w.pth').read_bytes()).hexdigest()[:8]}.pth"
    (served / "w.pth").rename(served / name)
    monkeypatch.setitem(IMAGENET_FILES, "resnet18", name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "run"
    argv = ["train", *TINY, "--pretrained", "imagenet", "--epochs", "1", "--out", str(out)]
    with serve_folder(served) as base:
        monkeypatch.setenv(WEIGHTS_URL_ENV, base)
        code, _, err = run(argv, capsys)
    assert code == 0, err
    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert f"backbone: resnet18 from {cached}" in err
    assert sorted(cached.parent.iterdir()) == [cached]
    assert json.loads((out / "config.json").read_text())["model"]["pretrained"] == "imagenet"


def _evil(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return open, (str(marker), "w")

    torch.save({**weights(), "extra": Payload()}, path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p, m: torch.save(weights(name="resnet34"), p),
            "does not fit the model: 96 not in the model (layer1.2.conv1.weight;",
        ),
        (_evil, "holds objects other than tensors, which torch.load(weights_only=True) refused"),
        (lambda p, m: torch.save([1, 2], p), "holds no state_dict"),
    ],
)
def test_a_bad_weights_file_stops_the_run_in_one_line(
    make: object, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker, out = tmp_path / "w.pth", tmp_path / "marker", tmp_path / "run"
    make(path, marker)  # type: ignore[operator]
    argv = ["train", *TINY, "--pretrained", str(path), "--epochs", "1", "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("tripletlab: error: ") and message in line
    assert not marker.exists() and not out.exists()


def test_a_download_of_other_bytes_is_deleted_and_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    name = "resnet18-0123abcd.pth"
    torch.save(weights(), served / name)
    monkeypatch.setitem(IMAGENET_FILES, "resnet18", name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "run"
    argv = ["train", *TINY, "--pretrained", "imagenet", "--epochs", "1", "--out", str(out)]
    with serve_folder(served) as base:
        monkeypatch.setenv(WEIGHTS_URL_ENV, base)
        code, _, err = run(argv, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "resnet18's ImageNet weights: could not download resnet18-0123abcd.pth" in line
    assert "expected 0123abcd" in line
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert not cache.exists() or list(cache.iterdir()) == []
    assert not out.exists()


@pytest.mark.slow
def test_a_frozen_backbone_trains_the_head_on_cached_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = weights()
    file = tmp_path / "r18.safetensors"
    safetensors.torch.save_file(state, file)
    cache = tmp_path / "cache"
    flags = ["--pretrained", str(file), "--frozen-backbone", "--frozen-views", "2"]
    flags += ["--cache-dir", str(cache), "--epochs", "2"]
    out = tmp_path / "run"
    code, _, err = run(["train", *TINY, *flags, "--out", str(out)], capsys)
    assert code == 0, err
    # computed and cached: the training images (2 views) and the validation images; the
    # validation gallery (training images, same-class validation on digits) is their view 0
    assert len(re.findall(r"backbone features of [\d,]+ images x \d view\(s\): done", err)) == 2
    assert len(list((cache / "features").glob("*.pt"))) == 2
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    backbone = backbone_of(out)
    assert all(torch.equal(backbone[k], state[k]) for k in backbone)  # BatchNorm stats too
    first = json.loads((out / "metrics.json").read_text())
    # The same run again reads the features back, and trains to the same head.
    again = tmp_path / "again"
    code, _, err = run(["train", *TINY, *flags, "--out", str(again)], capsys)
    assert code == 0, err
    assert "backbone features of" not in err
    head = torch.load(again / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(head["projection.weight"], ckpt["model"]["projection.weight"])
    second = json.loads((again / "metrics.json").read_text())
    assert second["map_at_r"] == first["map_at_r"]
    # A resume continues on the cached features; evaluate needs neither them nor the file.
    file.unlink()
    code, _, err = run(["train", "--resume", str(out), "--epochs", "3", "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run(["evaluate", str(out), "--no-baselines", "--quiet"], capsys)
    assert code == 0, err


def test_a_frozen_backbone_needs_pretrained_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, _, err = run(["train", *TINY, "--frozen-backbone", "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "frozen-backbone" in err and "--pretrained" in err and not out.exists()


def test_a_frozen_backbones_validation_gallery_is_rows_of_the_training_features(
    tmp_path: Path,
) -> None:
    file = tmp_path / "r18.safetensors"
    safetensors.torch.save_file(weights(), file)
    flat = {"dataset": "digits", "model": "resnet18", "pretrained": str(file), "seed": 0}
    flat |= {"frozen_backbone": True, "val_size": 100, "amp": "off", "epochs": 1}
    flat |= {"cache_dir": str(tmp_path / "cache"), "eval_batch_size": 512}
    config = config_from_dict(flat).resolved()
    run = _set_up(config, tmp_path / "run", distributed.ranks(), SilentReporter(), fresh=True)
    assert run.frozen is not None and run.gallery is not None
    # the gallery's features computed apart, from its own images, as the backbone sees them
    stats = (run.splits.mean, run.splits.std)
    own = backbone_features(
        run.model.backbone,
        run.gallery.images,
        views=1,
        prepare=lambda x, g: prepare_batch(x, config, stats, run.device, g),
        generator=torch.Generator(),
        batch_size=512,
    )[0]
    assert run.frozen.gallery is not None and run.frozen.gallery.shape == own.shape
    # float16 features of the same images in float32 (batches of other rows): equal to a few
    # float16 ulps at most
    torch.testing.assert_close(run.frozen.gallery.float(), own.float(), rtol=2e-3, atol=2e-3)
