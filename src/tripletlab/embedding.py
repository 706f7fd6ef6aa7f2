"""Embedding images with a model: the one :func:`embed` that training (validation),
evaluation, inference, export checks and search all call, and the one :class:`EmbedMode`
that says how (flip test-time augmentation, bfloat16 autocast, batch size).

A run is embedded as it was trained: flip TTA when it trained with horizontal flips,
bfloat16 where it trained with it (:func:`use_amp` resolves the ``auto|on|off`` policy on the
device at hand, so a run copied to another machine is embedded as that machine allows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.checks import check_choice, nonfinite_rows
from tripletlab.data import Images, Progress, normalize
from tripletlab.models import EmbeddingModel, fuse_batchnorm

__all__ = [
    "AMP_MODES",
    "EmbedMode",
    "Progress",
    "Stats",
    "check_finite",
    "cpu_has_native_bf16",
    "embed",
    "use_amp",
]

#: Per-channel normalisation ``(mean, std)``.
Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: The bfloat16 autocast policies of a run (``--amp``).
AMP_MODES: tuple[str, ...] = ("auto", "on", "off")


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
    """Compute under bfloat16 autocast? ``auto``: on CUDA, and on CPUs with native bfloat16;
    ``on``: always (emulated where the CPU has no bfloat16); ``off``: never."""
    check_choice("amp mode", mode, AMP_MODES)
    if mode == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return mode == "on"


@dataclass(frozen=True)
class EmbedMode:
    """How :func:`embed` runs a model.

    Attributes:
        flip: test-time augmentation for runs trained with horizontal flips: each embedding
            is the mean of the image's and its mirror image's (L2-normalised again when the
            model normalises): one embedding per image, twice the compute.
        amp: run the network under bfloat16 autocast (the embeddings are float32 either way).
        batch_size: images per forward pass.
    """

    flip: bool = False
    amp: bool = False
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"the batch size must be >= 1, got {self.batch_size}")

    @classmethod
    def of_run(cls, tta: bool, amp: str, device: torch.device, batch_size: int) -> EmbedMode:
        """A run's mode on ``device``: flip TTA as the run says, bfloat16 per its ``amp``
        policy resolved here (:func:`use_amp`)."""
        return cls(flip=bool(tta), amp=use_amp(amp, device), batch_size=batch_size)


@torch.no_grad()
def embed(
    model: EmbeddingModel,
    images: Images,
    stats: Stats,
    device: torch.device,
    mode: EmbedMode | None = None,
    *,
    progress: Progress | None = None,
    what: str = "images",
) -> Tensor:
    """Embeddings of uint8 images in eval mode, ``mode.batch_size`` images a forward pass.

    BatchNorm is folded into the convolutions first (same outputs up to rounding, ~1.5x
    faster on a CPU). With ``progress``, reports ``("embedding <what>", done, N)`` every
    ``8 * batch_size`` images.

    Args:
        images: (N, C, H, W) uint8, in memory or on disk (read a batch at a time).
        stats: the normalisation ``(mean, std)``, one value per channel.
        mode: flip TTA, bfloat16, batch size (default :class:`EmbedMode`'s).

    Returns:
        (N, D) float32 on ``device``; (0, D) for no images.
    """
    mode = mode if mode is not None else EmbedMode()
    model.eval()
    net = fuse_batchnorm(model)
    n, bs = images.shape[0], mode.batch_size
    desc = f"embedding {what}"
    if progress is not None:
        progress(desc, 0, n)
    out = []
    for s in range(0, n, bs):
        x = normalize(images[s : s + bs].to(device), *stats)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.amp):
            e = net(x).float()  # (b, D)
            if mode.flip:
                e = (e + net(x.flip(-1)).float()) / 2
                if model.normalize:
                    e = F.normalize(e, dim=1)
        out.append(e)
        done = min(n, s + bs)
        if progress is not None and (done == n or done % (8 * bs) == 0):
            progress(desc, done, n)
    if not out:
        return torch.zeros(0, model.embedding_dim, device=device)
    return torch.cat(out)


def check_finite(embeddings: Tensor, what: str, source: str = "the model") -> None:
    """One-line ``ValueError`` when some (N, D) embedding rows hold NaN or Inf."""
    bad = nonfinite_rows(embeddings)
    if bad:
        raise ValueError(
            f"{source} gives NaN or Inf embeddings for {bad} of {embeddings.shape[0]} {what} "
            "images (its weights are not finite: the run diverged); evaluate an earlier "
            "checkpoint or retrain with a lower --lr"
        )
