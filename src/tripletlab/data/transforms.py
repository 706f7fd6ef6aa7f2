"""Batch augmentation and normalisation of (B, C, H, W) uint8 images on their device:
:func:`augment` (random crop after zero padding, random horizontal flip) and
:func:`normalize`; the augmentations a run chooses from (:data:`Augmentation`) and its
default (:func:`default_augmentation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

#: What augments a run's training images: ``none``; ``digits``: :func:`augment`, a random crop
#: after zero padding and horizontal flips; ``photos``:
#: :func:`~tripletlab.data.photo.photo_augment`, random resized crops, flips, colour jitter
#: and random greyscale.
Augmentation = Literal["none", "digits", "photos"]
AUGMENTATIONS: tuple[Augmentation, ...] = get_args(Augmentation)

# A pretrained backbone fine-tuned on photos gets the field's recipe (random resized crops,
# flips, colour jitter); a network trained from scratch at small sizes keeps the crops after
# padding: on 1,223 colour icon classes of 3-5 images at 28 px (docs/results.md), photos gave
# unseen P@1 0.252 / MAP@R 0.132 against 0.307 / 0.176 for digits.
_DEFAULT_AUGMENTATION: dict[bool, Augmentation] = {False: "digits", True: "photos"}


def default_augmentation(pretrained: bool) -> Augmentation:
    """The augmentation when none is chosen: ``photos`` for a pretrained backbone,
    ``digits`` (crops after padding, flips) for a network trained from scratch, grey or
    colour images alike."""
    return _DEFAULT_AUGMENTATION[bool(pretrained)]


def _check_batch(images: Tensor, what: str) -> None:
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"{what} takes uint8 images of shape (B, C, H, W), got {images.dtype} of shape "
            f"{tuple(images.shape)}"
        )


def augment(
    images: Tensor, *, crop_padding: int, hflip: bool, generator: torch.Generator
) -> Tensor:
    """Per-sample random crop after zero padding and random horizontal flip, on a whole batch.

    Each image is zero-padded by ``crop_padding`` pixels on every side and an H x W window is
    cut at a uniformly random offset in [0, 2 * crop_padding] on each axis; with ``hflip`` it is
    then mirrored left-right with probability 1/2. One gather does both (no loop over the batch).

    Args:
        images: (B, C, H, W) uint8, on any device.
        crop_padding: padding in pixels, >= 0; 0 means no crop.
        hflip: whether to flip.
        generator: the only source of randomness; the numbers are drawn on its device and moved
            to the images' device.

    Returns:
        A new (B, C, H, W) uint8 tensor on the images' device; a copy of the input when
        ``crop_padding == 0`` and not ``hflip`` (the generator is then not advanced).

    Raises:
        ValueError: for a tensor that is not (B, C, H, W) uint8 or a negative padding.
    """
    _check_batch(images, "augment")
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if crop_padding == 0 and not hflip:
        return images.clone()
    b, c, h, w = images.shape
    dev = images.device
    g_dev = generator.device
    pad = crop_padding
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H) rows of the padded image
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if hflip:
        flip = torch.rand(b, generator=generator, device=g_dev).to(dev) < 0.5  # (B,)
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = dx[:, None] + cols  # (B, W) columns of the padded image
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images  # (B, C, H+2p, W+2p)
    flat = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (B, H, W) into a padded image
    index = flat.view(b, 1, h * w).expand(b, c, h * w)  # (B, C, H*W)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)  # (B, C, H, W)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(B, C, H, W) uint8 -> (B, C, H, W) float32 ``(x / 255 - mean[c]) / std[c]``.

    Runs on the images' device.

    Raises:
        ValueError: for a tensor that is not (B, C, H, W) uint8, or mean/std without one value
            per channel or a std that is not > 0.
    """
    _check_batch(images, "normalize")
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"mean and std need one value per channel ({c}), got {len(mean)} and {len(std)}"
        )
    if any(not s > 0 for s in std):
        raise ValueError(f"std must be > 0 in every channel, got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    return (images.to(torch.float32).div_(255.0).sub_(m)).div_(s)
