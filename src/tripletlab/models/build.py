"""The registry of named models, :data:`MODELS`, and :func:`build_model`, which builds one
for square images of a given size and channel count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from torch import nn

from tripletlab.checks import check_choice
from tripletlab.models.checks import _check_int
from tripletlab.models.embedding import EmbeddingModel
from tripletlab.models.embeddingnet import EmbeddingNet
from tripletlab.models.pretrained import PRETRAINED_MODELS, PretrainedModel
from tripletlab.models.resnet import BasicBlock, Bottleneck, ResNet
from tripletlab.models.small import SMALL_MAX_GRID, SmallConvNet, small_stages

ModelName = Literal["small", "embeddingnet", "resnet18", "resnet34", "resnet50"]

# build_model uses ResNet's 3x3 stride-1 stem (no max-pool) below this image size, so that
# layer1 sees at least 16x16 with the standard stem (which divides the size by 4).
RESNET_SMALL_INPUT_BELOW = 64


# A builder takes (in_channels, image_size, width or None for the default) and returns the
# backbone and its feature dimension.
Builder = Callable[[int, int, int | None], tuple[nn.Module, int]]


def _small(in_channels: int, image_size: int, width: int | None) -> tuple[nn.Module, int]:
    stages = small_stages(32 if width is None else width)
    side = image_size // 2 ** (len(stages) - 1)  # the last feature map is side x side
    net = SmallConvNet(in_channels, stages, grid=max(1, min(SMALL_MAX_GRID, side)))
    if image_size < net.min_image_size:
        raise ValueError(
            f"the 'small' model needs image_size >= {net.min_image_size}, got {image_size}"
        )
    return net, net.feature_dim


def _embeddingnet(in_channels: int, image_size: int, width: int | None) -> tuple[nn.Module, int]:
    w = 32 if width is None else width
    net = EmbeddingNet(in_channels, image_size, (w, 2 * w))
    return net, net.feature_dim


#: torchvision's ResNets: the block and the four stage depths of each.
_RESNETS: dict[PretrainedModel, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _resnet(name: PretrainedModel) -> Builder:
    def build(in_channels: int, image_size: int, width: int | None) -> tuple[nn.Module, int]:
        block, layers = _RESNETS[name]
        net = ResNet(
            block,
            layers,
            in_channels=in_channels,
            small_input=image_size < RESNET_SMALL_INPUT_BELOW,
            width=64 if width is None else width,
        )
        return net, net.feature_dim

    return build


_BUILDERS: dict[ModelName, Builder] = {
    "small": _small,
    "embeddingnet": _embeddingnet,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
}
MODELS: tuple[ModelName, ...] = get_args(ModelName)


def build_model(
    name: str,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    embedding_dim: int = 64,
    normalize: bool = True,
    num_classes: int | None = None,
    width: int | None = None,
    standard_stem: bool = False,
) -> EmbeddingModel:
    """Build the named embedding model for square ``image_size`` images.

    Models (``width`` = None picks the default in brackets):

    - ``"small"``: :class:`SmallConvNet` with stages (w, w)-pool-(2w, 2w)-pool-(4w) [w = 32],
      feature dim 4w.
    - ``"embeddingnet"``: :class:`EmbeddingNet` with conv widths (w, 2w) [w = 32], feature
      dim 256; needs ``image_size >= 16``.
    - ``"resnet18"``, ``"resnet34"``, ``"resnet50"``: :class:`ResNet` with layer1 width w
      [w = 64], feature dim 8w (ResNet-18, -34) or 32w (ResNet-50); the 3x3 stride-1 stem
      (``small_input``) is used when ``image_size < 64`` and torchvision's 7x7 stride-2 stem
      with max-pool otherwise, or always with ``standard_stem``. With the standard stem, 3
      channels and w = 64 the backbone is torchvision's network exactly and takes its
      pretrained weights (:func:`~tripletlab.models.load_pretrained`).

    Args:
        name: one of :data:`MODELS`.
        in_channels: channels of the input images (1 for grey, 3 for RGB).
        image_size: side of the input images; fixes EmbeddingNet's flattened size and
            ResNet's stem, and is checked against each model's minimum.
        embedding_dim: width of the embedding.
        normalize: L2-normalise the embeddings (see :mod:`tripletlab.models`).
        num_classes: add a classification head for the softmax baseline.
        width: base width of the backbone (see above); None for the default.
        standard_stem: ResNets only: torchvision's 7x7 stride-2 stem with max-pool whatever
            the image size (what pretrained weights need).

    Returns:
        An :class:`EmbeddingModel`: (B, in_channels, image_size, image_size) ->
        (B, embedding_dim).

    Raises:
        ValueError: for an unknown ``name`` (listing the valid ones), a non-integer or
            non-positive size, an ``image_size`` below the model's minimum, or
            ``standard_stem`` for a model that is not a ResNet.
    """
    build = _BUILDERS[check_choice("model", name, MODELS)]
    _check_int("in_channels", in_channels, 1)
    _check_int("image_size", image_size, 1)
    if width is not None:
        _check_int("width", width, 1)
    backbone: nn.Module
    if standard_stem:
        block, layers = _RESNETS[check_choice("model with standard_stem", name, PRETRAINED_MODELS)]
        backbone = ResNet(
            block, layers, in_channels=in_channels, width=64 if width is None else width
        )
        feature_dim = backbone.feature_dim
    else:
        backbone, feature_dim = build(in_channels, image_size, width)
    return EmbeddingModel(
        backbone, feature_dim, embedding_dim, normalize=normalize, num_classes=num_classes
    )
