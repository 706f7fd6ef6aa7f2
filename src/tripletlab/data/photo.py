"""Photo augmentations as batched tensor operations on the images' device, with the semantics
(and parameter names) of torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ColorJitter`` and ``RandomGrayscale`` (torchvision.transforms.v2, which this package cannot
import): :func:`photo_augment` runs them on a (B, C, H, W) uint8 batch, each sample with its own
random draws and no loop over the batch.

The single operations are pure functions of float images in [0, 1] and of per-sample
parameters (crop boxes, factors), so each can be checked against a per-sample computation:

- :func:`random_resized_crop_boxes` (or :func:`crop_boxes` from given uniform draws) and
  :func:`resized_crop`: a box of a random area fraction (``scale``) and log-uniform aspect
  ratio (``ratio``) at a random place, up to 10 tries, then torchvision's central fallback;
  the box resampled to the output size by bilinear interpolation (one ``grid_sample`` call),
  with an optional horizontal flip folded into the sampling grid.
- :func:`adjust_brightness`, :func:`adjust_contrast`, :func:`adjust_saturation`,
  :func:`adjust_hue` and :func:`color_jitter`: torchvision's formulas (a blend with black,
  with the mean of the greyscale image, with the greyscale image; a shift of the hue in HSV),
  each clamped to [0, 1] as torchvision clamps float images.
- :func:`rgb_to_grayscale`: ITU-R 601-2 luma (0.2989 R + 0.587 G + 0.114 B), as torchvision.

Where batching differs from torchvision's per-image calls:

- ``ColorJitter`` applies its four adjustments in a random order drawn at every call, i.e.
  for every image. :func:`photo_augment` draws one random order per batch (a per-sample order
  would need each of the four stages to compute all four adjustments); the factors are drawn
  per sample. Over a run every order is used equally often.
- The arithmetic is float32 from the uint8 input to the uint8 output, rounded once at the
  end; torchvision's uint8 path truncates to uint8 after each adjustment.
- The resampling is bilinear without antialiasing (``F.interpolate(..., mode="bilinear",
  align_corners=False, antialias=False)`` on the cropped box). torchvision antialiases, which
  differs only when a box is larger than the output; in training the output has the stored
  images' size, which no box exceeds, so boxes are only ever enlarged.

Grey (C = 1) images: saturation, hue and greyscale leave them as they are (torchvision does
the same); brightness and contrast apply. Colour images have C = 3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: ITU-R 601-2 luma weights of R, G and B (torchvision's ``rgb_to_grayscale``).
LUMA: tuple[float, float, float] = (0.2989, 0.587, 0.114)

#: The photo preset (``tripletlab train --augment photos``): area fraction of the random
#: resized crop (torchvision's default is (0.08, 1.0), which at 28 to 64 pixels leaves crops
#: of a few pixels), its aspect ratios (torchvision's), and the colour jitter's strength
#: (brightness, contrast and saturation within +-JITTER, hue within +-JITTER / 4 of a turn)
#: and the greyscale probability, mild because colour is often what tells classes apart.
PHOTO_SCALE: tuple[float, float] = (0.2, 1.0)
PHOTO_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
PHOTO_JITTER = 0.2
PHOTO_GRAYSCALE = 0.0

#: Tries of torchvision's ``RandomResizedCrop.get_params`` before the central fallback.
CROP_TRIES = 10

_JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")


def _check_float_batch(images: Tensor, what: str) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            f"{what} takes float images of shape (B, C, H, W), got {images.dtype} of shape "
            f"{tuple(images.shape)}"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{what} takes 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """(B,) factors as (B, 1, 1, 1), on the images' device and dtype."""
    if values.shape != images.shape[:1]:
        raise ValueError(
            f"need one value per image ({images.shape[0]},), got {tuple(values.shape)}"
        )
    return values.to(images.device, images.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1)


# ------------------------------------------------------------------- random resized crop


