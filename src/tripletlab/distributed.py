"""Data-parallel training over several processes (``torchrun``): the process group, the
gather of embeddings with gradients, the check that every rank runs the same config, and
the helpers that let rank 0 alone touch the run folder.

Launch ``torchrun --nproc-per-node N -m tripletlab train ...`` (see ``docs/distributed.md``).
Each process computes the embeddings of its ``B / N`` rows of the global P x K batch
(:class:`tripletlab.samplers.PKSampler` shards it by rank); the parameters' gradients are
averaged by ``DistributedDataParallel`` (DDP). The backend is ``gloo`` on CPU and ``nccl`` for
CUDA tensors, chosen by :func:`backend`.

Cross-process mining, exactly (``distributed_loss = "global"``, the default). Let the
global batch ``E = (e_1 .. e_B)`` be split over N ranks, rank r owning the rows ``R_r``, and
``L(E)`` the loss a single process computes on it (mining included). Every rank gathers
``E`` with :func:`gather_with_grad` and computes the same ``L(E)``. The gather's backward
sums, over all ranks, the gradient each rank computed for the rows of ``R_r`` and hands the
sum to their owner: ``N dL/de_i`` for ``i`` in ``R_r``. Rank r's parameter gradient is then
``g_r = sum_{i in R_r} N (dL/de_i) (de_i/dtheta)``, and DDP averages:
``(1/N) sum_r g_r = sum_i (dL/de_i)(de_i/dtheta) = dL/dtheta``. So the loss needs no extra
factor (``s = 1``): the N from the summed backward cancels DDP's ``1/N``. (A gather whose
backward keeps only the rank's own copy of the gradient would need ``s = N``.)
``tests/test_distributed.py`` checks the loss and every gradient against a single process
on the concatenated batch. BatchNorm is the exception: each rank normalises its own rows.

"Local anchors, global references" (``distributed_loss = "local"``, PyTorch Metric
Learning's ``DistributedLossWrapper(efficient=True)``). Each rank gathers ``E`` without
gradients, puts its own rows back with theirs, and keeps only the tuples whose anchor it
owns (``anchors=`` of the losses), averaged over its own tuples: ``L_r``. DDP's mean gives
``(1/N) sum_r dL_r/dtheta`` where only rank r's rows carry gradient in ``L_r``. It differs
from the exact gradient in two ways: (1) a tuple whose positive or negative lives on another
rank than its anchor sends no gradient to that item (with N dividing P every class lies on
one rank, so only cross-rank negatives lose theirs); (2) each rank's tuples are weighted
``1 / (N T_r)`` instead of ``1 / T`` (T_r: the rank's tuples, T: all), which is the same
when every rank selects as many tuples (batch-hard and semi-hard on P x K batches) but not
for batch-all (active triplets) or hard-negative pairs. It saves the gradient's all-reduce
and the loss's backward over the other ranks' anchors; mining still runs over the global
batch on every rank.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tripletlab.checks import check_choice
from tripletlab.models import Forward

DistributedLoss = Literal["global", "local"]
DISTRIBUTED_LOSSES: tuple[DistributedLoss, ...] = get_args(DistributedLoss)
#: Seconds a collective waits for the other ranks before it fails (``--dist-timeout``).
DEFAULT_TIMEOUT_S = 300.0
T = TypeVar("T")


class PeersLost(RuntimeError):
    """A collective failed: another rank died or did not answer within the timeout."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; ``Ranks()`` is a single process.

    Attributes:
        rank: index of this process in ``[0, world_size)``; rank 0 writes the run folder.
        world_size: number of processes.
        local_rank: index of this process on its machine (its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes logs, checkpoints, metrics and the report."""
        return self.rank == 0


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting ``WORLD_SIZE``) started N > 1 ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend() -> str:
    """``gloo`` on a CPU-only machine; ``gloo`` for CPU and ``nccl`` for CUDA tensors when
    CUDA is available (small CPU collectives such as the config check stay on gloo)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init(timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
    """Join the process group that ``torchrun``'s environment describes (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    ``timeout_s`` bounds every collective: when a rank dies or hangs, the others fail
    (:class:`PeersLost`) after at most this long instead of waiting forever. It must exceed
    rank 0's validation pass at the end of each epoch, when the others wait for it.
    """
    if not timeout_s > 0:
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got {timeout_s}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend(), timeout=datetime.timedelta(seconds=timeout_s))
    return ranks()


def ranks() -> Ranks:
    """The current process group's :class:`Ranks` (a single process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    rank = dist.get_rank()
    return Ranks(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", str(rank))))


def close() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device, where: Ranks) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA in a distributed run."""
    if device.type == "cuda" and where.distributed:
        return torch.device("cuda", where.local_rank % torch.cuda.device_count())
    return device


# Where torch's Python code calls into a collective: an error raised there (its innermost
# Python frame) comes from the collective itself, never from the model or the loss.
_COLLECTIVE_FILES = (
    os.path.join("torch", "distributed", ""),
    os.path.join("torch", "nn", "parallel", "distributed.py"),
)
# What gloo's transport says when a peer is gone, when raised where no frame shows it (in
# backward, from DDP's all-reduce hooks).
_GLOO_PHRASES = ("gloo", "connection closed by peer", "timed out", "timeout", "pair closure")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from a collective whose peers died or stopped answering.

    NCCL raises :class:`torch.distributed.DistError`. gloo raises a plain ``RuntimeError``
    whose text varies with where it noticed ("Connection closed by peer", "Timed out
    waiting ... for recv", "Application timeout caused pair closure" from DDP's buffer
    broadcast): such an error counts when it was raised inside torch's distributed code or
    names one of gloo's transport failures.
    """
    if isinstance(err, dist.DistError):
        return True
    if not isinstance(err, RuntimeError):
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and any(part in tb.tb_frame.f_code.co_filename for part in _COLLECTIVE_FILES):
        return True
    text = str(err).lower()
    return any(phrase in text for phrase in _GLOO_PHRASES)


# ---------------------------------------------------------------------------- gathering


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward: the sum of every rank's gradient for this rank's
    rows (the semantics of ``torch.distributed.nn.functional.all_gather``, deprecated in
    torch 2.13, with a single concatenated output)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)  # (N * b, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)  # (N * b, ...)
        dist.all_reduce(total)  # sum over the ranks' losses
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]  # (b, ...)


def gather_with_grad(x: Tensor) -> Tensor:
    """Every rank's ``x`` (b, ...) concatenated in rank order -> (N * b, ...); gradients
    flow back to each row's owner, summed over the ranks. Every rank must pass the same
    shape. Without a process group, ``x`` itself."""
    if not ranks().distributed:
        return x
    return cast(Tensor, _GatherRows.apply(x))  # type: ignore[no-untyped-call]


def gather(x: Tensor) -> Tensor:
    """Every rank's ``x`` (b, ...) concatenated in rank order, without gradients."""
    if not ranks().distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)  # (N * b, ...)


