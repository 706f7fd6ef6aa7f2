"""tripletlab.models.small: SmallConvNet's stages and grid."""

from __future__ import annotations

import pytest
import torch
from models_helpers import (
    images,
    one_thread_fixture,  # noqa: F401 - every test on one thread
)
from torch import nn

from tripletlab.models import SmallConvNet


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