def crop_boxes(
    area_fraction: Tensor,
    log_ratio: Tensor,
    offsets: Tensor,
    height: int,
    width: int,
    ratio: tuple[float, float] = PHOTO_RATIO,
) -> Tensor:
    """Crop boxes from given draws, as torchvision's ``RandomResizedCrop.get_params``.

    Try ``t`` of sample ``b`` asks for a box of ``area_fraction[b, t] * height * width``
    pixels and aspect ratio (width / height) ``exp(log_ratio[b, t])``, its sides rounded
    (half to even, as Python's ``round``); the first try whose box fits the image wins, and
    its top-left corner is ``floor(offsets[b] * (free + 1))`` with ``free`` the rows and
    columns left beside the box (torchvision draws it with ``randint``). A sample with no
    fitting try gets the central fallback: the whole image when its ratio lies within
    ``ratio``, else the largest central box of the nearest bound.

    Args:
        area_fraction, log_ratio: (B, T) the tries' draws (float64 recommended: torchvision
            computes the sides in Python floats).
        offsets: (B, 2) uniform draws in [0, 1) for the top and left offsets.
        height, width: the images' size.
        ratio: the aspect-ratio bounds (of the fallback).

    Returns:
        (B, 4) int64 boxes ``(top, left, box_height, box_width)`` on the draws' device.
    """
    area = height * width
    aspect = log_ratio.exp()  # (B, T)
    ws = torch.round(torch.sqrt(area * area_fraction * aspect))  # (B, T)
    hs = torch.round(torch.sqrt(area * area_fraction / aspect))  # (B, T)
    fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)  # (B, T)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1): the first fitting try
    found = fits.any(dim=1)  # (B,)
    h = hs.gather(1, first).squeeze(1).long()  # (B,)
    w = ws.gather(1, first).squeeze(1).long()  # (B,)
    top = torch.floor(offsets[:, 0] * (height - h + 1)).long().clamp(max=height - h)  # (B,)
    left = torch.floor(offsets[:, 1] * (width - w + 1)).long().clamp(max=width - w)  # (B,)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fb_w, fb_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fb_w, fb_h = round(height * max(ratio)), height
    else:
        fb_w, fb_h = width, height
    fallback = torch.tensor(
        [(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w], device=offsets.device
    )
    boxes = torch.stack([top, left, h, w], dim=1)  # (B, 4)
    return torch.where(found[:, None], boxes, fallback)  # (B, 4)


def random_resized_crop_boxes(
    batch: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = PHOTO_SCALE,
    ratio: tuple[float, float] = PHOTO_RATIO,
    generator: torch.Generator,
) -> Tensor:
    """Random crop boxes of ``batch`` images of ``height`` x ``width``: :func:`crop_boxes` of
    :data:`CROP_TRIES` tries per sample, the area fraction uniform in ``scale``, the aspect
    ratio log-uniform in ``ratio``.

    Draws, in this order, on the generator's device in float64: (B, T) area fractions, (B, T)
    log ratios, (B, 2) offsets.

    Returns:
        (B, 4) int64 ``(top, left, box_height, box_width)`` on the generator's device.
    """
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 0.0, math.inf)
    dev, f64 = generator.device, torch.float64
    u = torch.rand(batch, CROP_TRIES, generator=generator, device=dev, dtype=f64)
    area_fraction = scale[0] + (scale[1] - scale[0]) * u  # (B, T)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    u = torch.rand(batch, CROP_TRIES, generator=generator, device=dev, dtype=f64)
    log_ratio = lo + (hi - lo) * u  # (B, T)
    offsets = torch.rand(batch, 2, generator=generator, device=dev, dtype=f64)  # (B, 2)
    return crop_boxes(area_fraction, log_ratio, offsets, height, width, ratio)


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float) -> None:
    a, b = bounds
    if not (low < a <= b <= high):
        raise ValueError(
            f"{name} must be (min, max) with {low:g} < min <= max <= {high:g}, got {bounds}"
        )


