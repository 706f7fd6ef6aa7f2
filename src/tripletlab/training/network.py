"""A run's network, built from its config: :func:`run_network` (fresh weights from the
global random generator; :func:`~tripletlab.training.fit` trains it, from the
:func:`pretrained_weights` when the config names them, and
:func:`tripletlab.evaluation.load_run` loads a checkpoint into it) and
:func:`untrained_network`, the baseline network of :func:`tripletlab.scores.baseline_scores`
at the initial weights of the run's seed, so that ``fit`` and ``tripletlab evaluate`` score
the same untrained network; :func:`compiled_network`, the training forward pass of
``--compile``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tripletlab.models import (
    EmbeddingModel,
    Forward,
    build_model,
    imagenet_weights_file,
    read_weights,
)
from tripletlab.training.config import TrainConfig


def run_network(
    config: TrainConfig, *, in_channels: int, image_size: int, num_classes: int | None
) -> EmbeddingModel:
    """The run's network at fresh weights (drawn from the global random generator).

    Args:
        config: the run's config (model name, width, embedding size, normalisation; with
            ``pretrained``, torchvision's standard stem at every image size). The weights
            are not loaded here (see :func:`tripletlab.models.load_pretrained`).
        in_channels, image_size: of the images it takes, (C, S, S).
        num_classes: the classes of a softmax run's head; ``None`` for no head.
    """
    return build_model(
        config.model.name,
        in_channels=in_channels,
        image_size=image_size,
        embedding_dim=config.model.embedding_dim,
        width=config.model.width,
        normalize=config.model.normalize_embeddings,
        num_classes=num_classes,
        standard_stem=config.model.pretrained is not None,
    )


def pretrained_weights(config: TrainConfig) -> tuple[dict[str, Tensor], Path] | None:
    """The weights ``config.model.pretrained`` names and the file they were read from
    (``imagenet``: torchvision's file, downloaded into torch's hub cache when it is not
    there); None without ``pretrained``. Read before anything else of a fresh run, so that
    a bad file stops it before the data is loaded.

    Raises:
        tripletlab.models.WeightsError: a failed download or an unusable file (one line).
    """
    source = config.model.pretrained
    if source is None:
        return None
    path = imagenet_weights_file(config.model.name) if source == "imagenet" else Path(source)
    return read_weights(path), path


def untrained_network(
    config: TrainConfig,
    device: torch.device,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int | None,
) -> EmbeddingModel:
    """:func:`run_network` at the initial weights of the run's seed (``config.run.seed``) on
    ``device``, in eval mode; the global random state is left as it was. With
    ``config.model.pretrained`` too these are random weights, not the pretrained ones
    (evaluating a run never reads the weights file)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        model = run_network(
            config, in_channels=in_channels, image_size=image_size, num_classes=num_classes
        )
    return model.to(device).eval()


def _probe(x: Tensor) -> Tensor:
    return x.sin().add(1.0)


def compiler_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot compile and run a small function on
    ``device`` here, in one line (e.g. no C++ compiler on a CPU), or None when it can.

    Args:
        device: where the compiled code would run.

    Returns:
        ``"ErrorType: first line of its message"`` (at most 200 characters), or None.
    """
    try:
        torch.compile(_probe, dynamic=False)(torch.ones(8, device=device))
    except Exception as err:  # whatever the toolchain raises: the caller trains without it
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return f"{type(err).__name__}: {lines[0][:200] if lines else 'no message'}"
    return None


def compiled_network(
    model: nn.Module, forward: Callable[[Any, Tensor], Tensor], device: torch.device
) -> nn.Module | None:
    """``forward(model, x)`` compiled with ``torch.compile`` (inductor) for the training
    steps, sharing ``model``'s parameters (a checkpoint saves ``model`` as ever); None, with
    one warning, where the compiler cannot run here (:func:`compiler_problem`).

    The network itself compiles at its first call (seconds to a minute on a CPU). The probe
    covers a missing or broken toolchain; an error in compiling the network itself (an
    operation inductor cannot compile) surfaces at that first call, as torch raises it.

    Args:
        model: the network whose parameters the compiled pass uses.
        forward: ``forward(model, x)``, e.g. the objective's embeddings or logits.
        device: where the training runs.

    Returns:
        The compiled module (call it with the batch), or None.
    """
    problem = compiler_problem(device)
    if problem is not None:
        warnings.warn(
            f"--compile: torch.compile cannot run here ({problem}); training without it",
            stacklevel=3,
        )
        return None
    return torch.compile(Forward(model, forward))  # type: ignore[return-value]
