"""A whole run: :func:`fit`, a short sequence of named steps (start config, set-up, restore,
epochs with validation and checkpoints, final evaluation), with resume, deferred Ctrl-C and
the check that no non-finite weight is ever saved."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tripletlab import distributed
from tripletlab.checks import counted
from tripletlab.data import ImageSet, Progress, Splits, default_augmentation
from tripletlab.distances import Distance
from tripletlab.embedding import EmbedMode, embed, use_amp
from tripletlab.io import atomic_torch_save, atomic_write_text, remove_stale_temporaries
from tripletlab.metrics import knn_accuracy, retrieval_scores
from tripletlab.models import EmbeddingModel, load_backbone_weights
from tripletlab.samplers import default_pk
from tripletlab.scores import baseline_scores, to_json
from tripletlab.training.checkpoints import (
    CHECKPOINT_VERSION,
    RESUME_KEYS,
    InferenceSpec,
    load_checkpoint,
    nonfinite_tensors,
)
from tripletlab.training.config import DEFAULT_PATIENCE, TrainConfig, config_from_dict
from tripletlab.training.data import (
    cache_folder,
    class_disjoint_validation,
    class_names,
    describe_data,
    describe_held_out,
    has_class_split,
    inference_spec,
    prepare_data,
    seen_test_set,
    unseen_test_classes,
)
from tripletlab.training.devices import embedding_mode, pick_device
from tripletlab.training.errors import NonFiniteWeights, TrainingError
from tripletlab.training.frozen import (
    FeatureBank,
    backbone_features,
    cached_features,
    features_key,
    head_model,
)
from tripletlab.training.interrupts import deferred_interrupt
from tripletlab.training.loop import EpochStats, evaluate, prepare_batch, train_epoch
from tripletlab.training.network import (
    compiled_network,
    pretrained_weights,
    run_network,
    untrained_network,
)
from tripletlab.training.objective import ObjectiveFn
from tripletlab.training.optim import (
    LR_SCALE,
    make_optimizer,
    make_schedule,
    param_groups,
    run_length,
)
from tripletlab.training.reporter import Reporter, SilentReporter


class Interrupted(Exception):
    """Raised by :func:`fit` after Ctrl-C, once the checkpoint to resume from is written."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint


