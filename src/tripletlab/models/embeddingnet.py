"""The ``"embeddingnet"`` backbone, :class:`EmbeddingNet`: the network of Adam Bielski's
siamese-triplet (github.com/adambielski/siamese-triplet, ``networks.EmbeddingNet``)."""

from __future__ import annotations

from torch import Tensor, nn

from tripletlab.models.checks import _check_images, _check_int


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
