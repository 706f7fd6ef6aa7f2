"""Embedding networks: a backbone, a linear projection to the embedding, L2 normalisation.

Every model is an :class:`EmbeddingModel`: ``backbone -> Linear(feature_dim, embedding_dim)
-> optional L2 normalisation``, with an optional classification head on the unnormalised
embedding for the softmax baseline. The backbones:

- ``"small"``, :class:`SmallConvNet`: VGG-style stacks of 3x3 convolutions (Simonyan &
  Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2015) with
  batch normalisation (Ioffe & Szegedy, 2015) and ReLU, 2x2 max-pooling between stages, and
  the last feature map pooled to at most a 7x7 grid and flattened, so the projection sees
  where each feature is. Sized for 28x28 grey images on a CPU; the default model of
  ``tripletlab train``. Its default layout, 32-pool-64-64-pool-128 then the 7x7 grid, beat
  the earlier 32-32-pool-64-64-pool-128 with global average pooling (Lin, Chen & Yan,
  "Network In Network", 2014; ``grid=None`` here) on Fashion-MNIST at equal epochs (1-NN
  0.920 against 0.917 after 6 epochs) while training 1.4x faster on a CPU
  (``docs/results.md``).
- ``"embeddingnet"``, :class:`EmbeddingNet`: the network of Adam Bielski's siamese-triplet
  (github.com/adambielski/siamese-triplet, ``networks.EmbeddingNet``), conv 32 5x5 - PReLU -
  max-pool - conv 64 5x5 - PReLU - max-pool - FC 256 - PReLU - FC 256 - PReLU - FC dim.
- ``"resnet18"``, ``"resnet50"``, :class:`ResNet`: He, Zhang, Ren & Sun, "Deep Residual
  Learning for Image Recognition" (CVPR 2016), in torchvision's layout (``BasicBlock`` /
  ``Bottleneck`` with the stride on the 3x3 convolution, layers [2, 2, 2, 2] / [3, 4, 6, 3],
  7x7 stride-2 stem and max-pool), so parameter counts match torchvision's. ``small_input``
  swaps the stem for a 3x3 stride-1 convolution without max-pool, as is usual for 28x28 and
  32x32 images. No pretrained weights are provided.

Why the output is L2-normalised by default (as in FaceNet, Schroff, Kalenichenko & Philbin,
2015, where ``||f(x)||_2 = 1``): it takes the scale away from the network. With raw outputs
the network can shrink every embedding towards the origin, where all distances vanish and
every triplet's loss sits at the margin (the "loss stuck at the margin" collapse users report),
or meet the margin by inflating the scale without separating anything. On the unit sphere
Euclidean distances lie in ``[0, 2]``, so a margin such as 0.2 is a fixed fraction of the
range and means the same thing throughout training. Pass ``normalize=False`` for raw outputs
(e.g. with a soft margin, as in Hermans, Beyer & Leibe 2017).

On a CPU, channels-last weights (``model.to(memory_format=torch.channels_last)``) trained
these networks 1.2-1.5x faster in ``benchmarks/bench_models.py``, with the same outputs up to
float rounding; inputs need no conversion.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "MODELS",
    "SMALL_MAX_GRID",
    "BasicBlock",
    "Bottleneck",
    "EmbeddingModel",
    "EmbeddingNet",
    "ModelName",
    "ResNet",
    "SmallConvNet",
    "build_model",
    "fuse_batchnorm",
    "small_stages",
]

ModelName = Literal["small", "embeddingnet", "resnet18", "resnet50"]

# build_model uses ResNet's 3x3 stride-1 stem (no max-pool) below this image size, so that
# layer1 sees at least 16x16 with the standard stem (which divides the size by 4).
RESNET_SMALL_INPUT_BELOW = 64


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def _check_images(x: Tensor, in_channels: int) -> None:
    """Inputs must be a 4-D (B, C, H, W) floating batch with ``in_channels`` channels."""
    if x.dim() != 4 or x.shape[1] != in_channels or not x.dtype.is_floating_point:
        raise ValueError(
            f"expected a floating (B, {in_channels}, H, W) batch of images, got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}; add a batch dimension with x[None] and "
            "convert with x.float()"
        )


# --------------------------------------------------------------------------- the wrapper


class EmbeddingModel(nn.Module):
    """``backbone -> Linear(feature_dim, embedding_dim) -> optional L2 normalisation``.

    With ``num_classes`` it also holds a classifier ``Linear(embedding_dim, num_classes)`` on
    the unnormalised projection, for the softmax baseline: :meth:`logits` and :meth:`forward`
    share the whole network, so the embedding of a softmax-trained model is the feature just
    before the classifier's linear layer (the penultimate layer).

    Args:
        backbone: module mapping (B, C, H, W) images to (B, feature_dim) features.
        feature_dim: width of the backbone's output, >= 1.
        embedding_dim: width of the embedding, >= 1.
        normalize: L2-normalise the output of :meth:`forward` (see the module docstring for
            why this is the default).
        num_classes: size of the classification head; ``None`` for no head.

    Shapes:
        forward: (B, C, H, W) float -> (B, embedding_dim), unit rows when ``normalize``.
        logits: (B, C, H, W) float -> (B, num_classes).

    Raises:
        ValueError: at construction if ``feature_dim``, ``embedding_dim`` or ``num_classes``
            is not an integer >= 1.

    Corner cases:
        - A zero projection row gives a zero embedding even with ``normalize``
          (``F.normalize`` divides by ``max(norm, 1e-12)``), so the norm is 1 only for
          nonzero projections.
        - With ``embedding_dim == 1`` and ``normalize`` every embedding is +1 or -1.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        embedding_dim: int,
        *,
        normalize: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.feature_dim = _check_int("feature_dim", feature_dim, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        if num_classes is not None:
            _check_int("num_classes", num_classes, 1)
        self.normalize = bool(normalize)
        self.num_classes = num_classes
        self.backbone = backbone
        self.projection = nn.Linear(feature_dim, embedding_dim)
        self.classifier = None if num_classes is None else nn.Linear(embedding_dim, num_classes)

    def project(self, x: Tensor) -> Tensor:
        """The unnormalised embedding: (B, C, H, W) float -> (B, embedding_dim)."""
        return self.projection(self.backbone(x))  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings (B, embedding_dim) of images (B, C, H, W); unit rows when normalising."""
        z = self.project(x)  # (B, embedding_dim)
        return F.normalize(z, dim=1) if self.normalize else z

    def logits(self, x: Tensor) -> Tensor:
        """Class scores (B, num_classes) from the classifier on the unnormalised embedding.

        Raises:
            RuntimeError: if the model was built without ``num_classes``.
        """
        if self.classifier is None:
            raise RuntimeError(
                "this model has no classification head; build it with num_classes=<number of "
                "classes> to use logits()"
            )
        return self.classifier(self.project(x))  # type: ignore[no-any-return]


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every ``Conv2d`` followed by a ``BatchNorm2d`` in
    an ``nn.Sequential`` folded into one convolution (``W' = W * g / s``, ``b' = (b - mu) * g
    / s + beta`` with ``s = sqrt(var + eps)``, the BatchNorm's running statistics).

    The outputs equal the eval-mode model's up to float rounding; on a CPU the default
    ``small`` net embeds about 1.5x faster (BatchNorm was a quarter of its inference time).
    Channels-last weights stay channels-last.

    Returns:
        ``model`` itself when there is nothing to fold (e.g. :class:`EmbeddingNet`), else a
        folded deep copy in eval mode; ``model`` is never changed. In a :class:`ResNet`
        only the stem is folded (the blocks' BatchNorms are attributes, not neighbours).

    Raises:
        RuntimeError: if ``model`` is in training mode (running statistics are not what a
            training-mode BatchNorm uses).
    """
    if model.training:
        raise RuntimeError("fuse_batchnorm needs a model in eval mode; call model.eval() first")

    def pairs(seq: nn.Sequential) -> bool:
        kids = list(seq)
        return any(
            isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
            for a, b in itertools.pairwise(kids)
        )

    if not any(isinstance(m, nn.Sequential) and pairs(m) for m in model.modules()):
        return model
    fused = copy.deepcopy(model)
    for seq in [m for m in fused.modules() if isinstance(m, nn.Sequential) and pairs(m)]:
        kids: list[nn.Module] = list(seq)
        out: list[nn.Module] = []
        i = 0
        while i < len(kids):
            a = kids[i]
            b = kids[i + 1] if i + 1 < len(kids) else None
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                conv = fuse_conv_bn_eval(a, b)
                if a.weight.is_contiguous(memory_format=torch.channels_last):
                    conv.weight.data = conv.weight.data.contiguous(
                        memory_format=torch.channels_last
                    )
                out.append(conv)
                i += 2
            else:
                out.append(a)
                i += 1
        for name in list(seq._modules):
            del seq._modules[name]
        for j, m in enumerate(out):
            seq.add_module(str(j), m)
    return fused


# --------------------------------------------------------------------------- small CNN


def small_stages(width: int = 32) -> tuple[tuple[int, ...], ...]:
    """Stages of the default ``"small"`` net for base width ``width``: ((w,), (2w, 2w), (4w,))."""
    _check_int("width", width, 1)
    return ((width,), (2 * width, 2 * width), (4 * width,))


#: The largest spatial grid the ``"small"`` net flattens (its 28x28 inputs end at 7x7).
SMALL_MAX_GRID = 7


class SmallConvNet(nn.Module):
    """3x3 conv - BatchNorm - ReLU blocks in stages, 2x2 max-pool between stages, then pooling.

    With ``stages = ((32,), (64, 64), (128,))``, ``grid=7`` and a 28x28 input: one 32-wide
    convolution at 28x28, pool, two 64-wide at 14x14, pool, one 128-wide at 7x7, flattened to
    128 * 7 * 7 features. Convolutions are padded (the size is kept) and bias-free (BatchNorm
    follows).

    Args:
        in_channels: channels of the input images, >= 1.
        stages: output channels of each convolution, one tuple per stage; a 2x2 max-pool
            separates consecutive stages. Every width must be >= 1 and every stage non-empty.
        grid: ``None``: global average pooling, ``feature_dim = stages[-1][-1]``; an integer
            g >= 1: adaptive average pooling to g x g, flattened, ``feature_dim =
            stages[-1][-1] * g * g`` (identity pooling when the map is already g x g).

    Shapes:
        (B, in_channels, H, W) -> (B, feature_dim).

    Raises:
        ValueError: at construction for an empty ``stages``, an empty stage, a width < 1 or a
            grid < 1.

    Corner cases:
        - Works for any ``H, W >= 2 ** (len(stages) - 1)`` (:attr:`min_image_size`; 4 for the
          default, so the 8x8 scikit-learn digits are fine); smaller inputs fail in the
          max-pool. Odd sizes are floored by the pooling (7x7 -> 3x3).
        - A grid larger than the last feature map repeats its values (adaptive pooling);
          :func:`build_model` picks ``min(7, side)`` so that does not happen.
        - In training mode BatchNorm needs more than one value per channel: a batch of one
          1x1 feature map raises in PyTorch.
    """

    def __init__(
        self,
        in_channels: int = 1,
        stages: Sequence[Sequence[int]] = ((32,), (64, 64), (128,)),
        grid: int | None = None,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        if len(stages) == 0 or any(len(stage) == 0 for stage in stages):
            raise ValueError(f"stages must be non-empty tuples of widths, got {stages!r}")
        for stage in stages:
            for w in stage:
                _check_int("every stage width", w, 1)
        if grid is not None:
            _check_int("grid", grid, 1)
        self.in_channels = in_channels
        self.stages = tuple(tuple(stage) for stage in stages)
        self.grid = grid
        cells = 1 if grid is None else grid * grid
        self.feature_dim = self.stages[-1][-1] * cells
        self.min_image_size = 2 ** (len(self.stages) - 1)
        layers: list[nn.Module] = []
        c = in_channels
        for i, stage in enumerate(self.stages):
            if i:
                layers.append(nn.MaxPool2d(2))
            for w in stage:
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)]
                layers.append(nn.ReLU(inplace=True))
                c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1 if grid is None else grid)

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, feature_dim) of images (B, in_channels, H, W)."""
        _check_images(x, self.in_channels)
        h: Tensor = self.pool(self.features(x))  # (B, c, g, g)
        return h.flatten(1)  # (B, feature_dim), channel-major


# --------------------------------------------------------------------------- siamese-triplet


class EmbeddingNet(nn.Module):
    """siamese-triplet's ``EmbeddingNet`` up to (and including) its second FC 256 + PReLU.

    conv ``widths[0]`` 5x5 - PReLU - max-pool 2 - conv ``widths[1]`` 5x5 - PReLU - max-pool 2 -
    flatten - FC 256 - PReLU - FC 256 - PReLU. The convolutions are unpadded and biased and each
    PReLU has one shared slope, as in github.com/adambielski/siamese-triplet; the final
    ``FC 256 -> dim`` is :class:`EmbeddingModel`'s projection, so
    ``EmbeddingModel(EmbeddingNet(), 256, 2, normalize=False)`` is the original network.

    Args:
        in_channels: channels of the input images, >= 1.
        image_size: side of the square input images, >= 16; fixes the flattened size
            ``widths[1] * s * s`` with ``s = ((image_size - 4) // 2 - 4) // 2`` (4 at 28x28).
        widths: output channels of the two convolutions, default (32, 64).
        hidden: width of the two fully connected layers, default 256.

    Shapes:
        (B, in_channels, image_size, image_size) -> (B, hidden).

    Raises:
        ValueError: at construction if ``image_size < 16`` (two unpadded 5x5 convolutions and
            two pools leave nothing of a smaller image: use ``"small"`` for 8x8 images) or a
            width is < 1; in ``forward`` if the input is not ``image_size`` square.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        widths: tuple[int, int] = (32, 64),
        hidden: int = 256,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("image_size", image_size, 1)
        _check_int("hidden", hidden, 1)
        for w in widths:
            _check_int("every conv width", w, 1)
        side = ((image_size - 4) // 2 - 4) // 2
        if image_size < 16 or side < 1:
            raise ValueError(
                f"EmbeddingNet needs image_size >= 16 (two unpadded 5x5 convolutions and two "
                f"2x2 pools), got image_size={image_size}; use the 'small' model for smaller "
                "images"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.feature_dim = hidden
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 5),
            nn.PReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(widths[0], widths[1], 5),
            nn.PReLU(),
            nn.MaxPool2d(2, stride=2),
        )
        self.fc = nn.Sequential(
            nn.Linear(widths[1] * side * side, hidden),
            nn.PReLU(),
            nn.Linear(hidden, hidden),
            nn.PReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, hidden) of images (B, in_channels, image_size, image_size)."""
        _check_images(x, self.in_channels)
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"EmbeddingNet was built for {self.image_size}x{self.image_size} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; build it with image_size={x.shape[-1]}"
            )
        h = self.convnet(x)  # (B, widths[1], s, s)
        out: Tensor = self.fc(h.flatten(1))  # (B, hidden)
        return out


# --------------------------------------------------------------------------- ResNet


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity when shapes agree, else 1x1 conv (strided) + BatchNorm (He et al.'s option B)."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Shapes:
        (B, in_planes, H, W) -> (B, planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion: ClassVar[int] = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))  # type: ignore[no-any-return]


class Bottleneck(nn.Module):
    """1x1 reduce - 3x3 (strided) - 1x1 expand by 4, with a residual connection (ResNet-50+).

    The stride sits on the 3x3 convolution, as in torchvision ("ResNet v1.5").

    Shapes:
        (B, in_planes, H, W) -> (B, 4 * planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion: ClassVar[int] = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))  # type: ignore[no-any-return]