def resized_crop(
    images: Tensor, boxes: Tensor, size: tuple[int, int], flip: Tensor | None = None
) -> Tensor:
    """Each image's box resampled to ``size`` by bilinear interpolation, optionally mirrored.

    Sample ``b`` equals ``F.interpolate(images[b:b+1, :, t:t+h, l:l+w], size,
    mode="bilinear", align_corners=False)`` for its box ``(t, l, h, w)``: output pixel ``o``
    reads the box at ``(o + 0.5) * h / size - 0.5`` (half-pixel centres, ``align_corners=
    False``), clamped to the box's first and last pixel, so no pixel outside the box is
    read. Without antialiasing (see the module). ``flip[b]`` mirrors the output left-right
    (the columns are read in reverse), torchvision's flip after the crop.

    Args:
        images: (B, C, H, W) float.
        boxes: (B, 4) int ``(top, left, box_height, box_width)`` within the images.
        size: the output's (height, width).
        flip: (B,) bool, or None for no flip.

    Returns:
        (B, C, size[0], size[1]) float on the images' device; one ``grid_sample`` call.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"resized_crop takes float (B, C, H, W) images, got {images.dtype}")
    b, _, height, width = images.shape
    out_h, out_w = size
    dev, dt = images.device, images.dtype
    top, left, box_h, box_w = boxes.to(dev, dt).unbind(1)  # (B,) each
    oy = torch.arange(out_h, device=dev, dtype=dt) + 0.5  # (S_h,)
    ox = torch.arange(out_w, device=dev, dtype=dt) + 0.5  # (S_w,)
    ys = oy * (box_h[:, None] / out_h) - 0.5  # (B, S_h) in box pixels
    xs = ox * (box_w[:, None] / out_w) - 0.5  # (B, S_w)
    ys = torch.minimum(ys.clamp(min=0), box_h[:, None] - 1) + top[:, None]  # image rows
    xs = torch.minimum(xs.clamp(min=0), box_w[:, None] - 1) + left[:, None]  # image columns
    if flip is not None:
        xs = torch.where(flip.to(dev)[:, None], xs.flip(1), xs)  # (B, S_w)
    gy = (2 * ys + 1) / height - 1  # (B, S_h) grid_sample's [-1, 1], align_corners=False
    gx = (2 * xs + 1) / width - 1  # (B, S_w)
    grid = torch.stack(
        [gx[:, None, :].expand(b, out_h, out_w), gy[:, :, None].expand(b, out_h, out_w)], dim=-1
    )  # (B, S_h, S_w, 2) as (x, y)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, S_h, S_w)


# ------------------------------------------------------------------------- colour


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) ITU-R 601-2 luma :data:`LUMA`; (B, 1, H, W) as it is."""
    _check_float_batch(images, "rgb_to_grayscale")
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)  # (B, H, W) each
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)  # (B, 1, H, W)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision's ``_blend``: ``factor * images + (1 - factor) * other`` clamped to [0, 1]."""
    f = _per_sample(factor, images)  # (B, 1, 1, 1)
    return (f * images + (1 - f) * other).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with black: ``clamp(factor[b] * x, 0, 1)``. images (B, C, H, W) float in [0, 1];
    factor (B,) >= 0."""
    _check_float_batch(images, "adjust_brightness")
    return _blend(images, torch.zeros_like(images[:, :1]), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean of each image's greyscale (:func:`rgb_to_grayscale`; of the image
    itself when grey): ``clamp(f x + (1 - f) mean, 0, 1)``. images (B, C, H, W) float in
    [0, 1]; factor (B,) >= 0."""
    _check_float_batch(images, "adjust_contrast")
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the greyscale image: ``clamp(f x + (1 - f) grey(x), 0, 1)``; grey images as
    they are. images (B, C, H, W) float in [0, 1]; factor (B,) >= 0."""
    _check_float_batch(images, "adjust_saturation")
    if images.shape[1] == 1:
        return images
    return _blend(images, rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift[b]`` turns (in [-0.5, 0.5]) in HSV, saturation and value
    kept (torchvision's ``adjust_hue``); grey images as they are.

    Computed without the HSV round trip: with ``v = max``, chroma ``c = max - min`` and the
    hue in sixths of a turn ``h6`` (``(g - b) / c`` where R is the largest, ``2 + (b - r) /
    c`` where G is, else ``4 + (r - g) / c``: torchvision's ``_rgb2hsv``), channel ``n`` (5 for
    R, 3 for G, 1 for B) becomes ``v - c clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h6 + 6
    shift) mod 6``, the closed form of HSV -> RGB (``v s = c``). Pixels with equal channels
    (``c = 0``) stay as they are.

    Args:
        images: (B, C, H, W) float in [0, 1].
        shift: (B,) hue shifts in turns.

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    _check_float_batch(images, "adjust_hue")
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)  # (B, H, W) each
    v = images.amax(dim=1)  # (B, H, W)
    c = v - images.amin(dim=1)  # (B, H, W) chroma
    inv = torch.where(c > 0, c, torch.ones_like(c)).reciprocal_()  # (B, H, W)
    h6 = torch.where(
        v == r,
        (g - b).mul_(inv),
        torch.where(v == g, (b - r).mul_(inv).add_(2), (r - g).mul_(inv).add_(4)),
    )  # (B, H, W) in (-1, 5]
    h6 = h6.unsqueeze(1) + 6 * _per_sample(shift, images)  # (B, 1, H, W)
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n, 6)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)  # (B, 3, H, W)
    return v.unsqueeze(1) - c.unsqueeze(1) * ramp  # (B, 3, H, W)


def color_jitter(images: Tensor, factors: Tensor, order: tuple[int, ...] = (0, 1, 2, 3)) -> Tensor:
    """Brightness, contrast, saturation and hue adjustments in the given order.

    Args:
        images: (B, C, H, W) float in [0, 1].
        factors: (B, 4) per sample: brightness, contrast, saturation factors (1: unchanged)
            and the hue shift (0: unchanged).
        order: the adjustments by index (0 brightness, 1 contrast, 2 saturation, 3 hue), as
            torchvision's ``fn_idx``; an index left out is not applied.

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for i in order:
        images = ops[i](images, factors[:, i])
    return images


def random_grayscale(images: Tensor, chosen: Tensor) -> Tensor:
    """Images ``b`` with ``chosen[b]`` replaced by their greyscale, repeated over the channels
    (torchvision's ``RandomGrayscale`` keeps the channel count). images (B, C, H, W) float;
    chosen (B,) bool."""
    _check_float_batch(images, "random_grayscale")
    grey = rgb_to_grayscale(images).expand_as(images)  # (B, C, H, W)
    return torch.where(chosen.to(images.device).view(-1, 1, 1, 1), grey, images)


