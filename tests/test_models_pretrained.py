"""tripletlab.models.pretrained: torchvision-style weight files downloaded from a server on
127.0.0.1 into torch's hub cache and checked by the digest prefix in their names, local
``.pth`` and ``.safetensors`` files, and every bad input as one line with nothing kept: a
checksum mismatch, another architecture, a pickle with code (never run), NaN weights.

The served files are state dicts made here of the right architecture (with torchvision's
``fc`` classifier), named after the start of their own SHA-256 digest as torchvision names
its files; :data:`IMAGENET_FILES` is pointed at them for the test.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch
from http_helpers import serve_folder
from models_helpers import one_thread_fixture  # noqa: F401 - every test on one thread
from torch import Tensor, nn

from tripletlab.models import (
    IMAGENET_FILES,
    WEIGHTS_URL_ENV,
    ResNet,
    WeightsError,
    build_model,
    imagenet_weights_file,
    load_pretrained,
    read_weights,
    weights_cache_dir,
)


def backbone(name: str = "resnet18", *, small: bool = False) -> ResNet:
    net = build_model(name, in_channels=3, image_size=32 if small else 64).backbone
    assert isinstance(net, ResNet)
    return net


def torchvision_like_weights(name: str = "resnet18", seed: int = 1) -> dict[str, Tensor]:
    """A state dict as torchvision saves it: the backbone's names plus ``fc``, seeded values."""
    torch.manual_seed(seed)
    net = backbone(name)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for value in state.values():
        if value.is_floating_point():
            value.normal_()
    state["fc.weight"] = torch.randn(1000, net.feature_dim)
    state["fc.bias"] = torch.randn(1000)
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_weights(net: nn.Module, state: dict[str, Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Tensor]]:
    """A served folder holding resnet18 weights named ``resnet18-<digest prefix>.pth``
    (IMAGENET_FILES pointed at it), and torch's hub folder under tmp_path."""
    folder = tmp_path / "served"
    folder.mkdir()
    state = torchvision_like_weights()
    file = folder / "weights.pth"
    torch.save(state, file)
    name = f"resnet18-{sha256(file)[:8]}.pth"
    file.rename(folder / name)
    monkeypatch.setitem(IMAGENET_FILES, "resnet18", name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_URL_ENV, raising=False)
    return folder, state