class ResNet(nn.Module):
    """ResNet backbone (He et al. 2016) in torchvision's layout, without the final fc.

    stem - layer1 (stride 1) - layer2/3/4 (stride 2) - global average pool. The standard stem
    is a 7x7 stride-2 convolution, BatchNorm, ReLU and a 3x3 stride-2 max-pool; with
    ``small_input`` it is a 3x3 stride-1 convolution, BatchNorm and ReLU (no max-pool), which
    keeps 28x28 or 32x32 images at full resolution in layer1. Convolutions are initialised as
    in torchvision (Kaiming normal, fan-out), BatchNorm with weight 1 and bias 0.

    ``ResNet(BasicBlock, (2, 2, 2, 2), in_channels=3)`` plus ``Linear(512, 1000)`` is
    torchvision's ``resnet18()`` (11,689,512 parameters), and
    ``ResNet(Bottleneck, (3, 4, 6, 3), in_channels=3)`` plus ``Linear(2048, 1000)`` is its
    ``resnet50()`` (25,557,032).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages, each >= 1.
        in_channels: channels of the input images, >= 1.
        small_input: use the 3x3 stride-1 stem without max-pool.
        width: channels of layer1 (before the block's expansion), doubled at each later
            stage; torchvision's value is 64.

    Shapes:
        (B, in_channels, H, W) -> (B, feature_dim), ``feature_dim = 8 * width * expansion``
        (512 for ResNet-18, 2048 for ResNet-50).

    Corner cases:
        - Any ``H, W >= 1`` works (every strided layer is padded); layer4 sees
          ``ceil(H / 32)`` with the standard stem and ``ceil(H / 8)`` with ``small_input``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        in_channels: int = 3,
        small_input: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("width", width, 1)
        if len(layers) != 4:
            raise ValueError(f"layers must give 4 stage depths, got {list(layers)!r}")
        for n in layers:
            _check_int("every stage depth", n, 1)
        self.in_channels = in_channels
        self.small_input = small_input
        stem: list[nn.Module]
        if small_input:
            stem = [_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        else:
            stem = [
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        in_planes = width
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, feature_dim) of images (B, in_channels, H, W)."""
        _check_images(x, self.in_channels)
        h = self.stem(x)  # (B, width, H', W'); H' = H or ceil(H / 4)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))  # (B, feature_dim, h, w)
        out: Tensor = self.pool(h).flatten(1)  # (B, feature_dim)
        return out


