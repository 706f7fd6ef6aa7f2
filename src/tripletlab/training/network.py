"""A run's network, built from its config: :func:`run_network` (fresh weights from the
global random generator; :func:`~tripletlab.training.fit` trains it, from the
:func:`pretrained_weights` when the config names them, and
:func:`tripletlab.evaluation.load_run` loads a checkpoint into it) and
:func:`untrained_network`, the baseline network of :func:`tripletlab.scores.baseline_scores`
at the initial weights of the run's seed, so that ``fit`` and ``tripletlab evaluate`` score
the same untrained network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from tripletlab.models import EmbeddingModel, build_model, imagenet_weights_file, read_weights
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
