"""Where and in what precision a run computes: the device, bfloat16 autocast, the
embedding mode of a trained run."""

from __future__ import annotations

from pathlib import Path

import torch

from tripletlab.training.config import TrainConfig


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
    return bool(config.data.tta), use_amp(config.run.amp, device)


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
