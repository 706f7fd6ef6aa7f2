"""Loading a trained run: :func:`load_run` rebuilds its model from a run folder or one
``.pt`` checkpoint with what the checkpoint says about its inputs
(:class:`~tripletlab.training.InferenceSpec`: no training data needed), :func:`run_data`
applies its data protocol (class split, validation hold-out, image size, seed) to a
dataset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tripletlab.data import DataError, ImageSet, Progress, Splits, absolute_dataset
from tripletlab.embedding import EmbedMode
from tripletlab.models import EmbeddingModel
from tripletlab.training import (
    InferenceSpec,
    TrainConfig,
    TrainingError,
    config_from_dict,
    inference_spec,
    load_checkpoint,
    pick_device,
    prepare_data,
    run_network,
    untrained_network,
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
        spec: the input shape, normalisation, class names and embedding mode stored in the
            checkpoint (recomputed from the run's dataset for checkpoints written before
            tripletlab stored it).
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
    spec: InferenceSpec

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The normalisation ``(mean, std)`` the model was trained with."""
        return self.spec.stats

    def untrained(self) -> EmbeddingModel:
        """The run's network at the initial weights of its seed, on ``device``: the
        ``untrained`` baseline, the same network as at the end of
        :func:`~tripletlab.training.fit` (:func:`tripletlab.training.untrained_network`)."""
        c, s, _ = self.image_shape
        return untrained_network(
            self.config, self.device, in_channels=c, image_size=s, num_classes=self.num_classes
        )

    def files(self) -> dict[str, Path]:
        """What no output may overwrite (for :func:`tripletlab.checks.check_not_an_input`):
        the checkpoint the model comes from and, in a run folder, every checkpoint and the
        run's records (``config.json``, ``metrics.json``, ``log.jsonl``, ``command.txt``)."""
        files = {"the checkpoint the model is loaded from": self.checkpoint}
        if self.run_dir is not None:
            for name in ("config.json", "log.jsonl", "command.txt"):
                files[f"the run's {name}"] = self.run_dir / name
            files["the training's metrics.json"] = self.run_dir / "metrics.json"
            for ckpt in sorted((self.run_dir / "checkpoints").glob("*.pt")):
                files[f"the run's checkpoint {ckpt.name}"] = ckpt
        return files

    def embed_mode(self, batch_size: int | None = None) -> EmbedMode:
        """How to embed with this run here: as it trained (flip TTA, its bfloat16 policy
        resolved on ``device``), ``batch_size`` images a pass (default the run's
        ``eval_batch_size``)."""
        bs = batch_size or self.config.run.eval_batch_size
        return EmbedMode.of_run(self.spec.tta, self.spec.amp, self.device, bs)


def _stored_spec(ckpt: dict[str, Any], path: Path) -> InferenceSpec | None:
    raw = ckpt.get("inference")
    if raw is None:
        return None
    try:
        return InferenceSpec.from_dict(raw)
    except ValueError as err:
        raise TrainingError(f"{path} is corrupt ({err}); use another checkpoint") from None


def _legacy_spec(config: TrainConfig, path: Path, data_dir: str | None) -> InferenceSpec:
    """The spec of a checkpoint written before checkpoints stored it, recomputed from the
    run's dataset exactly as training computed it."""
    if data_dir is not None:
        config = replace(config, data=replace(config.data, data_dir=data_dir))
    try:
        splits, _ = prepare_data(config)
    except DataError as err:
        raise TrainingError(
            f"{path} was written by an older tripletlab that did not store the run's "
            f"normalisation, and its dataset cannot be loaded to recompute it ({err}); "
            "restore the data (or pass --data-dir), or retrain"
        ) from None
    return inference_spec(config, splits)


