"""Training: a typed config, one plain epoch function that returns its diagnostics, and
``fit``, which runs epochs with checkpoints, resume and a final evaluation.

The loop never prints or logs by itself: :func:`train_epoch` returns :class:`EpochStats`
and calls an optional per-step callback; :func:`fit` takes a :class:`Reporter` that the CLI
implements (progress bar, JSONL log, TensorBoard). Everything that the run writes goes to
its run folder, each file atomically (temporary file + rename).

Objectives:
    - ``triplet``: online triplet loss on P x K batches, any mining mode.
    - ``contrastive``: online contrastive loss on P x K batches (``all`` or
      ``hard_negative`` pairs).
    - ``siamese``: offline random pairs, contrastive loss (siamese-triplet's SiameseMNIST).
    - ``triplet-offline``: offline random triplets (siamese-triplet's TripletMNIST).
    - ``softmax``: cross-entropy classification baseline; the embedding is the layer before
      the classifier.

Under ``torchrun`` (a process group is initialised), :func:`fit` trains data-parallel: each
rank loads its shard of every batch, triplet and contrastive losses mine over the gathered
global batch, DDP averages the gradients, and rank 0 alone reads and writes the run folder
(:mod:`tripletlab.distributed`). A single process runs exactly as without it.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tripletlab import distributed
from tripletlab.data import (
    ImageSet,
    Splits,
    augment,
    class_split,
    load_dataset,
    normalize,
    pair_indices,
    triplet_indices,
)
from tripletlab.distances import DISTANCES
from tripletlab.losses import (
    PAIR_MININGS,
    TRIPLET_MININGS,
    ContrastiveLoss,
    TripletMarginLoss,
    contrastive_loss,
    triplet_margin_loss,
)
from tripletlab.metrics import knn_accuracy
from tripletlab.models import MODELS, EmbeddingModel, build_model, fuse_batchnorm
from tripletlab.samplers import PKSampler

Objective = Literal["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
OptimizerName = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
Schedule = Literal["cosine", "step", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
DeviceName = Literal["auto", "cpu", "cuda"]
AmpMode = Literal["auto", "on", "off"]

CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """A run that cannot go on (unusable run folder or checkpoint): one line for the user."""


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run folder.

    ``None`` means "the default for this dataset or objective", resolved by
    :meth:`resolved`.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    out: str | None = None
    model: str = "small"
    width: int | None = None
    embedding_dim: int = 64
    normalize_embeddings: bool = True
    objective: str = "triplet"
    mining: str | None = None
    margin: float | None = None
    distance: str = "euclidean"
    labels_per_batch: int | None = None
    samples_per_label: int = 16
    epochs: int = 13
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    augment: bool = True
    crop_padding: int | None = None
    hflip: bool | None = None
    tta: bool | None = None
    image_size: int = 28
    train_classes: list[int] | None = None
    test_classes: list[int] | None = None
    unseen_classes: int | None = None
    val_size: int = 2000
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    eval_batch_size: int = 256
    tensorboard: bool = False
    strict: bool = False
    distributed_loss: str = "global"
    sync_bn: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """A copy with dataset- and objective-dependent defaults filled in, validated."""
        c = TrainConfig(**asdict(self))
        _check_choice("objective", c.objective, OBJECTIVES)
        _check_choice("model", c.model, MODELS)
        _check_choice("distance", c.distance, DISTANCES)
        _check_choice("optimizer", c.optimizer, OPTIMIZERS)
        _check_choice("schedule", c.schedule, SCHEDULES)
        _check_choice("device", c.device, get_args(DeviceName))
        _check_choice("amp", c.amp, get_args(AmpMode))
        _check_choice("distributed loss", c.distributed_loss, distributed.DISTRIBUTED_LOSSES)
        if c.mining is None:
            # semi-hard: batch-hard from a fresh network collapses to d_ap = d_an (the loss
            # sits at the margin) at these learning rates; semi-hard does not (bench_models).
            c.mining = {"triplet": "semi_hard", "contrastive": "hard_negative"}.get(
                c.objective, "none"
            )
        if c.objective == "triplet":
            _check_choice("mining", c.mining, TRIPLET_MININGS)
        elif c.objective == "contrastive":
            _check_choice("mining (for contrastive)", c.mining, PAIR_MININGS)
        if c.margin is None:
            c.margin = 1.0 if c.objective in ("contrastive", "siamese") else 0.2
        if not math.isfinite(c.margin) or c.margin < 0:
            raise ValueError(f"--margin must be a finite number >= 0, got {c.margin}")
        natural = c.dataset.startswith("imagefolder:") or c.dataset == "fashion-mnist"
        if c.hflip is None:
            c.hflip = natural  # digits and handwriting are not mirror-symmetric
        if c.tta is None:
            c.tta = c.hflip  # evaluate with flipped copies when trained with them
        if c.crop_padding is None:
            # 28x28 sets are centred; a padded random crop lowered Fashion-MNIST's 1-NN
            # accuracy at the default budget (docs/results.md); image folders keep it.
            c.crop_padding = {"digits": 1, "fashion-mnist": 0, "mnist": 0}.get(c.dataset, 2)
        names = ("labels_per_batch", "samples_per_label", "epochs", "steps_per_epoch")
        for name in (*names, "embedding_dim", "width"):
            if getattr(c, name) is not None and getattr(c, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
        if c.lr <= 0 or not math.isfinite(c.lr):
            raise ValueError(f"--lr must be a positive number, got {c.lr}")
        return c


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a dict (a config file), rejecting unknown keys."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    return TrainConfig(**raw)


# ---------------------------------------------------------------------------------- I/O


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A reader sees the old file or the new one, never a part; a failed write leaves no
    temporary file. The folder is created if needed; the file gets the usual permissions
    (``0o666`` less the umask, where ``mkstemp`` would give ``0o600``). Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to memory, then :func:`atomic_write_bytes` (so the usual permissions)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer().tobytes())


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


# ---------------------------------------------------------------------------------- pieces


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16; Linux only).

    Without it oneDNN emulates bfloat16 and mixed precision is slower than float32.
    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when None).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_amp(mode: str, device: torch.device) -> bool:
    """Train with bfloat16 autocast? ``auto``: on CUDA, and on CPUs with native bfloat16."""
    if mode == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return mode == "on"


def embedding_mode(config: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """``(flip, amp)`` for :func:`embed`: a run is evaluated as it was trained (flip
    test-time augmentation when ``config.tta``, bfloat16 autocast when it trained with it)."""
    return bool(config.tta), use_amp(config.amp, device)


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(config: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    table: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        ),
    }
    return table[config.optimizer]()


def make_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then cosine / step / constant."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.schedule == "step":
            return 0.1 ** int(progress * 3)  # x0.1 at 1/3 and 2/3 of the run
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochStats:
    """What one epoch did, averaged over its steps."""

    loss: float
    fraction_active: float
    pos_distance: float
    neg_distance: float
    steps: int
    samples: int
    seconds: float
    loss_seconds: float  # wall time in mining + loss (their forward pass; CPU-timed, so on
    # CUDA it measures the launch only)

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class StepInfo:
    """Passed to the per-step callback (values already on the host)."""

    step: int
    loss: float
    fraction_active: float
    lr: float
    samples: int


class ObjectiveFn:
    """One objective: its epoch batches and its loss on a loaded batch.

    Batches are index tensors: (B,) for P x K and softmax batches, (B, 2) pair rows
    ``(i, j)`` with a (B,) ``same`` column kept aside, or (B, 3) triplet rows ``(a, p, n)``.

    With ``world_size > 1`` each batch is this rank's contiguous ``B / world_size`` rows of
    the global batch, and triplet and contrastive losses are computed over the gathered
    global batch (``config.distributed_loss``; see :mod:`tripletlab.distributed`).
    """

    def __init__(
        self, config: TrainConfig, labels: Tensor, *, rank: int = 0, world_size: int = 1
    ) -> None:
        self.config = config
        self.kind = config.objective
        self.labels = labels  # (N,) training labels
        self.rank, self.world_size = rank, world_size
        size = int(config.labels_per_batch or 1) * config.samples_per_label
        if size % world_size:
            raise ValueError(
                f"{world_size} processes cannot share batches of P x K = "
                f"{config.labels_per_batch} x {config.samples_per_label} = {size} items evenly; "
                f"choose -p/--labels-per-batch and -k/--samples-per-label with P x K a multiple "
                f"of {world_size}, or another number of processes"
            )
        margin, dist = float(config.margin or 0.0), config.distance
        self.triplet = (
            TripletMarginLoss(margin, config.mining, dist, check_finite=False, seed=config.seed)  # type: ignore[arg-type]
            if self.kind == "triplet"
            else None
        )
        self.contrastive = (
            ContrastiveLoss(0.0, margin, dist, config.mining, check_finite=False)  # type: ignore[arg-type]
            if self.kind == "contrastive"
            else None
        )
        self.sampler = (
            PKSampler(
                labels,
                int(config.labels_per_batch or 1),
                config.samples_per_label,
                seed=config.seed,
                num_replicas=world_size,
                rank=rank,
            )
            if self.kind in ("triplet", "contrastive")
            else None
        )

    def batches(self, epoch: int) -> list[Tensor]:
        """This epoch's index batches, the same for the same (seed, epoch)."""
        c = self.config
        steps = self.steps_per_epoch()
        if self.sampler is not None:
            out: list[Tensor] = []
            for draw in range(-(-steps // len(self.sampler))):  # passes over the data
                self.sampler.set_epoch(epoch + draw * 1_000_003)
                out.extend(torch.tensor(b) for b in self.sampler)
            return out[:steps]
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
        size = int(c.labels_per_batch or 1) * c.samples_per_label
        n = self.labels.shape[0]
        count = steps * size
        if self.kind == "softmax":
            perm = torch.randperm(n, generator=g).repeat(count // n + 2)
            rows = perm[:count].view(-1, size)  # (S, B)
        elif self.kind == "siamese":
            i, j, same = pair_indices(self.labels, count, generator=g)
            rows = torch.stack([i, j, same.long()], 1).view(-1, size, 3)  # (S, B, 3)
        else:
            a, p, n_ = triplet_indices(self.labels, count, generator=g)
            rows = torch.stack([a, p, n_], 1).view(-1, size, 3)  # (S, B, 3)
        if self.world_size > 1:  # this rank's rows of every global batch
            m = size // self.world_size
            rows = rows[:, self.rank * m : (self.rank + 1) * m]  # (S, B / N, ...)
        return list(rows)

    def steps_per_epoch(self) -> int:
        """Number of batches :meth:`batches` yields per epoch, without building them: the
        config's ``steps_per_epoch`` when set (more than one pass over the data draws further
        passes, seeded by epoch and pass), else one pass over the training set."""
        if self.config.steps_per_epoch is not None:
            return self.config.steps_per_epoch
        if self.sampler is not None:
            return len(self.sampler)
        size = int(self.config.labels_per_batch or 1) * self.config.samples_per_label
        return max(1, self.labels.shape[0] // size)

    def images_of(self, batch: Tensor) -> Tensor:
        """Flat image indices to load for a batch (see the class docstring)."""
        if batch.dim() == 1:
            return batch
        cols = 2 if self.kind == "siamese" else 3
        return batch[:, :cols].T.reshape(-1)  # (cols * B,) column by column

    def forward(self, model: EmbeddingModel, x: Tensor) -> Tensor:
        """The network's output for a loaded batch: embeddings, or logits for softmax."""
        return model.logits(x) if self.kind == "softmax" else model(x)

    def loss(self, out: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(loss, fraction_active, pos_distance, neg_distance)`` from :meth:`forward`'s output.

        For softmax, ``fraction_active`` is the batch's error rate.
        """
        zero = out.new_zeros(()).float()
        margin, dist = float(self.config.margin or 0.0), self.config.distance
        module = self.triplet if self.triplet is not None else self.contrastive
        if module is not None:
            e, y, anchors = out.float(), self.labels[batch].to(out.device), None
            if self.world_size > 1:  # mine over the global batch
                e, y, anchors = distributed.global_batch(e, y, self.config.distributed_loss)
            loss, s = module.forward_with_stats(e, y, anchors)
            return loss, s.fraction_active, s.pos_distance, s.neg_distance
        if self.kind == "softmax":
            y = self.labels[batch].to(out.device)
            wrong = (out.detach().argmax(1) != y).float().mean()
            return F.cross_entropy(out.float(), y), wrong, zero, zero
        e, b = out.float(), batch.shape[0]
        if self.kind == "siamese":
            same = batch[:, 2].to(out.device).bool()
            loss = contrastive_loss(e[:b], e[b:], same, 0.0, margin, dist)  # type: ignore[arg-type]
            return loss, zero, zero, zero
        loss = triplet_margin_loss(e[:b], e[b : 2 * b], e[2 * b :], margin, dist)  # type: ignore[arg-type]
        return loss, zero, zero, zero

    def over_ranks(self, values: Tensor) -> Tensor:
        """A step's logged values, the same on every rank: averaged over the ranks where each
        computed its own loss (local anchors, softmax, offline pairs and triplets); a global
        loss is already the same everywhere."""
        if self.world_size == 1 or (
            self.sampler is not None and self.config.distributed_loss == "global"
        ):
            return values
        return distributed.mean_over_ranks(values)


def load_batch(
    images: Tensor,
    index: Tensor,
    config: TrainConfig,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Gather, augment (when ``generator`` is given) and normalise a batch of uint8 images."""
    x = images[index]  # (B, C, H, W) uint8
    if generator is not None and config.augment:
        x = augment(
            x,
            crop_padding=int(config.crop_padding or 0),
            hflip=bool(config.hflip),
            generator=generator,
        )
    x = normalize(x.to(device, non_blocking=True), *stats)
    return x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU


def train_epoch(
    model: EmbeddingModel,
    objective: ObjectiveFn,
    batches: list[Tensor],
    images: Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    config: TrainConfig,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    generator: torch.Generator,
    start_step: int = 0,
    on_step: Callable[[StepInfo], None] | None = None,
    network: nn.Module | None = None,
    reseed: Callable[[int], int] | None = None,
) -> EpochStats:
    """Train on ``batches[start_step:]``; return the epoch's averaged diagnostics.

    ``network``: what to call for the forward pass (default ``objective.forward(model, ·)``;
    the DDP wrapper of it in a distributed run). ``reseed``: seed ``generator`` with
    ``reseed(i)`` before step ``i`` (distributed runs). ``samples`` counts the global batch.

    Raises:
        TrainingError: the loss became NaN or infinite (the step is named; the weights are
            left as they were before that step's update).
    """
    model.train()
    sums = torch.zeros(4, dtype=torch.float64)
    steps = samples = 0
    loss_seconds = 0.0
    t_start = time.perf_counter()
    amp = use_amp(config.amp, device)
    for i in range(start_step, len(batches)):
        batch = batches[i]
        if reseed is not None:
            generator.manual_seed(reseed(i))
        x = load_batch(images, objective.images_of(batch), config, stats, device, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = objective.forward(model, x) if network is None else network(x)
        t_loss = time.perf_counter()
        loss, active, d_pos, d_neg = objective.loss(out, batch)  # mining + loss, in float32
        loss_seconds += time.perf_counter() - t_loss
        values = torch.stack([loss.detach().float(), active.float(), d_pos.float(), d_neg.float()])
        values = objective.over_ranks(values)
        host = values.double().cpu()  # one read-back a step, for the NaN check and the bar
        if not math.isfinite(float(host[0])):
            raise NonFiniteLoss(
                f"the loss became {float(host[0])} at step {i} of this epoch; lower the learning "
                f"rate (--lr {config.lr / 10:g}) and resume or restart"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        sums += host
        steps += 1
        samples += int(x.shape[0]) * objective.world_size  # every rank loads as many
        if on_step is not None:
            on_step(
                StepInfo(
                    step=i,
                    loss=float(host[0]),
                    fraction_active=float(host[1]),
                    lr=float(optimizer.param_groups[0]["lr"]),
                    samples=int(x.shape[0]) * objective.world_size,
                )
            )
    mean = (sums / max(steps, 1)).tolist()
    return EpochStats(
        loss=mean[0],
        fraction_active=mean[1],
        pos_distance=mean[2],
        neg_distance=mean[3],
        steps=steps,
        samples=samples,
        seconds=time.perf_counter() - t_start,
        loss_seconds=loss_seconds,
    )


@torch.no_grad()
def embed(
    model: EmbeddingModel,
    images: Tensor,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    batch_size: int = 256,
    *,
    flip: bool = False,
    amp: bool | None = None,
) -> Tensor:
    """Embeddings of uint8 images (N, C, H, W) in eval mode -> (N, D) float32 on ``device``.

    ``amp``: run the network under bfloat16 autocast (None: on CUDA only); the embeddings are
    returned in float32 either way.

    With ``flip`` (test-time augmentation for runs trained with horizontal flips), each
    embedding is the mean of the image's and its mirror image's, L2-normalised again when the
    model normalises its output: one embedding per image, twice the compute.
    """
    model.eval()
    net = fuse_batchnorm(model)  # same outputs up to rounding, ~1.5x faster on a CPU
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = normalize(images[s : s + batch_size].to(device), *stats)
        x = x.contiguous(memory_format=torch.channels_last)
        enabled = device.type == "cuda" if amp is None else amp
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
            e = net(x).float()  # (b, D)
            if flip:
                e = (e + net(x.flip(-1)).float()) / 2
                if model.normalize:
                    e = F.normalize(e, dim=1)
            out.append(e)
    if not out:
        return torch.zeros(0, model.embedding_dim, device=device)
    return torch.cat(out)


def evaluate(
    model: EmbeddingModel,
    splits: Splits,
    device: torch.device,
    *,
    distance: str = "euclidean",
    gallery: ImageSet | None = None,
    held_out: ImageSet | None = None,
    batch_size: int = 256,
    seed: int = 0,
    flip: bool = False,
    amp: bool | None = None,
) -> dict[str, float | int | str | None]:
    """The end-of-run metrics (the keys of ``metrics.json``), fractions in [0, 1].

    ``precision_at_1``, ``r_precision``, ``map_at_r``, ``recall_at_{1,2,4,8}``: each test
    item against the rest of the test set. ``knn_accuracy``: 1-NN of each test item with
    ``gallery`` (the training set) as gallery; when the test classes are not in the gallery
    (class-disjoint split) the gallery is the rest of the test set instead, and
    ``knn_gallery`` says so. ``pair_accuracy``, ``pair_threshold``, ``pair_floor``:
    torchvision's best-threshold accuracy over all test pairs ``i < j``;
    ``held_out_pair_accuracy``: the same at the threshold fitted on the pairs of
    ``held_out`` (the validation set; default a subsample of the gallery). ``roc_auc``,
    ``tar_at_far_*``, ``nmi``, ``ami``: see :mod:`tripletlab.evaluation`, which computes
    them all (:func:`tripletlab.evaluation.evaluate_images`). ``flip``: every embedding is
    averaged with its mirror image's; ``amp``: embed under bfloat16 autocast
    (see :func:`embed`).
    """
    from tripletlab.evaluation import evaluate_images  # it imports this module

    d: Any = distance
    return evaluate_images(
        model,
        splits.test,
        (splits.mean, splits.std),
        device,
        gallery=gallery if gallery is not None else splits.train,
        held_out=held_out,
        distance=d,
        batch_size=batch_size,
        seed=seed,
        flip=flip,
        amp=amp,
    )


# ---------------------------------------------------------------------------------- fit


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
        config.dataset,
        data_dir=Path(config.data_dir) if config.data_dir else None,
        image_size=config.image_size,
        strict=config.strict,
        seed=config.seed,
    )


def prepare_data(config: TrainConfig) -> tuple[Splits, ImageSet | None]:
    """Load the dataset, apply a class-disjoint split, and hold out a validation set.

    Returns the splits (train without the validation items) and the validation set (or
    ``None`` with ``val_size = 0``). The validation items are a seeded random subset of the
    training split; they pick the best checkpoint, so the test split is never looked at
    before the end of the run.
    """
    splits = load_config_dataset(config)
    if config.train_classes or config.test_classes or config.unseen_classes:
        splits = class_split(
            splits,
            train_classes=config.train_classes,
            test_classes=config.test_classes,
            unseen_classes=config.unseen_classes,
        )
    n = len(splits.train)
    val_size = min(config.val_size, n // 5)
    if val_size <= 0:
        return splits, None
    g = torch.Generator().manual_seed(config.seed + 17)
    perm = torch.randperm(n, generator=g)
    val = splits.train.subset(perm[:val_size])
    train = splits.train.subset(perm[val_size:].sort().values)
    return Splits(splits.name, train, splits.test, splits.mean, splits.std), val


def _validate(
    model: EmbeddingModel,
    val: ImageSet,
    gallery: ImageSet,
    splits: Splits,
    device: torch.device,
    distance: str,
    amp: bool,
) -> dict[str, float]:
    stats = (splits.mean, splits.std)
    e_val = embed(model, val.images, stats, device, amp=amp)
    e_gal = embed(model, gallery.images, stats, device, amp=amp)
    d: Any = distance
    acc = knn_accuracy(e_val, val.labels.to(device), e_gal, gallery.labels.to(device), distance=d)
    return {"val_knn_accuracy": acc}


def _run_settings(config: TrainConfig, labels: Tensor) -> dict[str, Any]:
    """What every rank of a distributed run must agree on: the config (less the paths and
    thread counts, which may differ between machines) and the training labels."""
    settings = asdict(config)
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
        config.epochs = epochs
    config = config.resolved()

    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.device_for(pick_device(config.device), where)
    torch.manual_seed(config.seed)
    splits, val = prepare_data(config)
    train = splits.train
    num_classes = int(train.labels.max()) + 1 if len(train) else 0
    if config.labels_per_batch is None:  # P: 10 classes a batch, or all when there are fewer
        config.labels_per_batch = min(10, int(torch.unique(train.labels).numel()))
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
        config.model,
        in_channels=train.images.shape[1],
        image_size=train.images.shape[-1],
        embedding_dim=config.embedding_dim,
        width=config.width,
        normalize=config.normalize_embeddings,
        num_classes=num_classes if config.objective == "softmax" else None,
    )
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    network = None
    if where.distributed:
        if config.sync_bn:
            distributed.sync_batchnorm(model, device)
        network = distributed.data_parallel(model, objective.forward, device)
    eval_flip, eval_amp = embedding_mode(config, device)
    steps_per_epoch = objective.steps_per_epoch()
    optimizer = make_optimizer(config, iter(model.parameters()))
    scheduler = make_schedule(config, optimizer, steps_per_epoch)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
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

    def state(epoch_: int, step_: int) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": asdict(config),
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

    while epoch < config.epochs:
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
                reseed=_reseed(config.seed, where, epoch),
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
            _validate(model, val, gallery, splits, device, config.distance, eval_amp)
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
        distance=config.distance,
        gallery=train,
        held_out=val,
        batch_size=config.eval_batch_size,
        seed=config.seed,
        flip=eval_flip,
        amp=eval_amp,
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