def test_imagenet_weights_download_into_the_hub_cache_and_load(
    served: tuple[Path, dict[str, Tensor]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, state = served
    cache = weights_cache_dir()
    assert cache == tmp_path / "torch" / "hub" / "checkpoints"
    net = backbone()
    with serve_folder(folder) as base:
        monkeypatch.setenv(WEIGHTS_URL_ENV, base)
        path = load_pretrained(net, "resnet18", "imagenet")
    assert path == cache / IMAGENET_FILES["resnet18"]
    assert sorted(cache.iterdir()) == [path]  # no temporary left beside it
    assert same_weights(net, state)  # fc left out
    # the server is gone: the cached, verified file is used as it is
    again = backbone()
    assert load_pretrained(again, "resnet18", "imagenet") == path
    assert same_weights(again, state)


def test_base_url_parameter_and_a_missing_file(served: tuple[Path, dict[str, Tensor]]) -> None:
    folder, _ = served
    with serve_folder(folder) as base:
        path = imagenet_weights_file("resnet18", base_url=base.rstrip("/"))
        assert path.is_file()
        with pytest.raises(WeightsError) as err:
            imagenet_weights_file("resnet34", base_url=base)
    message = str(err.value)
    assert "\n" not in message and "HTTP 404" in message and "resnet34-b627a593.pth" in message
    assert not (weights_cache_dir() / IMAGENET_FILES["resnet34"]).exists()


def test_a_checksum_mismatch_keeps_nothing(
    served: tuple[Path, dict[str, Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = served
    name = IMAGENET_FILES["resnet18"]
    torch.save(torchvision_like_weights(seed=2), folder / name)  # other bytes, same name
    actual = sha256(folder / name)
    with serve_folder(folder) as base, pytest.raises(WeightsError) as err:
        load_pretrained(backbone(), "resnet18", "imagenet", base_url=base)
    message = str(err.value)
    assert "\n" not in message and actual in message and name.split("-")[1][:8] in message
    cache = weights_cache_dir()
    assert not cache.exists() or list(cache.iterdir()) == []  # deleted, not used


def test_a_corrupted_cached_file_is_downloaded_again(
    served: tuple[Path, dict[str, Tensor]],
) -> None:
    folder, state = served
    cached = weights_cache_dir() / IMAGENET_FILES["resnet18"]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    net = backbone()
    with serve_folder(folder) as base:
        load_pretrained(net, "resnet18", "imagenet", base_url=base)
    assert same_weights(net, state)
    assert sha256(cached) == sha256(folder / IMAGENET_FILES["resnet18"])


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_local_weight_files(tmp_path: Path, suffix: str) -> None:
    state = torchvision_like_weights()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    else:
        torch.save(state, path)
    net = backbone()
    assert load_pretrained(net, "resnet18", str(path)) == path
    assert same_weights(net, state)


def test_a_checkpoint_holding_its_state_dict_under_a_key(tmp_path: Path) -> None:
    state = torchvision_like_weights()
    torch.save({"state_dict": state, "epoch": 90}, tmp_path / "ckpt.pth")
    assert read_weights(tmp_path / "ckpt.pth").keys() == state.keys()


def test_resnet34_and_resnet50_files_load(tmp_path: Path) -> None:
    for name in ("resnet34", "resnet50"):
        state = torchvision_like_weights(name)
        torch.save(state, tmp_path / f"{name}.pth")
        net = backbone(name)
        load_pretrained(net, name, str(tmp_path / f"{name}.pth"))
        assert same_weights(net, state)


def test_another_architecture_is_one_line_naming_the_first_differences(tmp_path: Path) -> None:
    torch.save(torchvision_like_weights("resnet50"), tmp_path / "r50.pth")
    net = backbone("resnet18")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        load_pretrained(net, "resnet18", str(tmp_path / "r50.pth"))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "r50.pth") in message
    assert "not in the model (layer1.0.conv3.weight; layer1.0.bn3.weight;" in message
    assert (
        "layer1.0.conv1.weight (64, 64, 1, 1) in the file, (64, 64, 3, 3) in the model" in message
    )
    assert "and " in message and "more" in message  # counted, not all listed
    assert same_weights(net, before)  # untouched


def test_resnet18_weights_miss_resnet34_blocks(tmp_path: Path) -> None:
    torch.save(torchvision_like_weights("resnet18"), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"not in the file \(layer1\.2\.conv1\.weight"):
        load_pretrained(backbone("resnet34"), "resnet34", str(tmp_path / "r18.pth"))


def test_the_small_stem_or_grey_input_says_to_use_the_standard_stem(tmp_path: Path) -> None:
    torch.save(torchvision_like_weights(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"conv1 differs: .* standard 7x7 stem and 3 channels"):
        load_pretrained(backbone(small=True), "resnet18", str(tmp_path / "r18.pth"))
    grey = build_model("resnet18", in_channels=1, standard_stem=True).backbone
    with pytest.raises(WeightsError, match=r"conv1\.weight \(64, 3, 7, 7\) in the file"):
        load_pretrained(grey, "resnet18", str(tmp_path / "r18.pth"))


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: code that must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    # the payload is real: a plain unpickler runs it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe))).close()
    assert probe.exists()
    marker = tmp_path / "marker"
    state: dict[str, object] = dict(torchvision_like_weights())
    state["extra"] = _Payload(marker)
    torch.save(state, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as err:
        load_pretrained(backbone(), "resnet18", str(tmp_path / "evil.pth"))
    message = str(err.value)
    assert "\n" not in message and "without running them (Unsupported global" in message
    assert "io.open" in message and "add_safe_globals" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: p.write_bytes(b"not a zip"), r"cannot read .* as a torch weights file \(Unsup"),
        (lambda p: torch.save([1, 2], p), "holds no state_dict"),
        (lambda p: torch.save({"a": 1}, p), "1 entries that are not named tensors"),
        (lambda p: torch.save({"w": torch.tensor([float("nan")])}, p), "NaN or infinite .* w"),
    ],
)
def test_unusable_files_are_one_line(tmp_path: Path, write: object, match: str) -> None:
    path = tmp_path / "w.pth"
    write(path)  # type: ignore[operator]
    with pytest.raises(WeightsError, match=match) as err:
        read_weights(path)
    assert "\n" not in str(err.value)


def test_missing_files_and_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        read_weights(tmp_path / "absent.pth")
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"expected a \.pth, \.pt, \.safetensors file"):
        read_weights(tmp_path / "w.bin")
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(WeightsError, match=r"cannot read .* as safetensors"):
        read_weights(tmp_path / "w.safetensors")


def test_models_without_pretrained_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown pretrained model 'small'"):
        load_pretrained(build_model("small").backbone, "small", "imagenet")
