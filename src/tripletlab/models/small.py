"""The ``"small"`` backbone, :class:`SmallConvNet`: VGG-style stacks of 3x3 convolutions
(Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
2015) with batch normalisation (Ioffe & Szegedy 2015), 2x2 max-pooling between stages and the
last map pooled to a grid; :func:`small_stages` gives its default layout."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tripletlab.models.checks import _check_images, _check_int


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
