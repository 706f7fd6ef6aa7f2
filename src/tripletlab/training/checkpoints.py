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
from collections.abc import Mapping, Sequence
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no code runs)."""
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; start a new run without --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise TrainingError(
            f"checkpoint {path} is unreadable ({type(err).__name__}); resume from another run "
            "folder or start a new run"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path} is not a tripletlab checkpoint (version {CHECKPOINT_VERSION})")
    return ckpt
