"""The ``"resnet18"``, ``"resnet34"`` and ``"resnet50"`` backbones: :class:`ResNet` with
:class:`BasicBlock` or :class:`Bottleneck` blocks (He, Zhang, Ren & Sun, "Deep Residual
Learning for Image Recognition", CVPR 2016), with torchvision's modules, parameter names and
shapes (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...), so that
torchvision's weight files load into them unchanged (:mod:`tripletlab.models.pretrained`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from tripletlab.models.checks import _check_images, _check_int


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
    #: Each BatchNorm that normalises the output of the convolution before it, for
    #: :func:`~tripletlab.models.fuse_batchnorm`.
    CONV_BN: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"), ("conv2", "bn2"))

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
    #: As :attr:`BasicBlock.CONV_BN`.
    CONV_BN: ClassVar[tuple[tuple[str, str], ...]] = (
        ("conv1", "bn1"),
        ("conv2", "bn2"),
        ("conv3", "bn3"),
    )

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
    """ResNet backbone (He et al. 2016), torchvision's ``ResNet`` without its ``fc``.

    ``conv1 - bn1 - relu - maxpool - layer1 (stride 1) - layer2/3/4 (stride 2) - avgpool``,
    every module named as in torchvision, so that its ``state_dict`` has torchvision's keys
    and shapes less ``fc.weight`` and ``fc.bias``. The standard stem is a 7x7 stride-2
    ``conv1`` and a 3x3 stride-2 ``maxpool``; with ``small_input`` ``conv1`` is 3x3 stride 1
    and ``maxpool`` an ``Identity``, which keeps 28x28 or 32x32 images at full resolution in
    layer1 (and is no torchvision network: ImageNet weights do not fit its ``conv1``).
    Convolutions are initialised as in torchvision (Kaiming normal, fan-out), BatchNorm with
    weight 1 and bias 0. A block without a projection shortcut has an ``Identity`` where
    torchvision has ``None`` (neither holds parameters).

    ``ResNet(BasicBlock, (2, 2, 2, 2))`` plus ``Linear(512, 1000)`` is torchvision's
    ``resnet18()`` (11,689,512 parameters), ``ResNet(BasicBlock, (3, 4, 6, 3))`` plus
    ``Linear(512, 1000)`` its ``resnet34()`` (21,797,672), and
    ``ResNet(Bottleneck, (3, 4, 6, 3))`` plus ``Linear(2048, 1000)`` its ``resnet50()``
    (25,557,032).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages, each >= 1.
        in_channels: channels of the input images, >= 1 (torchvision's: 3).
        small_input: use the 3x3 stride-1 ``conv1`` without max-pool.
        width: channels of layer1 (before the block's expansion), doubled at each later
            stage; torchvision's value is 64.

    Shapes:
        (B, in_channels, H, W) -> (B, feature_dim), ``feature_dim = 8 * width * expansion``
        (512 for ResNet-18 and -34, 2048 for ResNet-50).

    Corner cases:
        - Any ``H, W >= 1`` works (every strided layer is padded); layer4 sees
          ``ceil(H / 32)`` with the standard stem and ``ceil(H / 8)`` with ``small_input``.
        - A ``state_dict`` of earlier versions, whose stem was ``stem.0`` (conv) and
          ``stem.1`` (BatchNorm), loads too: those keys are read as ``conv1`` and ``bn1``.
    """

    #: As :attr:`BasicBlock.CONV_BN`: the stem.
    CONV_BN: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"),)

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
        if small_input:
            self.conv1 = _conv3x3(in_channels, width)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        )
        stages: list[nn.Sequential] = []
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
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_load_state_dict_pre_hook(_rename_old_stem)  # type: ignore[no-untyped-call]

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, feature_dim) of images (B, in_channels, H, W)."""
        _check_images(x, self.in_channels)
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, width, H', W'); H / 1 or 4
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))  # (B, feature_dim, h, w)
        out: Tensor = self.avgpool(h).flatten(1)  # (B, feature_dim)
        return out


# The stem's keys of earlier versions (an nn.Sequential named stem) and torchvision's.
_OLD_STEM = {"stem.0.": "conv1.", "stem.1.": "bn1."}


def _rename_old_stem(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: object
) -> None:
    """``load_state_dict`` pre-hook: ``<prefix>stem.0.*`` -> ``<prefix>conv1.*`` and
    ``<prefix>stem.1.*`` -> ``<prefix>bn1.*`` in place (checkpoints of earlier versions)."""
    for key in [k for k in state_dict if k.startswith(prefix + "stem.")]:
        rest = key[len(prefix) :]
        for old, new in _OLD_STEM.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
