"""tripletlab.models.embedding: normalisation and the classifier head of every model,
gradient flow, eval determinism, channels-last weights, state_dict round trips and
fuse_batchnorm."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from models_helpers import (
    FAST,
    images,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)
from tolerances import FORWARD_ATOL, FORWARD_RTOL
from torch import nn

from tripletlab.models import MODELS, EmbeddingModel, build_model, fuse_batchnorm


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
    assert torch.equal(first, second)  # the same batch through the same kernels
    # another batch size may get another convolution algorithm: equal up to rounding
    torch.testing.assert_close(alone, first[:1], atol=FORWARD_ATOL, rtol=FORWARD_RTOL)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_weights_give_the_same_embeddings(name: str) -> None:
    size = FAST[name]
    model = build_model(name, image_size=size).eval()
    x = images(3, 1, size)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.testing.assert_close(model(x), expected, atol=FORWARD_ATOL, rtol=FORWARD_RTOL)


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


@pytest.mark.parametrize("name", ["small", "resnet18", "resnet50"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fuse_batchnorm_keeps_the_outputs(channels_last: bool, name: str) -> None:
    # a ResNet's BatchNorms are attributes (conv1/bn1, as torchvision names them), folded too
    torch.manual_seed(0)
    model = build_model(name, image_size=28, width=4)
    model.train()
    for _ in range(3):  # move the running statistics away from (0, 1)
        model(images(16, 1, 28, seed=1) * 3 + 1)
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = images(5, 1, 28, seed=2)
    with torch.no_grad():
        fused = fuse_batchnorm(model)
        torch.testing.assert_close(fused(x), model(x), atol=FORWARD_ATOL, rtol=FORWARD_RTOL)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # untouched
    convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = [m for m in convs if m.kernel_size != (1, 1)][-1]  # C_in > 1, a layout to tell
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fuse_batchnorm_leaves_models_without_sequential_pairs_alone() -> None:
    model = build_model("embeddingnet", width=4).eval()  # no BatchNorm
    assert fuse_batchnorm(model) is model
    with pytest.raises(RuntimeError, match="eval mode"):
        fuse_batchnorm(build_model("small", width=4).train())
