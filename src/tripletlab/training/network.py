"""A run's network, built from its config: :func:`run_network` (fresh weights from the
global random generator; :func:`~tripletlab.training.fit` trains it and
:func:`tripletlab.evaluation.load_run` loads a checkpoint into it) and
:func:`untrained_network`, the baseline network of :func:`tripletlab.scores.baseline_scores`
at the initial weights of the run's seed, so that ``fit`` and ``tripletlab evaluate`` score
the same untrained network."""

from __future__ import annotations

import torch

from tripletlab.models import EmbeddingModel, build_model
from tripletlab.training.config import TrainConfig


def run_network(
    config: TrainConfig, *, in_channels: int, image_size: int, num_classes: int | None
) -> EmbeddingModel:
    """The run's network at fresh weights (drawn from the global random generator).

    Args:
        config: the run's config (model name, width, embedding size, normalisation).
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
    )


def untrained_network(
    config: TrainConfig,
    device: torch.device,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int | None,
) -> EmbeddingModel:
    """:func:`run_network` at the initial weights of the run's seed (``config.run.seed``) on
    ``device``, in eval mode; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        model = run_network(
            config, in_channels=in_channels, image_size=image_size, num_classes=num_classes
        )
    return model.to(device).eval()
