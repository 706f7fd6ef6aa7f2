"""tripletlab.models.build: the registry, build_model's shapes, sizes and widths, and its
argument and input checks."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from models_helpers import (
    images,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)
from torch import nn

from tripletlab.models import MODELS, ModelName, ResNet, build_model

# (name, in_channels, image_size) that each model is built for in the shape tests: every
# channel count and size for the three fast models, ResNet-50 only at 8x8 (its 3x3 stride-1
# stem) to keep the suite fast. EmbeddingNet cannot take 8x8 (see the test that it says so).
CONFIGS = [
    (name, c, s)
    for name in ("small", "embeddingnet", "resnet18")
    for c in (1, 3)
    for s in (8, 28, 32)
    if (name, s) != ("embeddingnet", 8)
] + [("embeddingnet", 1, 16), ("resnet50", 1, 8), ("resnet50", 3, 8)]


def test_models_tuple_matches_literal() -> None:
    assert get_args(ModelName) == MODELS


@pytest.mark.parametrize(("name", "in_channels", "size"), CONFIGS)
@pytest.mark.parametrize("dim", [2, 64])
def test_output_shape_and_unit_norm(name: str, in_channels: int, size: int, dim: int) -> None:
    model = build_model(name, in_channels=in_channels, image_size=size, embedding_dim=dim)
    assert model.embedding_dim == dim
    assert model.normalize
    out = model(images(3, in_channels, size))
    assert out.shape == (3, dim)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("dim", [1, 16, 128])
def test_embedding_dims(dim: int) -> None:
    model = build_model("small", embedding_dim=dim).eval()
    assert model(images(2, 1, 28)).shape == (2, dim)


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet101'") as info:
        build_model("resnet101")
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embedding_dim": 0},
        {"in_channels": 0},
        {"image_size": 0},
        {"num_classes": 0},
        {"width": 0},
        {"width": True},
        {"embedding_dim": 2.0},
    ],
)
def test_invalid_arguments_raise_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        build_model("small", **kwargs)  # type: ignore[arg-type]


def test_small_rejects_images_below_its_pooling() -> None:
    with pytest.raises(ValueError, match="image_size >= 4"):
        build_model("small", image_size=3)
    assert build_model("small", image_size=4)(images(2, 1, 4)).shape == (2, 64)


def test_wrong_inputs_raise_clearly() -> None:
    model = build_model("small", in_channels=1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(images(2, 3, 28))
    with pytest.raises(ValueError, match="batch dimension"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="dtype"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    net = build_model("embeddingnet", image_size=28)
    with pytest.raises(ValueError, match="built for 28x28"):
        net(images(2, 1, 32))


def test_width_sets_the_feature_dim() -> None:
    assert build_model("small", width=8).feature_dim == 32 * 7 * 7  # 4w channels, 7x7 grid
    assert build_model("embeddingnet", width=8).feature_dim == 256
    assert build_model("resnet18", width=8).feature_dim == 64
    assert build_model("resnet50", width=2, image_size=8).feature_dim == 64


def test_small_grid_follows_the_image_size() -> None:
    # the last map is side = size // 4; the grid is min(7, side), never upsampled
    for size, grid in [(8, 2), (28, 7), (32, 7), (64, 7), (5, 1)]:
        net = build_model("small", image_size=size, width=4)
        assert net.feature_dim == 16 * grid * grid
        assert net(images(3, 1, size).float()).shape == (3, 64)


def test_resnet_stem_follows_image_size() -> None:
    small = build_model("resnet18", image_size=32).backbone
    large = build_model("resnet18", image_size=64).backbone
    assert isinstance(small, ResNet) and isinstance(large, ResNet)
    assert small.small_input and not large.small_input
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    assert large(images(2, 1, 64)).shape == (2, 512)


def test_standard_stem_at_any_image_size_for_pretrained_weights() -> None:
    for name in ("resnet18", "resnet34"):
        net = build_model(name, in_channels=3, image_size=28, standard_stem=True).backbone
        assert isinstance(net, ResNet) and not net.small_input
        assert net.conv1.weight.shape == (64, 3, 7, 7)
        assert isinstance(net.maxpool, nn.MaxPool2d)
    assert net(images(2, 3, 28)).shape == (2, 512)  # 28 -> 14 -> 7 -> ... -> 1x1 in layer4
    with pytest.raises(ValueError, match="unknown model with standard_stem 'small'"):
        build_model("small", standard_stem=True)
