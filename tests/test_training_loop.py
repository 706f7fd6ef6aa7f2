"""The plain loop's helpers (:mod:`tripletlab.training.loop`): embedding with flips."""

from __future__ import annotations

import torch

from tripletlab.training import embed


def test_embed_with_flip_averages_the_mirror_image() -> None:
    from tripletlab.models import build_model

    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8, width=4)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    stats, cpu = ((0.5,), (0.25,)), torch.device("cpu")
    plain = embed(model, images, stats, cpu)
    mirror = embed(model, images.flip(-1), stats, cpu)
    both = embed(model, images, stats, cpu, flip=True)
    torch.testing.assert_close(both, torch.nn.functional.normalize(plain + mirror, dim=1))
    assert not torch.allclose(both, plain)
