"""A whole run: its data (:func:`prepare_data`), :func:`fit` with checkpoints, resume,
validation and the final evaluation, and the :class:`Reporter` it talks to."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from tripletlab import distributed
from tripletlab.data import ImageSet, Splits, class_split, load_dataset
from tripletlab.distances import Distance
from tripletlab.embedding import EmbedMode, embed
from tripletlab.io import atomic_torch_save, atomic_write_text
from tripletlab.metrics import knn_accuracy
from tripletlab.models import EmbeddingModel, build_model
from tripletlab.training.checkpoints import CHECKPOINT_VERSION, InferenceSpec, load_checkpoint
from tripletlab.training.config import TrainConfig, config_from_dict
from tripletlab.training.devices import embedding_mode, pick_device
from tripletlab.training.errors import TrainingError
from tripletlab.training.loop import EpochStats, StepInfo, evaluate, train_epoch
from tripletlab.training.objective import ObjectiveFn
from tripletlab.training.optim import make_optimizer, make_schedule


class Reporter(Protocol):
    """What :func:`fit` tells its caller; the CLI draws progress bars and writes logs."""

    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, epoch: int, info: StepInfo) -> None: ...
    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    """A :class:`Reporter` that does nothing (library use, tests)."""

    def epoch_start(self, epoch: int, steps: int) -> None:
        pass

    def step(self, epoch: int, info: StepInfo) -> None:
        pass

    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class Interrupted(Exception):
    """Raised by :func:`fit` after Ctrl-C, once the checkpoint to resume from is written."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


