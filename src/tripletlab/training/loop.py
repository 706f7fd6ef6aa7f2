"""The plain loop: load a batch, train one epoch and return its diagnostics, score a model
on the test split."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tripletlab.data import (
    Augmentation,
    DiskImages,
    Images,
    ImageSet,
    Splits,
    augment,
    default_augmentation,
    normalize,
    photo_augment,
)
from tripletlab.distances import Distance
from tripletlab.embedding import EmbedMode, use_amp
from tripletlab.models import EmbeddingModel
from tripletlab.scores import Metrics, evaluate_images
from tripletlab.training.config import DataConfig, TrainConfig
from tripletlab.training.errors import NonFiniteLoss
from tripletlab.training.frozen import FeatureBank
from tripletlab.training.objective import ObjectiveFn
from tripletlab.training.optim import set_train_mode


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
    warmup_steps: int = 0  # the first steps, left out of the throughput
    load_seconds: float = 0.0  # wall time the steps waited for their images (the loader)
    timed_samples: int = 0  # samples and seconds of the steps after them
    timed_seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        """Throughput without the warm-up steps (the whole epoch's when it had no other)."""
        if self.timed_seconds > 0:
            return self.timed_samples / self.timed_seconds
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class StepInfo:
    """Passed to the per-step callback (values already on the host)."""

    step: int
    loss: float
    fraction_active: float
    lr: float
    samples: int


def augment_batch(images: Tensor, data: DataConfig, generator: torch.Generator) -> Tensor:
    """The run's augmentation (``data.augment``, which a run resolves before training; where
    it is None, that of a network trained from scratch,
    :func:`~tripletlab.data.default_augmentation`) of (B, C, H, W) uint8 images, on their
    device: (B, C, H, W) uint8."""
    name = data.augment or default_augmentation(pretrained=False)
    steps: dict[Augmentation, Callable[[Tensor], Tensor]] = {
        "none": lambda x: x,
        "digits": lambda x: augment(
            x, crop_padding=int(data.crop_padding or 0), hflip=bool(data.hflip), generator=generator
        ),
        "photos": lambda x: photo_augment(
            x,
            scale=(data.crop_scale, 1.0),
            hflip=bool(data.hflip),
            brightness=data.jitter,
            contrast=data.jitter,
            saturation=data.jitter,
            hue=data.jitter / 4,
            grayscale=data.grayscale,
            generator=generator,
        ),
    }
    return steps[name](images)


def load_batch(
    images: Images,
    index: Tensor,
    config: TrainConfig,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Gather, augment (when ``generator`` is given) and normalise a batch of uint8 images."""
    return prepare_batch(images[index], config, stats, device, generator)


def prepare_batch(
    x: Tensor,
    config: TrainConfig,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Move (B, C, H, W) uint8 images to ``device``, augment them there (when ``generator``
    is given; :func:`augment_batch`) and normalise them."""
    x = x.to(device, non_blocking=True)  # (B, C, H, W) uint8
    if generator is not None:
        x = augment_batch(x, config.data, generator)
    x = normalize(x, *stats)
    return x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU


def read_ahead(
    images: Images | FeatureBank, indices: Sequence[Tensor]
) -> Iterator[tuple[Tensor, float]]:
    """``images[index]`` for each of ``indices``, in order, with the seconds the caller
    waited for it. Images on disk are read one batch ahead by a thread while the caller
    computes (the reads release the GIL); in-memory ones are gathered when asked for."""
    if not isinstance(images, DiskImages):
        for index in indices:
            t = time.perf_counter()
            x = images[index]  # (B, C, H, W)
            yield x, time.perf_counter() - t
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tripletlab-read") as pool:
        pending = pool.submit(images.__getitem__, indices[0]) if indices else None
        for i in range(len(indices)):
            assert pending is not None
            t = time.perf_counter()
            x = pending.result()  # (B, C, H, W)
            waited = time.perf_counter() - t
            if i + 1 < len(indices):
                pending = pool.submit(images.__getitem__, indices[i + 1])
            yield x, waited


#: Steps at the start of each epoch left out of its throughput (allocator, kernel selection
#: and caches warm up there); all but the last one in a shorter epoch.
WARMUP_STEPS = 5


def train_epoch(
    model: EmbeddingModel,
    objective: ObjectiveFn,
    batches: list[Tensor],
    images: Images | FeatureBank,
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
    stop: Callable[[], bool] | None = None,
    epoch: int = 0,
) -> EpochStats:
    """Train on ``batches[start_step:]``; return the epoch's averaged diagnostics.

    ``network``: what to call for the forward pass (default ``objective.forward(model, ·)``;
    the DDP wrapper of it in a distributed run, its compiled form with ``--compile``).
    ``reseed``: seed ``generator`` with ``reseed(i)`` before step ``i`` (distributed runs).
    ``samples`` counts the global batch.
    ``stop``: asked before each step; when it says True the epoch ends there (``steps``
    then counts the steps done, fewer than the batches left), between two whole steps.
    ``samples_per_second`` leaves out the first :data:`WARMUP_STEPS` steps. ``epoch``
    (0-based) decides what trains (:func:`~tripletlab.training.optim.set_train_mode`: a
    frozen backbone, frozen BatchNorm statistics). ``images`` may be a
    :class:`~tripletlab.training.frozen.FeatureBank` (``--frozen-backbone``): ``model`` is
    then the head alone, fed the features as they are.

    Raises:
        TrainingError: the loss became NaN or infinite (the step is named; the weights are
            left as they were before that step's update).
    """
    set_train_mode(model, config, epoch)
    sums = torch.zeros(4, dtype=torch.float64)
    steps = samples = 0
    loss_seconds = load_seconds = 0.0
    t_start = time.perf_counter()
    step_ends: list[float] = []  # when each step ended, for the throughput
    step_samples: list[int] = []
    amp = use_amp(config.run.amp, device)
    todo = batches[start_step:]
    reads = read_ahead(images, [objective.images_of(b) for b in todo])
    for i, batch in zip(range(start_step, len(batches)), todo, strict=True):
        if stop is not None and stop():
            break
        if reseed is not None:
            generator.manual_seed(reseed(i))
        raw, waited = next(reads)  # after the stop and the seed: a resume draws alike
        load_seconds += waited
        if isinstance(images, FeatureBank):  # the frozen backbone's features: the head's input
            x = raw.to(device)
        else:
            x = prepare_batch(raw, config, stats, device, generator)
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
                f"rate (--lr {config.optim.lr / 10:g}) and resume or restart"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        sums += host
        steps += 1
        samples += int(x.shape[0]) * objective.world_size  # every rank loads as many
        step_ends.append(time.perf_counter())
        step_samples.append(int(x.shape[0]) * objective.world_size)
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
    skip = min(WARMUP_STEPS, max(steps - 1, 0))
    timed_from = step_ends[skip - 1] if skip else t_start
    return EpochStats(
        loss=mean[0],
        fraction_active=mean[1],
        pos_distance=mean[2],
        neg_distance=mean[3],
        steps=steps,
        samples=samples,
        seconds=time.perf_counter() - t_start,
        loss_seconds=loss_seconds,
        warmup_steps=skip,
        load_seconds=load_seconds,
        timed_samples=sum(step_samples[skip:]),
        timed_seconds=step_ends[-1] - timed_from if step_ends else 0.0,
    )


def evaluate(
    model: EmbeddingModel,
    splits: Splits,
    device: torch.device,
    *,
    distance: Distance = "euclidean",
    gallery: ImageSet | None = None,
    held_out: ImageSet | None = None,
    mode: EmbedMode | None = None,
    seed: int = 0,
) -> Metrics:
    """The end-of-run metrics (the keys of ``metrics.json``), fractions in [0, 1].

    ``precision_at_1``, ``r_precision``, ``map_at_r``, ``recall_at_{1,2,4,8}``: each test
    item against the rest of the test set. ``knn_accuracy``: 1-NN of each test item with
    ``gallery`` (the training set) as gallery; when the test classes are not in the gallery
    (class-disjoint split) the gallery is the rest of the test set instead, and
    ``knn_gallery`` says so. ``pair_accuracy``, ``pair_threshold``, ``pair_floor``:
    torchvision's best-threshold accuracy over all test pairs ``i < j``;
    ``held_out_pair_accuracy``: the same at the threshold fitted on the pairs of
    ``held_out`` (the validation set; default a subsample of the gallery). With a
    query/gallery split (``splits.gallery``) the test items are queries against that gallery
    for retrieval and k-NN instead. ``roc_auc``,
    ``tar_at_far_*``, ``nmi``, ``ami``: see :mod:`tripletlab.scores`, which computes them
    all (:func:`tripletlab.scores.evaluate_images`). ``mode``: how to embed (flip TTA,
    bfloat16, batch size; :class:`tripletlab.embedding.EmbedMode`).
    """
    return evaluate_images(
        model,
        splits.test,
        (splits.mean, splits.std),
        device,
        gallery=gallery if gallery is not None else splits.train,
        query_gallery=splits.gallery,
        held_out=held_out,
        distance=distance,
        mode=mode,
        seed=seed,
    )
