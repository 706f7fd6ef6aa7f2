"""tripletlab.models.embeddingnet: EmbeddingNet's minimum image size and siamese-triplet's
parameter count."""

from __future__ import annotations

import pytest
from models_helpers import (
    images,
    num_params,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)

from tripletlab.models import EmbeddingModel, EmbeddingNet, build_model


def test_embeddingnet_rejects_small_images_clearly() -> None:
    with pytest.raises(ValueError, match=r"image_size >= 16.*'small'"):
        build_model("embeddingnet", image_size=8)
    with pytest.raises(ValueError, match="image_size >= 16"):
        EmbeddingNet(image_size=15)
    assert build_model("embeddingnet", image_size=16)(images(2, 1, 16)).shape == (2, 64)


def test_embeddingnet_matches_siamese_triplet_parameter_count() -> None:
    # siamese-triplet EmbeddingNet with its 2-d output: conv 1->32 5x5, conv 32->64 5x5,
    # FC 64*4*4 -> 256 -> 256 -> 2, four single-slope PReLUs.
    expected = (25 * 32 + 32) + (32 * 25 * 64 + 64) + (1024 * 256 + 256) + (256 * 256 + 256)
    expected += 256 * 2 + 2 + 4
    assert num_params(EmbeddingModel(EmbeddingNet(), 256, 2, normalize=False)) == expected