@dataclass
class RunResult:
    """What :func:`fit` returns: the run folder, ``metrics.json``'s content, the per-epoch
    records and the resolved config the run used (the saved one after a resume);
    ``finished`` says why a resume had nothing to do (None when it trained or evaluated)."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    config: TrainConfig | None = None
    finished: str | None = None


#: The file of a run folder that names the classes of each part (:func:`class_names`).
CLASSES_NAME = "classes.json"

#: The validation score that picks the best checkpoint: of a same-class validation set
#: (1-NN against the training images) or a class-disjoint one (leave-one-out MAP@R).
VAL_SCORES = ("val_knn_accuracy", "val_map_at_r")


def _validate(
    model: EmbeddingModel,
    val: ImageSet,
    gallery: ImageSet | None,
    splits: Splits,
    device: torch.device,
    distance: Distance,
    mode: EmbedMode,
    frozen: _Frozen | None = None,
) -> dict[str, float]:
    """The validation scores of one epoch: with a ``gallery`` (same-class validation) the
    1-NN accuracy of the validation images against it; without one (class-disjoint
    validation) each validation image is a query against the others (leave-one-out):
    ``val_map_at_r``, which picks the best checkpoint, and ``val_precision_at_1``. With
    ``frozen`` (``--frozen-backbone``) the images are embedded by the head on their cached
    features, which is the model on the images."""
    stats = (splits.mean, splits.std)
    mode = replace(mode, flip=False)  # the validation score is of the plain embedding

    def embedded(images: ImageSet, features: Tensor | None) -> Tensor:
        if frozen is None or features is None:
            return embed(model, images.images, stats, device, mode)
        frozen.head.eval()
        with torch.no_grad():
            out: Tensor = frozen.head(features.to(device).float())  # (N, D)
        return out

    e_val = embedded(val, None if frozen is None else frozen.val)
    if gallery is None:
        r = retrieval_scores(e_val, val.labels.to(device), distance=distance)
        if r.num_queries == 0:  # no validation image has a classmate: nothing to score
            return {}
        return {"val_map_at_r": r.map_at_r, "val_precision_at_1": r.precision_at_1}
    e_gal = embedded(gallery, None if frozen is None else frozen.gallery)
    acc = knn_accuracy(
        e_val, val.labels.to(device), e_gal, gallery.labels.to(device), distance=distance
    )
    return {"val_knn_accuracy": acc}


def _run_settings(config: TrainConfig, labels: Tensor) -> dict[str, Any]:
    """What every rank of a distributed run must agree on: the config (less the paths and
    thread counts, which may differ between machines) and the training labels."""
    settings = config.flat()
    for key in ("data_dir", "cache_dir", "workers", "out", "threads", "tensorboard"):
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


#: Settings that ``--resume`` may change; every other one must stay as the run has it.
RESUMABLE: frozenset[str] = frozenset(
    {"epochs", "patience", "lr", "eval_batch_size", "threads", "tensorboard", "device", "amp"}
    | {"out", "cache_dir", "workers", "compile"}
)


@dataclass
class _Run:
    """What the start of a run builds: everything an epoch and the final evaluation need."""

    config: TrainConfig
    run_dir: Path
    where: distributed.Ranks
    device: torch.device
    splits: Splits
    val: ImageSet | None
    gallery: ImageSet | None  # the k-NN gallery of the validation score (None: leave-one-out)
    objective: ObjectiveFn
    model: EmbeddingModel
    network: nn.Module | None  # the DDP wrapper in a distributed run, or --compile's forward
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    aug_gen: torch.Generator
    eval_mode: EmbedMode
    spec: InferenceSpec
    frozen: _Frozen | None = None  # --frozen-backbone: the head and the cached features
    weights_file: Path | None = None  # the pretrained weights a fresh run started from

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


@dataclass
class _Progress:
    """Where a run stands: saved in every checkpoint, restored by a resume."""

    epoch: int = 0
    step: int = 0  # steps of ``epoch`` already done
    best: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    resumed: bool = False


def fit(
    config: TrainConfig,
    run_dir: Path,
    *,
    reporter: Reporter | None = None,
    resume: bool = False,
    epochs: int | None = None,
    changes: Mapping[str, object] | None = None,
) -> RunResult:
    """Train and evaluate one run in ``run_dir`` (created if needed).

    Writes ``config.json`` (the resolved config), ``classes.json`` (the class names of the
    training, validation and test parts), ``checkpoints/last.pt`` after every epoch
    (and on Ctrl-C), ``checkpoints/best.pt`` (best validation score: 1-NN accuracy against
    the training images, or leave-one-out MAP@R of class-disjoint validation), and at the end
    ``metrics.json``. Before each checkpoint every weight and buffer is checked: a non-finite
    one stops the run (:class:`NonFiniteWeights`) and is never saved.

    With ``resume``, the run continues from ``checkpoints/last.pt`` with its saved config
    exactly where it stopped (model, optimizer, scheduler, epoch and step, random
    generators). ``changes`` (flat keys, the flags the user gave) may change the settings in
    :data:`RESUMABLE` (``epochs``, ``lr``, ...), which are applied and recorded in
    ``config.json``; any other setting that differs from the run's is refused; ``config``
    itself is ignored. ``epochs`` is a shorthand for ``changes={"epochs": ...}``. A new
    length or learning rate recomputes the schedule and continues it from the current step
    (the warm-up is not repeated).

    Ctrl-C (SIGINT, single process) is deferred while a step runs: the step finishes, the
    state after it is saved, and :class:`Interrupted` is raised, so ``--resume`` continues
    exactly (bit for bit with ``amp`` off). A second Ctrl-C, or one in a distributed run,
    stops at once; the last finished epoch's checkpoint is then what resumes.

    In a process group (``torchrun``) every rank calls ``fit`` with the same config; rank 0
    alone reads the checkpoint (and sends it to the others), writes the run folder and
    evaluates at the end, after the others have returned (with empty ``metrics``). A rank
    that dies or hangs makes the others raise ``PeersLost`` within the group's timeout.

    Raises:
        TrainingError: NaN loss or weights, unreadable checkpoint, unusable run folder,
            a setting a resume cannot change.
        Interrupted: after Ctrl-C, with the checkpoint written.
        tripletlab.distributed.PeersLost: another rank died or stopped answering.
        tripletlab.data.DataError, ValueError: bad data or config; ranks that disagree.
    """
    with _threads_kept():  # --threads holds for the run, not for the caller after it
        rep = reporter if reporter is not None else SilentReporter()
        where = distributed.ranks()
        if epochs is not None:
            changes = {**(changes or {}), "epochs": epochs}
        config, ckpt = _starting_config(config, run_dir, resume, changes or {})
        finished = _finished(config, run_dir, ckpt)
        if finished is not None:
            rep.message(f"{run_dir} is finished ({finished}); nothing to do")
            metrics = json.loads((run_dir / "metrics.json").read_text())
            history = list(ckpt["history"]) if ckpt else []
            return RunResult(run_dir, metrics, history, config, finished=finished)
        run = _set_up(config, run_dir, where, rep, fresh=ckpt is None)
        names = class_names(run.splits, run.val)
        _write_config(run, names)
        rep.message(describe_data(run.splits, run.val))
        held_out = describe_held_out(names, run_dir / CLASSES_NAME)
        if held_out is not None:
            rep.message(held_out)
        rep.message(run.objective.describe())
        if run.weights_file is not None:
            rep.message(
                f"backbone: {config.model.name} from {run.weights_file}; 3 channels, ImageNet's "
                "mean and std"
            )
        if config.run.compile and run.network is not None and not where.distributed:
            rep.message("network: compiled by torch.compile (inductor) at the first step")
        rep.message(_length(run))
        progress = _restore(run, ckpt, rep) if ckpt is not None else _Progress()
        with deferred_interrupt(enabled=not where.distributed) as pressed:
            try:
                while progress.epoch < (config.optim.epochs or 0):
                    if distributed.from_rank0(lambda: _stalled(progress, config.optim.patience)):
                        rep.message(_stopping(progress))
                        break
                    _run_epoch(run, progress, rep, pressed)
            except KeyboardInterrupt:  # not deferred: the last finished epoch is what resumes
                if progress.epoch == 0 and not progress.resumed:
                    raise
                raise Interrupted(run.ckpt_dir / "last.pt") from None
        distributed.barrier()  # the last checkpoint is written; rank 0 alone evaluates
        if not where.writes:
            return RunResult(run_dir, {}, progress.history, config)
        metrics = _final_metrics(run, progress, rep)
        return RunResult(run_dir, metrics, progress.history, config)


def _finished(config: TrainConfig, run_dir: Path, ckpt: dict[str, Any] | None) -> str | None:
    """Why a resumed run has nothing left to do (its epochs done, or stopped early, and its
    ``metrics.json`` written at the end), or None: a resume of a finished run neither
    loads its data nor evaluates it again."""
    if ckpt is None or int(ckpt["step"]) or not (run_dir / "metrics.json").is_file():
        return None
    epoch, epochs = int(ckpt["epoch"]), int(config.optim.epochs or 0)
    if epoch >= epochs:
        return f"{epoch} of {epochs} epochs"
    progress = _Progress(epoch=epoch, history=list(ckpt["history"]))
    if _stalled(progress, config.optim.patience):
        return f"stopped early after epoch {epoch}"
    return None


@contextmanager
def _threads_kept() -> Iterator[None]:
    """Torch's CPU thread count as it was before the block (a run's ``--threads`` is set in
    :func:`_set_up`; in-process callers, tests among them, keep their own)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _length(run: _Run) -> str:
    """The run's length in one line, for its first lines."""
    o = run.config.optim
    epochs, steps = o.epochs or 0, o.steps_per_epoch or 0
    text = (
        f"length: {counted(epochs, 'epoch')} of {counted(steps, 'step')} = "
        f"{counted(epochs * steps, 'step')} at most"
    )
    if o.patience:
        which = "val MAP@R" if run.gallery is None else "val 1-NN accuracy"
        text += f", stopping once {o.patience} validations in a row do not improve {which}"
    return text