def gather_references(x: Tensor) -> Tensor:
    """Like :func:`gather`, with this rank's rows the live ``x``: gradients reach only them."""
    where = ranks()
    if not where.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(where.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[where.rank] = x
    return torch.cat(parts)  # (N * b, ...)


def global_batch(
    embeddings: Tensor, labels: Tensor, mode: str
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The global batch for cross-process mining: ``(embeddings, labels, anchors)``.

    Args:
        embeddings: (b, D) this rank's rows.
        labels: (b,) their labels.
        mode: ``"global"``: gathered with gradients, every anchor (``anchors`` None);
            ``"local"``: references without gradients, ``anchors`` (N * b,) bool marking
            this rank's rows (see the module docstring).

    Returns:
        (N * b, D), (N * b,), and the anchor mask or None.
    """
    check_choice("distributed loss", mode, DISTRIBUTED_LOSSES)
    y = gather(labels)  # (N * b,)
    if mode == "global":
        return gather_with_grad(embeddings), y, None
    where, b = ranks(), embeddings.shape[0]
    anchors = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
    anchors[where.rank * b : (where.rank + 1) * b] = True
    return gather_references(embeddings), y, anchors


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over the ranks (for logging per-rank statistics)."""
    where = ranks()
    if not where.distributed:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / where.world_size


# ---------------------------------------------------------------------- the network


def data_parallel(
    model: nn.Module,
    forward: Callable[[Any, Tensor], Tensor],
    device: torch.device,
    *,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """``DistributedDataParallel`` around ``forward(model, x)`` (e.g. the objective's
    embeddings or logits): calling it runs the forward pass; the backward averages the
    parameters' gradients over the ranks. DDP copies rank 0's parameters and buffers to
    the others at construction, and rank 0's buffers (BatchNorm statistics) at every step.
    ``find_unused_parameters``: some steps leave parameters without a gradient (a frozen
    backbone), which DDP then looks for after each forward pass (slower)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        Forward(model, forward), device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def sync_batchnorm(model: nn.Module, device: torch.device) -> None:
    """Turn ``model``'s BatchNorm layers into ``SyncBatchNorm`` in place (CUDA only): the
    batch statistics are then those of the global batch, as in a single process."""
    if device.type != "cuda":
        raise ValueError(
            "--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); drop --sync-bn "
            "on CPU, where each process normalises its own rows"
        )
    for name, child in model.named_children():
        setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))  # type: ignore[no-untyped-call]


# ----------------------------------------------------------- agreement and rank 0


def check_agreement(settings: dict[str, Any]) -> None:
    """Raise ``ValueError`` on every rank when some rank's ``settings`` differ from rank 0's,
    naming the ranks and the keys. Does nothing in a single process."""
    where = ranks()
    if not where.distributed:
        return
    everyone: list[Any] = [None] * where.world_size
    dist.all_gather_object(everyone, settings)
    ref, problems = everyone[0], []
    for r, other in enumerate(everyone[1:], 1):
        keys = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        if keys:
            diffs = ", ".join(f"{k} {other.get(k)!r} (rank 0: {ref.get(k)!r})" for k in keys)
            problems.append(f"rank {r} has {diffs}")
    if problems:
        raise ValueError(
            "the processes disagree on the run: "
            + "; ".join(problems)
            + "; launch every rank with the same command, config file and data"
        )


def fingerprint(labels: Tensor) -> str:
    """A short SHA-256 of a label tensor (to compare training sets across ranks)."""
    data = labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def from_rank0(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 alone, its result (or the exception it raised) on every rank.

    For what only rank 0 may do (read or write the run folder): the others never touch it,
    and an error there stops every rank with the same message instead of leaving the others
    waiting. The result travels pickled; it must be picklable (tensors, dicts, exceptions).
    """
    where = ranks()
    if not where.distributed:
        return fn()
    box: list[Any] = [None]
    error: Exception | None = None
    if where.rank == 0:
        try:
            box[0] = (True, fn())
        except Exception as err:  # re-raised below, on every rank
            error = err
            box[0] = (False, _picklable(err))
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if error is not None:
        raise error
    if not ok:
        raise value
    return cast(T, value)


def _picklable(err: Exception) -> Exception:
    """``err``, or a ``RuntimeError`` with its message when it cannot be pickled."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if ranks().distributed:
        dist.barrier()


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """Seed of a rank's augmentation generator at one step: distributed runs reseed it every
    step, so a resumed run draws what the uninterrupted one would without saving each
    rank's generator."""
    key = f"{seed}/{rank}/{epoch}/{step}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
