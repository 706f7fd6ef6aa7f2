"""One objective's batches and loss (:class:`ObjectiveFn`), single-process or data-parallel."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab import distributed
from tripletlab.checks import check_choice, counted
from tripletlab.data import pair_indices, triplet_indices
from tripletlab.losses import (
    PAIR_MININGS,
    TRIPLET_MININGS,
    ContrastiveLoss,
    TripletMarginLoss,
    contrastive_loss,
    triplet_margin_loss,
)
from tripletlab.models import EmbeddingModel
from tripletlab.samplers import PKSampler
from tripletlab.training.config import TrainConfig


class ObjectiveFn:
    """One objective: its epoch batches and its loss on a loaded batch.

    Batches are index tensors: (B,) for P x K and softmax batches, (B, 2) pair rows
    ``(i, j)`` with a (B,) ``same`` column kept aside, or (B, 3) triplet rows ``(a, p, n)``.

    With ``world_size > 1`` each batch is this rank's contiguous ``B / world_size`` rows of
    the global batch, and triplet and contrastive losses are computed over the gathered
    global batch (``config.distributed.loss``; see :mod:`tripletlab.distributed`). A
    cross-batch memory (``objective.memory_size``) then holds the gathered global batches,
    the same on every rank; it counts its warm-up in calls of :meth:`loss`, one a step.
    """

    def __init__(
        self, config: TrainConfig, labels: Tensor, *, rank: int = 0, world_size: int = 1
    ) -> None:
        self.config = config
        o = config.objective
        self.kind = o.name
        self.labels = labels  # (N,) training labels
        self.rank, self.world_size = rank, world_size
        size = self.batch_size
        if size % world_size:
            raise ValueError(
                f"{world_size} processes cannot share batches of P x K = "
                f"{o.labels_per_batch} x {o.samples_per_label} = {size} items evenly; "
                f"choose -p/--labels-per-batch and -k/--samples-per-label with P x K a multiple "
                f"of {world_size}, or another number of processes"
            )
        margin, dist, seed = float(o.margin or 0.0), o.distance, config.run.seed
        self.triplet = (
            TripletMarginLoss(
                margin,
                check_choice("mining", o.mining, TRIPLET_MININGS),
                dist,
                check_finite=False,
                seed=seed,
                memory_size=o.memory_size,
                memory_warmup_steps=o.memory_warmup_steps,
            )
            if self.kind == "triplet"
            else None
        )
        self.contrastive = (
            ContrastiveLoss(
                0.0,
                margin,
                dist,
                check_choice("mining", o.mining, PAIR_MININGS),
                check_finite=False,
                memory_size=o.memory_size,
                memory_warmup_steps=o.memory_warmup_steps,
            )
            if self.kind == "contrastive"
            else None
        )
        self.sampler: PKSampler | None = None
        if self.kind in ("triplet", "contrastive"):
            with warnings.catch_warnings():  # fit reports the classes left out in its message
                warnings.simplefilter("ignore", UserWarning)
                self.sampler = PKSampler(
                    labels,
                    int(o.labels_per_batch or 1),
                    int(o.samples_per_label or 1),
                    seed=seed,
                    small_classes=o.small_classes,
                    num_replicas=world_size,
                    rank=rank,
                )

    @property
    def batch_size(self) -> int:
        """Items in a global batch, P x K (rows for the offline objectives)."""
        o = self.config.objective
        return int(o.labels_per_batch or 1) * int(o.samples_per_label or 1)

    def describe(self) -> str:
        """The batches in one line, for the run's first lines: P, K, their product, the steps
        an epoch, and the classes the sampler leaves out."""
        o, steps = self.config.objective, self.steps_per_epoch()
        text = (
            f"batches: P={o.labels_per_batch} classes x K={o.samples_per_label} images = "
            f"{self.batch_size}, {counted(steps, 'step')} an epoch"
        )
        if self.sampler is not None and self.sampler.num_left_out:
            few = 2 if o.small_classes == "fill" else o.samples_per_label
            text += f"; {self.sampler.num_left_out} classes with fewer than {few} images left out"
        return text

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
        g = torch.Generator().manual_seed(c.run.seed * 1_000_003 + epoch)
        size = self.batch_size
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

    def pass_steps(self) -> int:
        """Batches in one pass over the training set."""
        if self.sampler is not None:
            return len(self.sampler)
        return max(1, self.labels.shape[0] // self.batch_size)

    def steps_per_epoch(self) -> int:
        """Number of batches :meth:`batches` yields per epoch, without building them: the
        config's ``steps_per_epoch`` when set (more than one pass over the data draws further
        passes, seeded by epoch and pass), else one pass over the training set."""
        if self.config.optim.steps_per_epoch is not None:
            return self.config.optim.steps_per_epoch
        return self.pass_steps()

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
        o = self.config.objective
        margin, dist = float(o.margin or 0.0), o.distance
        module = self.triplet if self.triplet is not None else self.contrastive
        if module is not None:
            e, y, anchors = out.float(), self.labels[batch].to(out.device), None
            if self.world_size > 1:  # mine over the global batch
                e, y, anchors = distributed.global_batch(e, y, self.config.distributed.loss)
            loss, s = module.forward_with_stats(e, y, anchors)
            return loss, s.fraction_active, s.pos_distance, s.neg_distance
        if self.kind == "softmax":
            y = self.labels[batch].to(out.device)
            wrong = (out.detach().argmax(1) != y).float().mean()
            return F.cross_entropy(out.float(), y), wrong, zero, zero
        e, b = out.float(), batch.shape[0]
        if self.kind == "siamese":
            same = batch[:, 2].to(out.device).bool()
            loss = contrastive_loss(e[:b], e[b:], same, 0.0, margin, dist)
            return loss, zero, zero, zero
        loss = triplet_margin_loss(e[:b], e[b : 2 * b], e[2 * b :], margin, dist)
        return loss, zero, zero, zero

    def over_ranks(self, values: Tensor) -> Tensor:
        """A step's logged values, the same on every rank: averaged over the ranks where each
        computed its own loss (local anchors, softmax, offline pairs and triplets); a global
        loss is already the same everywhere."""
        if self.world_size == 1 or (
            self.sampler is not None and self.config.distributed.loss == "global"
        ):
            return values
        return distributed.mean_over_ranks(values)