def _since_best(progress: _Progress) -> tuple[int, int, float] | None:
    """``(validations since the best, best epoch, best score)`` over the epochs so far
    (the first of :data:`VAL_SCORES` each record has; the first best, as
    :func:`_run_epoch` keeps it); None before any validation score."""
    scored = [
        (int(h["epoch"]), float(s))
        for h in progress.history
        if (s := next((h[k] for k in VAL_SCORES if k in h), None)) is not None
    ]
    if not scored:
        return None
    best = max(range(len(scored)), key=lambda i: (scored[i][1], -i))
    return len(scored) - 1 - best, *scored[best]


def _stalled(progress: _Progress, patience: int | None) -> bool:
    """True once ``patience`` validations in a row came after the best one; never with
    ``patience`` 0 or None."""
    since = _since_best(progress)
    return bool(patience) and since is not None and since[0] >= (patience or 0)


def _stopping(progress: _Progress) -> str:
    since, epoch, score = _since_best(progress) or (0, 0, 0.0)
    return (
        f"stopping early after epoch {progress.epoch}: {since} validations in a row did not "
        f"improve on epoch {epoch}'s {score:.4f}"
    )


def _starting_config(
    config: TrainConfig, run_dir: Path, resume: bool, changes: Mapping[str, object]
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The resolved config to run with, and the checkpoint to resume from (or None)."""
    if not resume:
        if changes:
            config = config_from_dict({**config.flat(), **changes})
        return config.resolved(), None
    path = run_dir / "checkpoints" / "last.pt"
    ckpt = distributed.from_rank0(lambda: load_checkpoint(path, RESUME_KEYS))
    saved = config_from_dict(dict(ckpt["config"])).flat()
    for key, value in changes.items():
        if key not in RESUMABLE and value != saved.get(key):
            flag = key.replace("_", "-")
            can = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUMABLE - {"out"}))
            raise TrainingError(
                f"--resume {run_dir}: --{flag} {value} differs from the run's {saved.get(key)}, "
                f"and a resumed run keeps its settings (it may change {can}); drop --{flag}, "
                "or start a new run with another --out"
            )
    changed = {k: v for k, v in changes.items() if k in RESUMABLE and k != "out"}
    return config_from_dict({**saved, **changed}).resolved(), ckpt


def _progress_messages(rep: Reporter) -> Progress:
    """A progress callback that says when a long task (decoding images into the cache,
    computing a frozen backbone's features) starts and how long it took (the log has no
    progress bars)."""
    started = [0.0]

    def progress(description: str, done: int, total: int) -> None:
        if done == 0:
            started[0] = time.perf_counter()
            rep.message(f"{description}...")
        elif done == total:
            rep.message(f"{description}: done in {time.perf_counter() - started[0]:.1f} s")

    return progress


def _set_up(
    config: TrainConfig, run_dir: Path, where: distributed.Ranks, rep: Reporter, *, fresh: bool
) -> _Run:
    """Data, objective, network, optimizer and schedule of a run, seeded; a ``fresh`` run
    (not resumed) starts from the pretrained weights its config names, read first."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    device = distributed.device_for(pick_device(config.run.device), where)
    weights = distributed.from_rank0(lambda: pretrained_weights(config)) if fresh else None
    torch.manual_seed(config.run.seed)
    splits, val = prepare_data(config, _progress_messages(rep))
    disjoint = class_disjoint_validation(splits, val)
    if disjoint:  # as used: the number of validation classes
        assert val is not None
        config.data.val_classes = float(torch.unique(val.labels).numel())
    else:
        config.data.val_size = len(val) if val is not None else 0  # as used (capped at N / 5)
        if unseen_test_classes(config, splits):
            config.data.val_classes = 0.0
    train = splits.train
    if config.data.augment is None:  # as used: photos with --pretrained, else digits
        config.data.augment = default_augmentation(config.model.pretrained is not None)
    o = config.objective  # P and K from the class sizes where not given (default_pk)
    o.labels_per_batch, o.samples_per_label = default_pk(
        train.labels, p=o.labels_per_batch, k=o.samples_per_label, multiple_of=where.world_size
    )
    if where.distributed:
        distributed.check_agreement(_run_settings(config, train.labels))
    objective = ObjectiveFn(config, train.labels, rank=where.rank, world_size=where.world_size)
    op = config.optim  # the length from the data where not given, as used (run_length)
    op.epochs, op.steps_per_epoch = run_length(
        objective.pass_steps(), op.epochs, op.steps_per_epoch
    )
    if op.patience is None:
        op.patience = DEFAULT_PATIENCE if disjoint else 0
    model, network = _network(config, splits, objective, device, where, weights)
    optimizer = make_optimizer(config, param_groups(model, config))
    g = torch.Generator().manual_seed(3)
    # the rows of the training images the same-class validation's gallery holds (no validation:
    # None, and the gallery is the whole training set; class-disjoint: no gallery at all)
    gallery_rows = torch.randperm(len(train), generator=g)[:10_000] if val else None
    gallery: ImageSet | None = (
        None if disjoint else train.subset(gallery_rows) if gallery_rows is not None else train
    )
    aug_gen = torch.Generator().manual_seed(config.run.seed + 1)
    frozen = None
    if op.frozen_backbone:
        if where.distributed:
            raise TrainingError(
                "--frozen-backbone runs in one process (its features are computed once, "
                "here); run it without torchrun"
            )
        # the validation gallery's features are rows of the training images' view 0
        rows = None if disjoint else gallery_rows
        parts = {"train": train, "val": val}
        frozen = _frozen(
            config, model, splits, parts, rows, device, aug_gen, _progress_messages(rep)
        )
    return _Run(
        config=config,
        run_dir=run_dir,
        where=where,
        device=device,
        splits=splits,
        val=val,
        gallery=gallery,
        objective=objective,
        model=model,
        network=network,
        optimizer=optimizer,
        scheduler=make_schedule(config, optimizer, op.epochs, op.steps_per_epoch),
        aug_gen=aug_gen,
        eval_mode=embedding_mode(config, device),
        spec=inference_spec(config, splits),
        weights_file=None if weights is None else weights[1],
        frozen=frozen,
    )


@dataclass
class _Frozen:
    """``--frozen-backbone``: the head that trains, the training features (all views) and
    view 0 of the validation images and of the validation gallery."""

    head: EmbeddingModel
    bank: FeatureBank
    val: Tensor | None
    gallery: Tensor | None


def _weights_identity(config: TrainConfig) -> str:
    """The pretrained weights as the features' cache key names them: ``imagenet``, or the
    file's path, size and modification time."""
    name = str(config.model.pretrained)
    if name == "imagenet" or not os.path.isfile(name):
        return name
    st = os.stat(name)
    return f"{name}:{st.st_size}:{st.st_mtime_ns}"


def _frozen(
    config: TrainConfig,
    model: EmbeddingModel,
    splits: Splits,
    parts: dict[str, ImageSet | None],
    gallery_rows: Tensor | None,
    device: torch.device,
    generator: torch.Generator,
    progress: Progress,
) -> _Frozen:
    """The backbone's features of the training images (``frozen_views`` views) and of the
    validation images (view 0), read from the cache or computed and cached; the validation
    gallery's are view 0 of the training images at ``gallery_rows`` (None: no gallery)."""
    d = config.data
    stats = (splits.mean, splits.std)
    common = {
        "dataset": d.dataset,
        "image_size": d.image_size,
        "model": config.model.name,
        "weights": _weights_identity(config),
        "augmentation": [d.augment, d.crop_padding, d.hflip, d.crop_scale, d.jitter, d.grayscale],
        "seed": config.run.seed,
        "stats": stats,
    }
    out: dict[str, Tensor | None] = {}
    for i, (name, images) in enumerate(parts.items()):
        if images is None:
            out[name] = None
            continue
        views = config.optim.frozen_views if name == "train" else 1
        items = hashlib.sha256(images.labels.numpy().tobytes())
        items.update("\n".join(images.paths or ()).encode("utf-8", "surrogateescape"))
        key = features_key({**common, "part": name, "views": views, "items": items.hexdigest()})
        g = torch.Generator().manual_seed(config.run.seed + 29 + i)

        def compute(
            images: ImageSet = images, views: int = views, g: torch.Generator = g
        ) -> Tensor:
            return backbone_features(
                model.backbone,
                images.images,
                views=views,
                prepare=lambda x, gen: prepare_batch(x, config, stats, device, gen),
                generator=g,
                batch_size=config.run.eval_batch_size,
                amp=use_amp(config.run.amp, device),
                device_type=device.type,
                progress=progress,
            )

        out[name] = cached_features(cache_folder(config), key, (views, len(images)), compute)
    train = out["train"]
    assert train is not None
    val = out["val"]
    return _Frozen(
        head=head_model(model),
        bank=FeatureBank(train, generator),
        val=None if val is None else val[0],
        gallery=None if gallery_rows is None else train[0, gallery_rows],
    )


def _network(
    config: TrainConfig,
    splits: Splits,
    objective: ObjectiveFn,
    device: torch.device,
    where: distributed.Ranks,
    weights: tuple[dict[str, Tensor], Path] | None,
) -> tuple[EmbeddingModel, nn.Module | None]:
    """The embedding model on ``device`` (channels-last), its backbone loaded with
    ``weights`` (of :func:`pretrained_weights`) when given, and what the training steps
    call for the forward pass instead of it: its DDP wrapper when distributed, its compiled
    forward with ``--compile`` (:func:`compiled_network`; None where that fails)."""
    model = _build_model(config, splits)
    if weights is not None:
        load_backbone_weights(model.backbone, weights[0], str(weights[1]))
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if config.run.compile:
        if where.distributed or config.optim.frozen_backbone:
            why = "under torchrun" if where.distributed else "with --frozen-backbone"
            warnings.warn(f"--compile is not used {why}; training without it", stacklevel=2)
        else:
            return model, compiled_network(model, objective.forward, device)
    if not where.distributed:
        return model, None
    if config.distributed.sync_bn:
        distributed.sync_batchnorm(model, device)
    frozen = config.optim.freeze_backbone_epochs > 0  # some epochs leave the backbone out
    return model, distributed.data_parallel(
        model, objective.forward, device, find_unused_parameters=frozen
    )


def _network_shape(config: TrainConfig, splits: Splits) -> dict[str, Any]:
    """The input shape and head size of the run's network (:func:`run_network`)."""
    train = splits.train
    num_classes = int(train.labels.max()) + 1 if len(train) else 0
    return {
        "in_channels": int(train.images.shape[1]),
        "image_size": int(train.images.shape[-1]),
        "num_classes": num_classes if config.objective.name == "softmax" else None,
    }


def _build_model(config: TrainConfig, splits: Splits) -> EmbeddingModel:
    """The run's network at fresh weights (from the global random generator)."""
    return run_network(config, **_network_shape(config, splits))


def _untrained(run: _Run) -> EmbeddingModel:
    """The run's network at initial weights seeded with the run's seed (the baseline of
    :func:`tripletlab.scores.baseline_scores`; :func:`untrained_network`, as ``tripletlab
    evaluate`` builds it)."""
    return untrained_network(run.config, run.device, **_network_shape(run.config, run.splits))


def _write_config(run: _Run, names: dict[str, list[str]]) -> None:
    """``config.json`` (the resolved config, with a resume's changes) and ``classes.json``
    (``names``, :func:`class_names`) in the run folder."""
    if not run.where.writes:
        return
    try:
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
        for folder in (run.run_dir, run.ckpt_dir):  # what an interrupted write left
            remove_stale_temporaries(folder)
        text = json.dumps(asdict(run.config), indent=2) + "\n"
        atomic_write_text(run.run_dir / "config.json", text)
        text = json.dumps(names, indent=1)  # ASCII: any folder name
        atomic_write_text(run.run_dir / CLASSES_NAME, text + "\n")
    except OSError as err:
        raise TrainingError(
            f"cannot write to the run folder {run.run_dir} ({err.strerror}); choose another --out"
        ) from err


def _restore(run: _Run, ckpt: dict[str, Any], rep: Reporter) -> _Progress:
    """Load a checkpoint's state into the run; the schedule continues from its step at the
    run's (possibly new) length and learning rate."""
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError) as err:
        raise TrainingError(
            f"the checkpoint of {run.run_dir} does not fit this run's network "
            f"({str(err).strip().splitlines()[0][:200]}); start a new run"
        ) from None
    run.scheduler.load_state_dict(ckpt["scheduler"])
    lrs = [run.config.optim.lr * g.get(LR_SCALE, 1.0) for g in run.optimizer.param_groups]
    run.scheduler.base_lrs = lrs
    factor = run.scheduler.lr_lambdas[0](run.scheduler.last_epoch)
    for group, lr in zip(run.optimizer.param_groups, lrs, strict=True):
        group["initial_lr"], group["lr"] = lr, lr * factor
    run.aug_gen.set_state(ckpt["aug_rng"])
    if run.objective.triplet is not None:
        run.objective.triplet.generator.set_state(ckpt["miner_rng"])
    progress = _Progress(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        best=float(ckpt["best"]),
        history=list(ckpt["history"]),
        train_seconds=float(ckpt["train_seconds"]),
        resumed=True,
    )
    rep.resumed(progress.epoch, progress.step)
    rep.message(f"resuming {run.run_dir} at epoch {progress.epoch + 1}, step {progress.step}")
    if int(ckpt.get("world_size", 1)) != run.where.world_size:
        rep.message(
            f"the run trained on {ckpt.get('world_size', 1)} processes and continues on "
            f"{run.where.world_size}: same batches, other augmentation draws"
        )
    return progress