# ------------------------------------------------------------------------- the pipeline


def jitter_ranges(
    brightness: float, contrast: float, saturation: float, hue: float
) -> tuple[tuple[float, float], ...]:
    """torchvision's ``ColorJitter`` ranges: ``[max(0, 1 - v), 1 + v]`` for the first three,
    ``[-hue, hue]`` for the hue (hue <= 0.5).

    Raises:
        ValueError: a negative strength or a hue above 0.5.
    """
    for name, v in zip(_JITTER_NAMES, (brightness, contrast, saturation, hue), strict=True):
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if hue > 0.5:
        raise ValueError(f"hue must be <= 0.5 (half a turn), got {hue}")
    ranges = [(max(0.0, 1 - v), 1 + v) for v in (brightness, contrast, saturation)]
    return (*ranges, (-hue, hue))


def photo_augment(
    images: Tensor,
    *,
    size: tuple[int, int] | None = None,
    scale: tuple[float, float] = PHOTO_SCALE,
    ratio: tuple[float, float] = PHOTO_RATIO,
    hflip: bool = True,
    brightness: float = PHOTO_JITTER,
    contrast: float = PHOTO_JITTER,
    saturation: float = PHOTO_JITTER,
    hue: float = PHOTO_JITTER / 4,
    grayscale: float = PHOTO_GRAYSCALE,
    generator: torch.Generator,
) -> Tensor:
    """Random resized crop, horizontal flip, colour jitter and random greyscale of a batch.

    torchvision's ``RandomResizedCrop(size, scale, ratio)``, ``RandomHorizontalFlip()``,
    ``ColorJitter(brightness, contrast, saturation, hue)`` and ``RandomGrayscale(grayscale)``
    in that order, each sample with its own draws; the jitter's order is drawn once per
    batch (see the module). Adjustments whose range is neutral (0) are skipped.

    Draws, in this order, on the generator's device (then moved to the images'): the crop
    boxes (:func:`random_resized_crop_boxes`), (B,) flips (``rand < 0.5``) when ``hflip``,
    (B, 4) uniform jitter draws and a permutation of the four, (B,) greyscale draws
    (``rand < grayscale``) when ``grayscale > 0``.

    Args:
        images: (B, C, H, W) uint8, C = 1 or 3, on any device.
        size: the output's (height, width) (default: the input's).
        scale, ratio: the crop's area fraction and aspect-ratio ranges.
        hflip: mirror with probability 1/2.
        brightness, contrast, saturation, hue: the jitter's strengths (:func:`jitter_ranges`).
        grayscale: probability of greyscale.
        generator: the only source of randomness.

    Returns:
        (B, C, size[0], size[1]) uint8 on the images' device: float32 throughout, rounded once.

    Raises:
        ValueError: images that are not (B, C, H, W) uint8 with 1 or 3 channels, a range or
            strength out of bounds.
    """
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(
            "photo_augment takes uint8 images of shape (B, C, H, W) with C = 1 or 3, got "
            f"{images.dtype} of shape {tuple(images.shape)}"
        )
    ranges = jitter_ranges(brightness, contrast, saturation, hue)
    if not 0 <= grayscale <= 1:
        raise ValueError(f"grayscale must be a probability in [0, 1], got {grayscale}")
    b, _, height, width = images.shape
    dev, g_dev = images.device, generator.device
    boxes = random_resized_crop_boxes(
        b, height, width, scale=scale, ratio=ratio, generator=generator
    )  # (B, 4)
    flip = torch.rand(b, generator=generator, device=g_dev) < 0.5 if hflip else None  # (B,)
    x = images.to(torch.float32).div_(255.0)  # (B, C, H, W) in [0, 1]
    x = resized_crop(x, boxes, size or (height, width), flip)  # (B, C, S_h, S_w)
    lo = torch.tensor([r[0] for r in ranges], dtype=torch.float32, device=g_dev)  # (4,)
    hi = torch.tensor([r[1] for r in ranges], dtype=torch.float32, device=g_dev)  # (4,)
    u = torch.rand(b, 4, generator=generator, device=g_dev)  # (B, 4)
    factors = (lo + (hi - lo) * u).to(dev)  # (B, 4)
    order = torch.randperm(4, generator=generator, device=g_dev).tolist()
    active = tuple(i for i in order if ranges[i][0] != ranges[i][1])
    x = color_jitter(x, factors, active)
    if grayscale > 0:
        chosen = torch.rand(b, generator=generator, device=g_dev) < grayscale  # (B,)
        x = random_grayscale(x, chosen)
    return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)  # (B, C, S_h, S_w)