def _state_dict_error(err: RuntimeError) -> str:
    """The first problem ``load_state_dict`` reports (``size mismatch for conv1.weight: ...``),
    shortened: its message is a header line, then one indented line per problem."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    first = (lines[1] if len(lines) > 1 else (lines or ["no detail"])[0]).rstrip(".")
    return first if len(first) <= 200 else first[:197] + "..."


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


def load_run(
    path: Path, device: str | torch.device = "cpu", *, data_dir: str | None = None
) -> LoadedRun:
    """Load the model of a run folder (its ``checkpoints/best.pt``) or of a checkpoint file.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs) by
    :func:`tripletlab.training.load_checkpoint`; the network is rebuilt from the config
    saved in it (its head size from the weights) and its input shape and normalisation
    come from its :class:`~tripletlab.training.InferenceSpec`: the training data is not
    needed. Checkpoints written before tripletlab stored the spec load too: the spec is
    recomputed from the run's dataset (``data_dir``: where its IDX files are now).

    Raises:
        tripletlab.training.TrainingError: no such folder or file, a folder without a
            checkpoint (the message says where to look), an unreadable checkpoint, one that
            lacks keys (named) or whose config is unusable, weights that do not fit the
            config (the first mismatch named).
        ValueError: an unusable device or config.
    """
    ckpt_path, run_dir = _find_checkpoint(Path(path))
    ckpt = load_checkpoint(ckpt_path)
    try:
        config = config_from_dict(dict(ckpt["config"])).resolved()
    except ValueError as err:
        raise TrainingError(
            f"{ckpt_path} holds a config this tripletlab cannot use ({err}); use another checkpoint"
        ) from None
    state: dict[str, Tensor] = ckpt["model"]
    convs = [t for t in state.values() if t.dim() == 4]  # the first is the input convolution
    if not convs:
        raise TrainingError(f"{ckpt_path} holds no convolution weights; not a tripletlab model")
    head = state.get("classifier.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    spec = _stored_spec(ckpt, ckpt_path) or _legacy_spec(config, ckpt_path, data_dir)
    if int(convs[0].shape[1]) != spec.channels:
        raise TrainingError(
            f"{ckpt_path} is corrupt: its first convolution takes {convs[0].shape[1]} channels "
            f"but its inference spec says {spec.channels}; use another checkpoint"
        )
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = run_network(
        config, in_channels=spec.channels, image_size=spec.image_size, num_classes=num_classes
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise TrainingError(
            f"the weights in {ckpt_path} do not fit a {config.model.name!r} model built from its "
            f"config ({_state_dict_error(err)}); use another checkpoint"
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
        image_shape=spec.image_shape,
        num_classes=num_classes,
        device=dev,
        spec=spec,
    )


def run_config(
    run: LoadedRun, *, dataset: str | None = None, data_dir: str | None = None
) -> TrainConfig:
    """The run's config with ``dataset`` and ``data_dir`` replaced (default: the run's; an
    image folder's path made absolute) and the image size of the images the model trained
    on."""
    data = run.config.data
    return replace(
        run.config,
        data=replace(
            data,
            dataset=absolute_dataset(dataset) if dataset is not None else data.dataset,
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
    run: LoadedRun,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> tuple[TrainConfig, Splits, ImageSet | None]:
    """The run's data protocol applied to ``dataset`` (default: the run's own).

    The run's class split, validation hold-out, image size (that of the images it trained
    on) and seed are applied to ``dataset`` exactly as
    :func:`tripletlab.training.prepare_data` did at training time, so the run's own dataset
    gives back its training, validation and test sets. Every dataset is normalised as the
    model was trained (the checkpoint's ``mean`` and ``std``): the normalisation is part of
    the model, not of the data it is applied to. Images decoded into the cache are reported
    to ``progress``.

    Returns:
        ``(config, splits, validation)``: the config with ``dataset`` and ``data_dir``
        replaced, the splits (training without the validation items), the validation set.

    Raises:
        tripletlab.data.DataError: unloadable data; images of another shape than the run
            trained on; a softmax head with another class count; class ids of the run's
            class split that the dataset lacks.
    """
    config = run_config(run, dataset=dataset, data_dir=data_dir)
    splits, val = prepare_data(config, progress)
    check_image_shape(run, config, splits, "evaluate on data of that shape")
    splits = replace(splits, mean=run.spec.mean, std=run.spec.std)  # the model's own
    if run.num_classes is not None:
        need = int(splits.train.labels.max()) + 1 if len(splits.train) else 0
        if need != run.num_classes:
            raise DataError(
                f"the softmax head of {run.checkpoint} has {run.num_classes} classes but "
                f"{config.data.dataset} has {need} training classes; evaluate on a dataset with "
                "the run's classes"
            )
    return config, splits, val