def _run_epoch(run: _Run, progress: _Progress, rep: Reporter, pressed: Callable[[], bool]) -> None:
    """Train the rest of the current epoch, then validate and save; after Ctrl-C, save the
    state after the last finished step and raise :class:`Interrupted`."""
    batches = run.objective.batches(progress.epoch)
    rep.epoch_start(progress.epoch, len(batches) - progress.step)
    t0 = time.perf_counter()
    result = _train_steps(run, progress, batches, rep, pressed)
    progress.train_seconds += time.perf_counter() - t0
    done = progress.step + result.steps
    if done < len(batches):  # stopped by Ctrl-C after a whole step
        progress.step = done
        _check_weights(run, progress)
        _save(run, progress, "last.pt")
        raise Interrupted(run.ckpt_dir / "last.pt")
    _check_weights(run, progress)
    val = (
        _validate(
            run.model,
            run.val,
            run.gallery,
            run.splits,
            run.device,
            run.config.objective.distance,
            run.eval_mode,
            run.frozen,
        )
        if run.val is not None and run.where.writes  # rank 0 alone; the others wait for it
        else {}
    )
    record = {"epoch": progress.epoch + 1, **asdict(result), **val}
    record["samples_per_second"] = result.samples_per_second
    progress.history.append(record)
    rep.epoch_end(progress.epoch, result, val)
    progress.epoch, progress.step = progress.epoch + 1, 0
    score = next((val[k] for k in VAL_SCORES if k in val), float(progress.epoch))
    if score > progress.best:
        progress.best = score
        _save(run, progress, "best.pt")
    _save(run, progress, "last.pt")
    if pressed():  # Ctrl-C during validation or the writes: stop at this epoch boundary
        raise Interrupted(run.ckpt_dir / "last.pt")