@dataclass
class RunResult:
    """What :func:`fit` returns: the run folder, ``metrics.json``'s content, the per-epoch
    records and the resolved config the run used (the saved one after a resume)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    config: TrainConfig | None = None


def load_config_dataset(config: TrainConfig) -> Splits:
    """The dataset ``config`` names, as :func:`tripletlab.data.load_dataset` loads it (its own
    train/test split, before any class split or validation hold-out)."""
    return load_dataset(
        config.data.dataset,
        data_dir=Path(config.data.data_dir) if config.data.data_dir else None,
        image_size=config.data.image_size,
        strict=config.data.strict,
        seed=config.run.seed,
    )


def prepare_data(config: TrainConfig) -> tuple[Splits, ImageSet | None]:
    """Load the dataset, apply a class-disjoint split, and hold out a validation set.

    Returns the splits (train without the validation items) and the validation set (or
    ``None`` with ``val_size = 0``). The validation items are a seeded random subset of the
    training split; they pick the best checkpoint, so the test split is never looked at
    before the end of the run.
    """
    splits = load_config_dataset(config)
    if config.data.train_classes or config.data.test_classes or config.data.unseen_classes:
        splits = class_split(
            splits,
            train_classes=config.data.train_classes,
            test_classes=config.data.test_classes,
            unseen_classes=config.data.unseen_classes,
        )
    n = len(splits.train)
    val_size = min(config.data.val_size, n // 5)
    if val_size <= 0:
        return splits, None
    g = torch.Generator().manual_seed(config.run.seed + 17)
    perm = torch.randperm(n, generator=g)
    val = splits.train.subset(perm[:val_size])
    train = splits.train.subset(perm[val_size:].sort().values)
    return Splits(splits.name, train, splits.test, splits.mean, splits.std), val


def inference_spec(config: TrainConfig, splits: Splits) -> InferenceSpec:
    """What a checkpoint of this run stores for inference: the training images' shape, their
    normalisation and class names, the embedding and how to compute it."""
    images = splits.train.images  # (N, C, H, W) uint8
    return InferenceSpec(
        channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
        mean=tuple(splits.mean),
        std=tuple(splits.std),
        classes=tuple(splits.train.classes),
        embedding_dim=config.model.embedding_dim,
        normalized=config.model.normalize_embeddings,
        distance=config.objective.distance,
        tta=bool(config.data.tta),
        amp=config.run.amp,
    )


def _validate(
    model: EmbeddingModel,
    val: ImageSet,
    gallery: ImageSet,
    splits: Splits,
    device: torch.device,
    distance: Distance,
    mode: EmbedMode,
) -> dict[str, float]:
    stats = (splits.mean, splits.std)
    mode = replace(mode, flip=False)  # the validation score is of the plain embedding
    e_val = embed(model, val.images, stats, device, mode)
    e_gal = embed(model, gallery.images, stats, device, mode)
    acc = knn_accuracy(
        e_val, val.labels.to(device), e_gal, gallery.labels.to(device), distance=distance
    )
    return {"val_knn_accuracy": acc}


def _run_settings(config: TrainConfig, labels: Tensor) -> dict[str, Any]:
    """What every rank of a distributed run must agree on: the config (less the paths and
    thread counts, which may differ between machines) and the training labels."""
    settings = config.flat()
    for key in ("data_dir", "out", "threads", "tensorboard"):
        settings.pop(key)
    settings["training labels"] = (
        f"{labels.numel()} items, sha256 {distributed.fingerprint(labels)}"
    )
    return settings


def _reseed(seed: int, where: distributed.Ranks, epoch: int) -> Callable[[int], int] | None:
    """Per-step augmentation seeds of this rank in a distributed run (None: one stream)."""
    if not where.distributed:
        return None
    return lambda step: distributed.step_seed(seed, where.rank, epoch, step)


def _peers_lost(
    err: BaseException, where: distributed.Ranks, epoch: int, run_dir: Path, saved: bool
) -> str:
    last = (
        f"the last checkpoint is intact: continue with --resume {run_dir}"
        if saved
        else "no checkpoint was written yet: start again"
    )
    return (
        f"rank {where.rank} of {where.world_size} lost the other processes in epoch {epoch + 1} "
        f"({str(err).splitlines()[0][:200]}): another rank died or did not answer within the "
        f"timeout (--dist-timeout); {last}"
    )


def fit(
    config: TrainConfig,
    run_dir: Path,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    epochs: int | None = None,
) -> RunResult:
    """Train and evaluate one run in ``run_dir`` (created if needed).

    Writes ``config.json`` (the resolved config), ``checkpoints/last.pt`` after every epoch
    (and on Ctrl-C), ``checkpoints/best.pt`` (best validation 1-NN accuracy), and at the end
    ``metrics.json``. With ``resume``, ``config`` is ignored: the run continues from
    ``checkpoints/last.pt`` with its saved config exactly where it stopped (model, optimizer,
    scheduler, epoch and step, random generators); ``epochs``, when given, extends (or
    shortens) it, and the learning-rate schedule is recomputed for the new length.

    In a process group (``torchrun``) every rank calls ``fit`` with the same config; rank 0
    alone reads the checkpoint (and sends it to the others), writes the run folder and
    evaluates at the end, after the others have returned (with empty ``metrics``). A rank
    that dies or hangs makes the others raise ``PeersLost`` within the group's timeout.

    Raises:
        TrainingError: NaN loss, unreadable checkpoint, unusable run folder.
        Interrupted: after Ctrl-C, with the checkpoint written.
        tripletlab.distributed.PeersLost: another rank died or stopped answering.
        tripletlab.data.DataError, ValueError: bad data or config; ranks that disagree.
    """
    rep = reporter if reporter is not None else SilentReporter()
    where = distributed.ranks()
    ckpt_dir = run_dir / "checkpoints"
    ckpt: dict[str, Any] | None = None
    if resume:
        ckpt = distributed.from_rank0(lambda: load_checkpoint(ckpt_dir / "last.pt"))
        config = config_from_dict(dict(ckpt["config"]))
    if epochs is not None:
        config.optim.epochs = epochs
    config = config.resolved()

    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    device = distributed.device_for(pick_device(config.run.device), where)
    torch.manual_seed(config.run.seed)
    splits, val = prepare_data(config)
    train = splits.train
    num_classes = int(train.labels.max()) + 1 if len(train) else 0
    if (
        config.objective.labels_per_batch is None
    ):  # P: 10 classes a batch, or all when there are fewer
        config.objective.labels_per_batch = min(10, int(torch.unique(train.labels).numel()))
    if where.distributed:
        distributed.check_agreement(_run_settings(config, train.labels))
    objective = ObjectiveFn(config, train.labels, rank=where.rank, world_size=where.world_size)
    if where.writes:
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2) + "\n")
        except OSError as err:
            raise TrainingError(
                f"cannot write to the run folder {run_dir} ({err.strerror}); choose another --out"
            ) from err
    model = build_model(
        config.model.name,
        in_channels=train.images.shape[1],
        image_size=train.images.shape[-1],
        embedding_dim=config.model.embedding_dim,
        width=config.model.width,
        normalize=config.model.normalize_embeddings,
        num_classes=num_classes if config.objective.name == "softmax" else None,
    )
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    network = None
    if where.distributed:
        if config.distributed.sync_bn:
            distributed.sync_batchnorm(model, device)
        network = distributed.data_parallel(model, objective.forward, device)
    eval_mode = embedding_mode(config, device)
    steps_per_epoch = objective.steps_per_epoch()
    optimizer = make_optimizer(config, iter(model.parameters()))
    scheduler = make_schedule(config, optimizer, steps_per_epoch)
    aug_gen = torch.Generator().manual_seed(config.run.seed + 1)
    stats = (splits.mean, splits.std)
    gallery = (
        train.subset(
            torch.randperm(len(train), generator=torch.Generator().manual_seed(3))[:10_000]
        )
        if val is not None
        else train
    )

    epoch, step, best, history, train_seconds = 0, 0, -1.0, [], 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        aug_gen.set_state(ckpt["aug_rng"])
        if objective.triplet is not None:
            objective.triplet.generator.set_state(ckpt["miner_rng"])
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        best, history = float(ckpt["best"]), list(ckpt["history"])
        train_seconds = float(ckpt["train_seconds"])
        rep.message(f"resuming {run_dir} at epoch {epoch + 1}, step {step}")
        if int(ckpt.get("world_size", 1)) != where.world_size:
            rep.message(
                f"the run trained on {ckpt.get('world_size', 1)} processes and continues on "
                f"{where.world_size}: same batches, other augmentation draws"
            )

    spec = inference_spec(config, splits)

    def state(epoch_: int, step_: int) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": asdict(config),
            "inference": spec.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "aug_rng": aug_gen.get_state(),
            "miner_rng": objective.triplet.generator.get_state()
            if objective.triplet is not None
            else torch.zeros(0, dtype=torch.uint8),
            "epoch": epoch_,
            "step": step_,
            "best": best,
            "history": history,
            "train_seconds": train_seconds,
            "world_size": where.world_size,
        }

    def save(name: str, epoch_: int, step_: int) -> None:
        if where.writes:
            atomic_torch_save(state(epoch_, step_), ckpt_dir / name)

    while epoch < config.optim.epochs:
        batches = objective.batches(epoch)
        rep.epoch_start(epoch, len(batches) - step)
        t0 = time.perf_counter()
        done = step
        try:

            def on_step(info: StepInfo, epoch: int = epoch) -> None:
                nonlocal done
                done = info.step + 1
                rep.step(epoch, info)

            result = train_epoch(
                model,
                objective,
                batches,
                train.images,
                optimizer,
                scheduler,
                config=config,
                stats=stats,
                device=device,
                generator=aug_gen,
                start_step=step,
                on_step=on_step,
                network=network,
                reseed=_reseed(config.run.seed, where, epoch),
            )
        except KeyboardInterrupt:
            train_seconds += time.perf_counter() - t0
            save("last.pt", epoch, done)
            raise Interrupted(ckpt_dir / "last.pt") from None
        except RuntimeError as err:
            if not (where.distributed and distributed.is_collective_failure(err)):
                raise
            saved = epoch > 0 or ckpt is not None
            raise distributed.PeersLost(_peers_lost(err, where, epoch, run_dir, saved)) from err
        train_seconds += time.perf_counter() - t0
        val_metrics = (
            _validate(model, val, gallery, splits, device, config.objective.distance, eval_mode)
            if val is not None and where.writes  # rank 0 alone; the others wait for it
            else {}
        )
        record = {"epoch": epoch + 1, **asdict(result), **val_metrics}
        record["samples_per_second"] = result.samples_per_second
        history.append(record)
        rep.epoch_end(epoch, result, val_metrics)
        epoch, step = epoch + 1, 0
        score = val_metrics.get("val_knn_accuracy", float(epoch))
        if score > best:
            best = score
            save("best.pt", epoch, 0)
        save("last.pt", epoch, 0)

    distributed.barrier()  # the last checkpoint is written; rank 0 alone evaluates
    if not where.writes:
        return RunResult(run_dir, {}, history, config)
    best_ckpt = load_checkpoint(ckpt_dir / "best.pt")
    model.load_state_dict(best_ckpt["model"])
    rep.message("evaluating on the test split")
    metrics: dict[str, Any] = evaluate(
        model,
        splits,
        device,
        distance=config.objective.distance,
        gallery=train,
        held_out=val,
        mode=eval_mode,
        seed=config.run.seed,
    )
    metrics["train_seconds"] = train_seconds
    metrics["best_epoch"] = int(best_ckpt["epoch"])
    if history:
        loss_share = sum(h["loss_seconds"] for h in history) / max(
            sum(h["seconds"] for h in history), 1e-9
        )
        metrics["samples_per_second"] = sum(h["samples"] for h in history) / max(
            sum(h["seconds"] for h in history), 1e-9
        )
        metrics["loss_time_share"] = loss_share
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return RunResult(run_dir, metrics, history, config)
