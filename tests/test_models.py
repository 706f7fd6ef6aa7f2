"""Tests for tripletlab.models: shapes, normalisation, the classifier head, argument checks,
torchvision's parameter counts, gradient flow, eval determinism and state_dict round trips."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tripletlab.models import (
    MODELS,
    BasicBlock,
    Bottleneck,
    EmbeddingModel,
    EmbeddingNet,
    ModelName,
    ResNet,
    SmallConvNet,
    build_model,
    fuse_batchnorm,
)

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
# Cheap configurations for the tests that build every model several times.
FAST = {"small": 8, "embeddingnet": 16, "resnet18": 8, "resnet50": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these tiny forwards on one thread: two OpenMP threads on a loaded 2-core machine
    spin against each other and made this module 7x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def images(b: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(seed))


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


@pytest.mark.parametrize("name", MODELS)
def test_normalize_false_gives_the_raw_projection(name: str) -> None:
    model = build_model(name, image_size=FAST[name], normalize=False).eval()
    x = images(4, 1, FAST[name])
    raw = model(x)
    assert not model.normalize
    torch.testing.assert_close(raw, model.project(x))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(4), atol=1e-2)
    model.normalize = True
    torch.testing.assert_close(model(x), F.normalize(raw, dim=1))


@pytest.mark.parametrize("name", MODELS)
def test_logits_use_the_unnormalised_embedding(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size, embedding_dim=8, num_classes=5).eval()
    x = images(3, 1, size)
    logits = model.logits(x)
    assert logits.shape == (3, 5)
    assert model.classifier is not None
    torch.testing.assert_close(logits, model.classifier(model.project(x)))
    torch.testing.assert_close(model(x), F.normalize(model.project(x), dim=1))


def test_custom_backbone() -> None:
    model = EmbeddingModel(nn.Flatten(), 16, 3, num_classes=2)
    x = images(5, 1, 4)
    assert model(x).shape == (5, 3)
    assert model.logits(x).shape == (5, 2)
    torch.testing.assert_close(model.project(x), model.projection(x.flatten(1)))


def test_logits_without_num_classes_raises() -> None:
    model = build_model("small", image_size=8)
    assert model.classifier is None
    with pytest.raises(RuntimeError, match="num_classes"):
        model.logits(images(2, 1, 8))


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet34'") as info:
        build_model("resnet34")
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


def test_embeddingnet_rejects_small_images_clearly() -> None:
    with pytest.raises(ValueError, match=r"image_size >= 16.*'small'"):
        build_model("embeddingnet", image_size=8)
    with pytest.raises(ValueError, match="image_size >= 16"):
        EmbeddingNet(image_size=15)
    assert build_model("embeddingnet", image_size=16)(images(2, 1, 16)).shape == (2, 64)


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


def test_small_conv_net_grid_flattens_channel_major() -> None:
    net = SmallConvNet(1, ((2,),), grid=2).eval()
    x = torch.randn(1, 1, 4, 4)
    h = net.pool(net.features(x))  # (1, 2, 2, 2)
    torch.testing.assert_close(net(x), h.reshape(1, 8))
    assert SmallConvNet(1, ((2,),), grid=None).feature_dim == 2
    with pytest.raises(ValueError, match="grid"):
        SmallConvNet(1, ((2,),), grid=0)


def test_small_conv_net_stages() -> None:
    net = SmallConvNet(2, ((4,), (8, 8), (8,), (16,)))
    assert net.feature_dim == 16 and net.min_image_size == 8
    assert net(images(2, 2, 8)).shape == (2, 16)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 8, 8, 16]
    with pytest.raises(ValueError, match="non-empty"):
        SmallConvNet(1, ((8,), ()))
    with pytest.raises(ValueError, match="non-empty"):
        SmallConvNet(1, ())


def test_resnet_stem_follows_image_size() -> None:
    small = build_model("resnet18", image_size=32).backbone
    large = build_model("resnet18", image_size=64).backbone
    assert isinstance(small, ResNet) and isinstance(large, ResNet)
    assert small.small_input and not large.small_input
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    assert large(images(2, 1, 64)).shape == (2, 512)


# ------------------------------------------------------------------ reference parameter counts


def test_resnet18_matches_torchvision_parameter_count() -> None:
    # torchvision.models.resnet18(): 3-channel 7x7 stem, fc 512 -> 1000.
    backbone = ResNet(BasicBlock, (2, 2, 2, 2), in_channels=3)
    assert backbone.feature_dim == 512
    classifier = EmbeddingModel(backbone, 512, 1000, normalize=False)
    assert num_params(classifier) == 11_689_512
    assert classifier(images(1, 3, 64)).shape == (1, 1000)


def test_resnet50_matches_torchvision_parameter_count() -> None:
    # torchvision.models.resnet50(): 3-channel 7x7 stem, fc 2048 -> 1000.
    backbone = ResNet(Bottleneck, (3, 4, 6, 3), in_channels=3)
    assert backbone.feature_dim == 2048
    assert num_params(backbone) + 2048 * 1000 + 1000 == 25_557_032
    assert num_params(EmbeddingModel(backbone, 2048, 1000)) == 25_557_032


def test_embeddingnet_matches_siamese_triplet_parameter_count() -> None:
    # siamese-triplet EmbeddingNet with its 2-d output: conv 1->32 5x5, conv 32->64 5x5,
    # FC 64*4*4 -> 256 -> 256 -> 2, four single-slope PReLUs.
    expected = (25 * 32 + 32) + (32 * 25 * 64 + 64) + (1024 * 256 + 256) + (256 * 256 + 256)
    expected += 256 * 2 + 2 + 4
    assert num_params(EmbeddingModel(EmbeddingNet(), 256, 2, normalize=False)) == expected


# ------------------------------------------------------------------ training-related invariants


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size, embedding_dim=8, num_classes=3).train()
    x = images(4, 1, size)
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    loss = (model(x) * w).sum() + model.logits(x).logsumexp(1).sum()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODELS)
def test_eval_mode_is_deterministic_and_batch_independent(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size)
    model.train()
    model(images(4, 1, size, seed=2))  # move the BatchNorm running statistics off their init
    model.eval()
    x = images(5, 1, size)
    with torch.no_grad():
        first, second, alone = model(x), model(x), model(x[:1])
    assert torch.equal(first, second)
    torch.testing.assert_close(alone, first[:1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_weights_give_the_same_embeddings(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size).eval()
    x = images(3, 1, size)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size, embedding_dim=16, num_classes=3)
    model.train()
    model(images(4, 1, size, seed=3))  # non-default BatchNorm running statistics
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a differently initialised twin
    twin = build_model(name, image_size=size, embedding_dim=16, num_classes=3)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval()
    twin.eval()
    x = images(3, 1, size)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
        assert torch.equal(model.logits(x), twin.logits(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fuse_batchnorm_keeps_the_outputs(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = build_model("small", image_size=28, width=4)
    model.train()
    for _ in range(3):  # move the running statistics away from (0, 1)
        model(images(16, 1, 28, seed=1) * 3 + 1)
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = images(5, 1, 28, seed=2)
    with torch.no_grad():
        fused = fuse_batchnorm(model)
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # untouched
    conv = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # C_in > 1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fuse_batchnorm_leaves_models_without_sequential_pairs_alone() -> None:
    model = build_model("embeddingnet", width=4).eval()  # no BatchNorm
    assert fuse_batchnorm(model) is model
    with pytest.raises(RuntimeError, match="eval mode"):
        fuse_batchnorm(build_model("small", width=4).train())