# --------------------------------------------------------------------------- the registry

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


def _resnet(
    block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int]
) -> Builder:
    def build(in_channels: int, image_size: int, width: int | None) -> tuple[nn.Module, int]:
        net = ResNet(
            block,
            layers,
            in_channels=in_channels,
            small_input=image_size < RESNET_SMALL_INPUT_BELOW,
            width=64 if width is None else width,
        )
        return net, net.feature_dim

    return build


_BUILDERS: dict[str, Builder] = {
    "small": _small,
    "embeddingnet": _embeddingnet,
    "resnet18": _resnet(BasicBlock, (2, 2, 2, 2)),
    "resnet50": _resnet(Bottleneck, (3, 4, 6, 3)),
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)


def build_model(
    name: str,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    embedding_dim: int = 64,
    normalize: bool = True,
    num_classes: int | None = None,
    width: int | None = None,
) -> EmbeddingModel:
    """Build the named embedding model for square ``image_size`` images.

    Models (``width`` = None picks the default in brackets):

    - ``"small"``: :class:`SmallConvNet` with stages (w, w)-pool-(2w, 2w)-pool-(4w) [w = 32],
      feature dim 4w.
    - ``"embeddingnet"``: :class:`EmbeddingNet` with conv widths (w, 2w) [w = 32], feature
      dim 256; needs ``image_size >= 16``.
    - ``"resnet18"``, ``"resnet50"``: :class:`ResNet` with layer1 width w [w = 64], feature
      dim 8w (ResNet-18) or 32w (ResNet-50); the 3x3 stride-1 stem (``small_input``) is used
      when ``image_size < 64`` and torchvision's 7x7 stride-2 stem with max-pool otherwise.

    Args:
        name: one of :data:`MODELS`.
        in_channels: channels of the input images (1 for grey, 3 for RGB).
        image_size: side of the input images; fixes EmbeddingNet's flattened size and
            ResNet's stem, and is checked against each model's minimum.
        embedding_dim: width of the embedding.
        normalize: L2-normalise the embeddings (see the module docstring).
        num_classes: add a classification head for the softmax baseline.
        width: base width of the backbone (see above); None for the default.

    Returns:
        An :class:`EmbeddingModel`: (B, in_channels, image_size, image_size) ->
        (B, embedding_dim).

    Raises:
        ValueError: for an unknown ``name`` (listing the valid ones), a non-integer or
            non-positive size, or an ``image_size`` below the model's minimum.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    _check_int("in_channels", in_channels, 1)
    _check_int("image_size", image_size, 1)
    if width is not None:
        _check_int("width", width, 1)
    backbone, feature_dim = _BUILDERS[name](in_channels, image_size, width)
    return EmbeddingModel(
        backbone, feature_dim, embedding_dim, normalize=normalize, num_classes=num_classes
    )
