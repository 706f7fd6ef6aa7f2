"""Loading a trained run: :func:`load_run` rebuilds its model from a run folder or one
``.pt`` checkpoint, :func:`run_data` applies its data protocol (class split, validation
hold-out, image size, seed) to a dataset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tripletlab.data import DataError, ImageSet, Splits
from tripletlab.models import EmbeddingModel, build_model
from tripletlab.training import (
    TrainConfig,
    TrainingError,
    config_from_dict,
    load_checkpoint,
    pick_device,
    prepare_data,
)


@dataclass(frozen=True)
class LoadedRun:
    """A trained model with what it was trained on.

    Attributes:
        model: the network in eval mode on ``device``, the checkpoint's weights loaded.
        config: the run's saved (resolved) config.
        checkpoint: the ``.pt`` file the weights came from.
        run_dir: the run folder (holding ``config.json``, ``checkpoints/``), or ``None`` for a
            checkpoint outside one.
        epoch: epochs trained when the checkpoint was written.
        history: per-epoch training records up to then.
        image_shape: ``(C, H, W)`` of the images it was trained on.
        num_classes: outputs of the softmax head, ``None`` without one.
        device: where the model is.
    """

    model: EmbeddingModel
    config: TrainConfig
    checkpoint: Path
    run_dir: Path | None
    epoch: int
    history: list[dict[str, Any]]
    image_shape: tuple[int, int, int]
    num_classes: int | None
    device: torch.device


def _trained_image_size(config: TrainConfig) -> int:
    """Side of the images a run trained on: ``load_dataset`` resizes to ``image_size``,
    except ``digits``, which stays 8x8."""
    return 8 if config.data.dataset.strip() == "digits" else config.data.image_size


def _find_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """``(checkpoint, run folder or None)`` for a run folder or a ``.pt`` file."""
    if path.is_file():
        folder = path.parent.parent
        in_run = path.parent.name == "checkpoints" and (folder / "config.json").is_file()
        return path, folder if in_run else None
    if not path.is_dir():
        raise TrainingError(
            f"{path} is neither a run folder nor a checkpoint file; pass the --out folder "
            "of a `tripletlab train` run or a .pt checkpoint"
        )
    best = path / "checkpoints" / "best.pt"
    if best.is_file():
        return best, path
    if (path / "checkpoints" / "last.pt").is_file():
        raise TrainingError(
            f"run folder {path} has no checkpoints/best.pt yet (the run stopped in its first "
            f"epoch); finish it with `tripletlab train --resume {path}` or pass "
            f"{path / 'checkpoints' / 'last.pt'}"
        )
    runs = sorted(p.parent.parent for p in path.glob("*/checkpoints/best.pt"))
    hint = (
        f"; it holds runs, e.g. {runs[-1]}"
        if runs
        else "; train one with `tripletlab train --out FOLDER` and pass FOLDER"
    )
    raise TrainingError(
        f"run folder {path} holds no checkpoint (looked for {best}){hint}, or pass a .pt checkpoint"
    )


def load_run(path: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load the model of a run folder (its ``checkpoints/best.pt``) or of a checkpoint file.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs) by
    :func:`tripletlab.training.load_checkpoint`; the network is rebuilt from the config
    saved in it (its input channels and head size from the weights).

    Raises:
        tripletlab.training.TrainingError: no such folder or file, a folder without a
            checkpoint (the message says where to look), an unreadable checkpoint, weights
            that do not fit the config.
        ValueError: an unusable device or config.
    """
    ckpt_path, run_dir = _find_checkpoint(Path(path))
    ckpt = load_checkpoint(ckpt_path)
    config = config_from_dict(dict(ckpt["config"])).resolved()
    state: dict[str, Tensor] = ckpt["model"]
    convs = [t for t in state.values() if t.dim() == 4]  # the first is the input convolution
    if not convs:
        raise TrainingError(f"{ckpt_path} holds no convolution weights; not a tripletlab model")
    head = state.get("classifier.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    size = _trained_image_size(config)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = build_model(
        config.model.name,
        in_channels=int(convs[0].shape[1]),
        image_size=size,
        embedding_dim=config.model.embedding_dim,
        width=config.model.width,
        normalize=config.model.normalize_embeddings,
        num_classes=num_classes,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise TrainingError(
            f"the weights in {ckpt_path} do not fit a {config.model.name!r} model built from its "
            f"config ({first})"
        ) from None
    model = model.to(dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.eval()
    return LoadedRun(
        model=model,
        config=config,
        checkpoint=ckpt_path,
        run_dir=run_dir,
        epoch=int(ckpt["epoch"]),
        history=list(ckpt["history"]),
        image_shape=(int(convs[0].shape[1]), size, size),
        num_classes=num_classes,
        device=dev,
    )


def run_config(
    run: LoadedRun, *, dataset: str | None = None, data_dir: str | None = None
) -> TrainConfig:
    """The run's config with ``dataset`` and ``data_dir`` replaced (default: the run's) and
    the image size of the images the model trained on."""
    data = run.config.data
    return replace(
        run.config,
        data=replace(
            data,
            dataset=dataset if dataset is not None else data.dataset,
            data_dir=data_dir if data_dir is not None else data.data_dir,
            image_size=run.image_shape[1],  # image folders (and IDX files) resized to the model's
        ),
    )


def check_image_shape(run: LoadedRun, config: TrainConfig, splits: Splits, fix: str) -> None:
    """Raise :class:`~tripletlab.data.DataError` (ending with ``fix``) when the images of
    ``splits`` are not of the shape the run's model trained on."""
    shape = tuple(splits.train.images.shape[1:])
    if shape != run.image_shape:
        c, h, w = shape
        rc, rh, rw = run.image_shape
        raise DataError(
            f"{config.data.dataset} has {c}-channel {h}x{w} images but {run.checkpoint} was "
            f"trained on {rc}-channel {rh}x{rw} images ({run.config.data.dataset}); {fix}"
        )


def run_data(
    run: LoadedRun, *, dataset: str | None = None, data_dir: str | None = None
) -> tuple[TrainConfig, Splits, ImageSet | None]:
    """The run's data protocol applied to ``dataset`` (default: the run's own).

    The run's class split, validation hold-out, image size (that of the images it trained
    on) and seed are applied to ``dataset`` exactly as
    :func:`tripletlab.training.prepare_data` did at training time, so the run's own dataset
    gives back its training, validation and test sets and its
    normalisation. Another dataset is normalised with its own training statistics (for the
    same data in another place, e.g. ``imagefolder:NEWPATH``, that is the same thing).

    Returns:
        ``(config, splits, validation)``: the config with ``dataset`` and ``data_dir``
        replaced, the splits (training without the validation items), the validation set.

    Raises:
        tripletlab.data.DataError: unloadable data; images of another shape than the run
            trained on; a softmax head with another class count; class ids of the run's
            class split that the dataset lacks.
    """
    config = run_config(run, dataset=dataset, data_dir=data_dir)
    splits, val = prepare_data(config)
    check_image_shape(run, config, splits, "evaluate on data of that shape")
    if run.num_classes is not None:
        need = int(splits.train.labels.max()) + 1 if len(splits.train) else 0
        if need != run.num_classes:
            raise DataError(
                f"the softmax head of {run.checkpoint} has {run.num_classes} classes but "
                f"{config.data.dataset} has {need} training classes; evaluate on a dataset with "
                "the run's classes"
            )
    return config, splits, val
