"""The checkpoints :func:`~tripletlab.training.fit` writes (atomically, with
:func:`tripletlab.io.atomic_torch_save`) and reads, and the :class:`InferenceSpec` each one
carries: everything needed to use the model without its training data.

A checkpoint is a dict (read with ``weights_only=True``: tensors, numbers, strings, lists
and dicts only) with ``version``, ``config`` (the resolved run config), ``model``,
``optimizer``, ``scheduler``, the random generators' states, ``epoch``, ``step``, ``best``,
``history``, ``train_seconds``, ``world_size`` and, since this version, ``inference``
(:meth:`InferenceSpec.to_dict`). Checkpoints written before ``inference`` existed still load;
their users recompute the spec from the run's dataset
(:func:`tripletlab.evaluation.load_run`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tripletlab.checks import nonfinite_rows
from tripletlab.training.errors import TrainingError

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class InferenceSpec:
    """What using a trained model needs, stored in each of its checkpoints.

    Attributes:
        channels, image_size: the input images, ``(channels, image_size, image_size)`` uint8.
        mean, std: the per-channel normalisation ``(x / 255 - mean) / std`` of the training
            split, one value per channel.
        classes: the training dataset's class names (label ``i`` is ``classes[i]``).
        embedding_dim: D of the output; ``normalized``: whether rows are L2-normalised.
        distance: the distance the run trained with.
        tta: embed with flip test-time augmentation; ``amp``: the bfloat16 policy
            (``auto|on|off``, resolved on the machine that embeds).
    """

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    embedding_dim: int
    normalized: bool
    distance: str
    tta: bool
    amp: str

    def __post_init__(self) -> None:
        if self.channels < 1 or self.image_size < 1 or self.embedding_dim < 1:
            raise ValueError(
                f"channels, image size and embedding dimension must be >= 1, got "
                f"{self.channels}, {self.image_size}, {self.embedding_dim}"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(v) for v in self.mean) or not all(
            math.isfinite(v) and v > 0 for v in self.std
        ):
            raise ValueError(f"bad normalisation: mean {self.mean}, std {self.std}")

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``, as :func:`tripletlab.data.normalize` takes them."""
        return self.mean, self.std

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the input images."""
        return self.channels, self.image_size, self.image_size

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), as a ``weights_only`` checkpoint holds."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InferenceSpec:
        """The spec :meth:`to_dict` wrote.

        Raises:
            ValueError: a missing key or a value of the wrong type (one line).
        """
        try:
            return cls(
                channels=int(raw["channels"]),
                image_size=int(raw["image_size"]),
                mean=_floats(raw["mean"]),
                std=_floats(raw["std"]),
                classes=tuple(str(c) for c in raw["classes"]),
                embedding_dim=int(raw["embedding_dim"]),
                normalized=bool(raw["normalized"]),
                distance=str(raw["distance"]),
                tta=bool(raw["tta"]),
                amp=str(raw["amp"]),
            )
        except KeyError as err:
            raise ValueError(f"the inference spec lacks {err}") from None
        except TypeError as err:
            raise ValueError(f"the inference spec is malformed ({err})") from None


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating parameters and buffers that hold a NaN or an Inf
    (in ``state_dict`` order; BatchNorm's ``running_var`` is a buffer)."""
    return [
        name
        for name, t in module.state_dict().items()
        if t.dtype.is_floating_point and nonfinite_rows(t.detach().reshape(1, -1)) > 0
    ]


#: What every reader of a checkpoint needs: the model, how it was built and trained.
MODEL_KEYS = ("config", "model", "epoch", "history")
#: What resuming a run needs besides: the optimiser, the schedule, the random states.
RESUME_KEYS = (
    *MODEL_KEYS,
    *("optimizer", "scheduler", "aug_rng", "miner_rng", "step", "best", "train_seconds"),
)


def _is_weights(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


# The keys whose type load_checkpoint checks: a test of the value and what it must be.
_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "config": (lambda v: isinstance(v, Mapping), "a dict"),
    "model": (_is_weights, "a dict of tensors"),
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "history": (lambda v: isinstance(v, list), "a list"),
}


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in a few words (never torch's message: it suggests
    loading with ``weights_only=False``, which would run the file's code)."""
    if path.stat().st_size == 0:
        return "an empty file"
    if "Weights only load failed" in str(err):
        return "it holds Python objects besides tensors and plain data, which are never loaded"
    return f"{type(err).__name__}: damaged, truncated or not a PyTorch checkpoint"


def load_checkpoint(path: Path, keys: Sequence[str] = MODEL_KEYS) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no code runs) and
    check that it holds ``keys`` (:data:`MODEL_KEYS`; :data:`RESUME_KEYS` to resume), those
    of :data:`MODEL_KEYS` of the right type.

    Raises:
        TrainingError: one line: no such file; an unreadable file; not a tripletlab
            checkpoint; missing keys (named) or a key of the wrong type.
    """
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; start a new run without --resume")
    try:
        with warnings.catch_warnings():  # a stderr line beside the error's, for a foreign file
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise TrainingError(
            f"checkpoint {path} is unreadable ({_unreadable(path, err)}); use another "
            "checkpoint or start a new run"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path} is not a tripletlab checkpoint (version {CHECKPOINT_VERSION})")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise TrainingError(
            f"checkpoint {path} lacks {', '.join(missing)} (damaged, or not written by "
            "tripletlab train); use another checkpoint"
        )
    for key, (test, kind) in _KINDS.items():
        if key in keys and not test(ckpt[key]):
            raise TrainingError(
                f"checkpoint {path} is damaged: its {key} is not {kind}; use another checkpoint"
            )
    return ckpt