def _train_steps(
    run: _Run,
    progress: _Progress,
    batches: list[Tensor],
    rep: Reporter,
    pressed: Callable[[], bool],
) -> EpochStats:
    """:func:`train_epoch` from the current step, with the run's failures named."""
    epoch = progress.epoch
    try:
        return train_epoch(
            run.model if run.frozen is None else run.frozen.head,
            run.objective,
            batches,
            run.splits.train.images if run.frozen is None else run.frozen.bank,
            run.optimizer,
            run.scheduler,
            config=run.config,
            stats=(run.splits.mean, run.splits.std),
            device=run.device,
            generator=run.aug_gen,
            start_step=progress.step,
            on_step=lambda info: rep.step(epoch, info),
            network=run.network,
            reseed=_reseed(run.config.run.seed, run.where, epoch),
            stop=pressed,
            epoch=epoch,
        )
    except RuntimeError as err:
        if not (run.where.distributed and distributed.is_collective_failure(err)):
            raise
        saved = epoch > 0 or progress.resumed
        raise distributed.PeersLost(_peers_lost(err, run.where, epoch, run.run_dir, saved)) from err


def _check_weights(run: _Run, progress: _Progress) -> None:
    """Stop with one line when a weight or buffer is no longer finite (never saved)."""
    bad = nonfinite_tensors(run.model)
    if not bad:
        return
    last = run.ckpt_dir / "last.pt"
    kept = (
        f"{last} still holds the last good epoch: continue from it with a lower learning rate "
        f"(tripletlab train --resume {run.run_dir} --lr {run.config.optim.lr / 10:g})"
        if last.is_file()
        else f"nothing was saved: start again with a lower --lr (e.g. {run.config.optim.lr / 10:g})"
    )
    raise NonFiniteWeights(
        f"in epoch {progress.epoch + 1} the model's {bad[0]} became NaN or infinite"
        + (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else "")
        + f" although the loss stayed finite: the run diverged; {kept}"
    )


