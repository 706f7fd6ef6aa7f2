"""tripletlab.models.resnet: torchvision's parameter counts."""

from __future__ import annotations

from models_helpers import (
    images,
    num_params,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)

from tripletlab.models import BasicBlock, Bottleneck, EmbeddingModel, ResNet


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
