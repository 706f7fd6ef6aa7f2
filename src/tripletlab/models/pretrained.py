"""Pretrained backbones: torchvision's ImageNet weights of ResNet-18/34/50 downloaded into
torch's hub cache and checked (:func:`imagenet_weights_file`), weight files read without
running any code (:func:`read_weights`: ``.pth``/``.pt`` with ``torch.load(weights_only=True)``,
``.safetensors`` with safetensors), and their names and shapes checked against a backbone
before they are loaded (:func:`load_backbone_weights`; :func:`load_pretrained` does all three).

The weights are torchvision's ``IMAGENET1K_V1`` files (He et al. 2016's networks trained on
ImageNet-1k by torchvision), whose ``state_dict`` keys are those of
:class:`~tripletlab.models.ResNet` plus the classifier ``fc.weight`` and ``fc.bias``, which
are left out. Images for them are RGB, scaled to [0, 1] and normalised with
:data:`IMAGENET_MEAN` and :data:`IMAGENET_STD`.

Checksums: torch.hub names each file after the first hex digits of its SHA-256 digest
(``resnet18-f37072fd.pth``) and checks that the downloaded file's digest starts with them
(``torch.hub.check_hash``); the full digests are not published next to the files, so the
same prefix check is done here (8 hex digits: 32 bits against a corrupted or substituted
download, no protection against a deliberate collision; the file is then read with
``weights_only=True``, so even a forged file cannot run code).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from tripletlab.checks import check_choice
from tripletlab.download import DownloadError, download_file

__all__ = [
    "IMAGENET_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRETRAINED_MODELS",
    "WEIGHTS_SUFFIXES",
    "WEIGHTS_URL",
    "WEIGHTS_URL_ENV",
    "PretrainedModel",
    "WeightsError",
    "imagenet_weights_file",
    "load_backbone_weights",
    "load_pretrained",
    "read_weights",
    "weights_cache_dir",
]

PretrainedModel = Literal["resnet18", "resnet34", "resnet50"]
#: The models with pretrained weights (torchvision's architectures exactly).
PRETRAINED_MODELS: tuple[PretrainedModel, ...] = get_args(PretrainedModel)

#: torchvision's ImageNet weight files (``IMAGENET1K_V1``), each named after the start of its
#: SHA-256 digest. (ResNet-50's ``IMAGENET1K_V2``, ``resnet50-11ad3fa6.pth``, fits too:
#: pass it as a file.)
IMAGENET_FILES: dict[PretrainedModel, str] = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
}
#: Where torchvision's files are served; :data:`WEIGHTS_URL_ENV` or ``base_url`` override it.
WEIGHTS_URL = "https://download.pytorch.org/models/"
#: The environment variable naming another base URL (a mirror, or a local server in tests).
WEIGHTS_URL_ENV = "TRIPLETLAB_WEIGHTS_URL"

#: ImageNet's per-channel mean and standard deviation (RGB, images scaled to [0, 1]), the
#: normalisation the pretrained weights expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: How a weight file is read, by suffix.
WeightsFormat = Literal["torch", "safetensors"]
WEIGHTS_SUFFIXES: dict[str, WeightsFormat] = {
    ".pth": "torch",
    ".pt": "torch",
    ".safetensors": "safetensors",
}
# Keys of the file that are not the backbone's: torchvision's ImageNet classifier.
_HEAD_KEYS = frozenset({"fc.weight", "fc.bias"})
# torch.hub's rule for the digest in a file name (torch.hub.HASH_REGEX).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
# Differences named in a mismatch's one line, per kind.
_SHOWN = 3


class WeightsError(ValueError):
    """Weights that cannot be used: not downloaded, unreadable, holding code, or of another
    architecture; one line naming the file, the problem and the fix."""


def weights_cache_dir() -> Path:
    """torch.hub's folder of downloaded weights, ``torch.hub.get_dir()/checkpoints``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), where
    torchvision keeps the same files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_file(
    name: str, *, base_url: str | None = None, cache_dir: Path | None = None
) -> Path:
    """The ImageNet weight file of ``name``, downloaded when the cache does not hold it.

    The file goes to ``cache_dir / IMAGENET_FILES[name]`` through a temporary file that is
    renamed only once its SHA-256 digest starts with the prefix in its name (torch.hub's
    check; see the module); a file already there that passes the check is used as it is.

    Args:
        name: one of :data:`PRETRAINED_MODELS`.
        base_url: where the files are served (with or without the last ``/``); default
            ``$TRIPLETLAB_WEIGHTS_URL``, else :data:`WEIGHTS_URL`.
        cache_dir: default :func:`weights_cache_dir`.

    Raises:
        ValueError: an unknown ``name`` (listing the valid ones).
        WeightsError: the download failed or served other bytes (nothing is kept under the
            file's name).
    """
    model = check_choice("pretrained model", name, PRETRAINED_MODELS)
    file = IMAGENET_FILES[model]
    base = base_url or os.environ.get(WEIGHTS_URL_ENV) or WEIGHTS_URL
    found = _HASH_IN_NAME.search(file)
    assert found is not None  # every name in IMAGENET_FILES carries its digest's prefix
    dest = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    try:
        return download_file([base.rstrip("/") + "/" + file], dest / file, found.group(1))
    except DownloadError as err:
        raise WeightsError(
            f"{model}'s ImageNet weights: {err}; fix: check the network (or ${WEIGHTS_URL_ENV}), "
            f"or download {WEIGHTS_URL}{file} elsewhere and pass the file"
        ) from err


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a weight file, without running any code it may hold.

    ``.pth``/``.pt``: ``torch.load(weights_only=True)``, which builds tensors and plain
    containers only and refuses any other object (a pickle whose ``__reduce__`` would call a
    function is refused before the call). ``.safetensors``: read by safetensors (no pickle
    at all). A checkpoint that nests its state dict under ``"state_dict"`` or ``"model"`` is
    unwrapped.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        WeightsError: no such file, another suffix, a file that cannot be read or that
            holds objects other than tensors, no tensors, or NaN/Inf values (one line).
    """
    path = Path(path)
    kind = WEIGHTS_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise WeightsError(
            f"weights {path}: expected a {', '.join(WEIGHTS_SUFFIXES)} file; fix: save a "
            "state_dict with torch.save or safetensors.torch.save_file"
        )
    if not path.is_file():
        raise WeightsError(f"weights {path}: no such file")
    if kind == "safetensors":
        try:
            raw: object = safetensors.torch.load_file(path)
        except (safetensors.SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"cannot read {path} as safetensors ({_line(err)})") from None
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            text = str(err)
            found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
            detail = found.group(1).split(" Please use ")[0].strip() if found else _line(err)
            if "Unsupported global" in text:  # an object the file would build by a call
                raise WeightsError(
                    f"{path} holds objects other than tensors, which torch.load(weights_only="
                    f"True) refused without running them ({detail}); fix: use a file of "
                    "tensors only (a state_dict, or .safetensors)"
                ) from None
            raise WeightsError(f"cannot read {path} as a torch weights file ({detail})") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
            raise WeightsError(
                f"cannot read {path} as a torch weights file ({_line(err)})"
            ) from None
    return _state_dict(raw, path)


def _line(err: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def _state_dict(raw: object, path: Path) -> dict[str, Tensor]:
    """``{name: tensor}`` of what a file held (see :func:`read_weights`)."""
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise WeightsError(f"{path} holds no state_dict (name -> tensor), got {type(raw).__name__}")
    bad = [str(k) for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{path} holds {len(bad)} entries that are not named tensors "
            f"({', '.join(bad[:_SHOWN])})"
        )
    weights = {str(k): v for k, v in raw.items()}
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{path} holds NaN or infinite values in {key}")
    return weights


def _differences(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> list[str]:
    """What keeps ``given`` from loading into a module of ``state_dict`` ``expected``: names
    missing, names unexpected (torchvision's ``fc.*`` and BatchNorm's ``num_batches_tracked``,
    which torch fills in, are neither), shapes that differ; at most :data:`_SHOWN` of each."""
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected and k not in _HEAD_KEYS]
    shapes = [
        f"{k} {tuple(given[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    parts = []
    for label, names in (
        ("not in the file", missing),
        ("not in the model", unexpected),
        ("of another shape", shapes),
    ):
        if names:
            more = f", and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label} ({'; '.join(names[:_SHOWN])}{more})")
    return parts


def load_backbone_weights(backbone: nn.Module, weights: Mapping[str, Tensor], source: str) -> None:
    """Copy ``weights`` into ``backbone`` once every name and shape fits.

    ``weights`` must hold exactly ``backbone``'s ``state_dict`` names and shapes, except for
    torchvision's classifier (``fc.weight``, ``fc.bias``: ignored) and BatchNorm's
    ``num_batches_tracked`` counters (may be absent). Values are copied (cast to each
    parameter's dtype); ``backbone`` is left unchanged when anything differs.

    Args:
        backbone: e.g. a :class:`~tripletlab.models.ResNet` built with the standard stem
            and 3 input channels.
        weights: ``{name: tensor}``, e.g. from :func:`read_weights`.
        source: what the weights are called in the error (a path, "resnet18's ImageNet
            weights").

    Raises:
        WeightsError: one line naming the first differences of each kind (names missing
            from the file, names the model lacks, shapes), with their counts.
    """
    expected = backbone.state_dict()
    problems = _differences(expected, weights)
    if problems:
        stem = weights.get("conv1.weight")
        hint = (
            " (conv1 differs: pretrained weights need the standard 7x7 stem and 3 channels)"
            if stem is not None
            and "conv1.weight" in expected
            and stem.shape != expected["conv1.weight"].shape
            else ""
        )
        raise WeightsError(
            f"{source} does not fit the model: {', '.join(problems)}{hint}; fix: pass weights "
            "of the same architecture with torchvision's names"
        )
    state = {k: v for k, v in weights.items() if k in expected}
    backbone.load_state_dict(state, strict=False)  # every key checked above


def load_pretrained(
    backbone: nn.Module,
    name: str,
    source: str,
    *,
    base_url: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Load pretrained weights into ``backbone`` (the ``name`` model's):
    ``source="imagenet"`` downloads torchvision's file (:func:`imagenet_weights_file`),
    any other ``source`` is a weight file's path (:func:`read_weights`).

    Returns:
        The file the weights came from.

    Raises:
        ValueError: an unknown ``name``.
        WeightsError: see :func:`imagenet_weights_file`, :func:`read_weights` and
            :func:`load_backbone_weights`.
    """
    check_choice("pretrained model", name, PRETRAINED_MODELS)
    if source == "imagenet":
        path = imagenet_weights_file(name, base_url=base_url, cache_dir=cache_dir)
        shown = f"{name}'s ImageNet weights ({path})"
    else:
        path, shown = Path(source), source
    load_backbone_weights(backbone, read_weights(path), shown)
    return path