def _checkpoint(run: _Run, progress: _Progress) -> dict[str, Any]:
    """What a checkpoint holds (the format is in :mod:`~tripletlab.training.checkpoints`)."""
    triplet = run.objective.triplet
    return {
        "version": CHECKPOINT_VERSION,
        "config": asdict(run.config),
        "inference": run.spec.to_dict(),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "aug_rng": run.aug_gen.get_state(),
        "miner_rng": triplet.generator.get_state()
        if triplet is not None
        else torch.zeros(0, dtype=torch.uint8),
        "epoch": progress.epoch,
        "step": progress.step,
        "best": progress.best,
        "history": progress.history,
        "train_seconds": progress.train_seconds,
        "world_size": run.where.world_size,
    }


def _save(run: _Run, progress: _Progress, name: str) -> None:
    """Write ``checkpoints/<name>`` atomically (rank 0); its callers checked the weights."""
    if run.where.writes:  # the weights were checked after the last step (_check_weights)
        atomic_torch_save(_checkpoint(run, progress), run.ckpt_dir / name)


#: The figures of the training itself in ``metrics.json``, outside the score groups.
TRAINING_KEYS = (
    "train_seconds",
    "best_epoch",
    "epochs_trained",
    "samples_per_second",
    "loss_time_share",
    "load_wait_share",
)


def _final_metrics(run: _Run, progress: _Progress, rep: Reporter) -> dict[str, Any]:
    """The best checkpoint's test metrics with the run's timings, written to
    ``metrics.json``: flat for a run trained on every class; ``{"seen": ..., "unseen":
    ...}`` for a class split (the test images of the training classes against the training
    set, and every image of the held-out classes each against the rest, leave-one-out).
    A dataset with a query/gallery split (In-Shop) scores its queries against its gallery
    (``retrieval_gallery`` and ``knn_gallery`` say ``"gallery"``). Each set also gets
    ``baselines`` (raw pixels, the untrained network) scored the same way
    (:func:`tripletlab.scores.baseline_scores`)."""
    best = load_checkpoint(run.ckpt_dir / "best.pt")
    run.model.load_state_dict(best["model"])
    rep.message("evaluating on the test split")
    config, splits = run.config, run.splits

    untrained = _untrained(run)

    def score(test_splits: Splits) -> dict[str, Any]:
        scores: dict[str, Any] = dict(
            evaluate(
                run.model,
                test_splits,
                run.device,
                distance=config.objective.distance,
                gallery=splits.train,
                held_out=run.val,
                mode=run.eval_mode,
                seed=config.run.seed,
            )
        )
        scores["baselines"] = baseline_scores(
            test_splits.test,
            untrained,
            (splits.mean, splits.std),
            run.device,
            gallery=test_splits.gallery,
            distance=config.objective.distance,
            mode=run.eval_mode,
            seed=config.run.seed,
        )
        return scores

    metrics: dict[str, Any]
    if has_class_split(config):
        seen_splits = replace(splits, test=seen_test_set(config, splits))
        metrics = {"seen": score(seen_splits), "unseen": score(splits)}
    else:
        metrics = score(splits)
    metrics["train_seconds"] = progress.train_seconds
    metrics["best_epoch"] = int(best["epoch"])
    metrics["epochs_trained"] = progress.epoch  # fewer than --epochs after an early stop
    history = progress.history
    if history:
        seconds = max(sum(h["seconds"] for h in history), 1e-9)
        timed = sum(h.get("timed_seconds", h["seconds"]) for h in history)
        samples = sum(h.get("timed_samples", h["samples"]) for h in history)
        metrics["samples_per_second"] = samples / max(timed, 1e-9)  # warm-up steps left out
        metrics["loss_time_share"] = sum(h["loss_seconds"] for h in history) / seconds
        metrics["load_wait_share"] = sum(h.get("load_seconds", 0.0) for h in history) / seconds
    atomic_write_text(run.run_dir / "metrics.json", to_json(metrics))
    return metrics
