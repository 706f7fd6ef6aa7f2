"""Tests for tripletlab.data.photo: each batched photo augmentation against a per-sample float64
computation of torchvision's formula (crop boxes by its ``get_params`` loop, resampling by
``F.interpolate`` per box, the colour adjustments per pixel, hue through ``colorsys``), the
whole pipeline against the same from the same draws, and its invariants.

Tolerances: a float32 computation of these formulas is within a few float32 roundings of the
float64 one. Resampling computes the source coordinate ``(o + 0.5) * h / S - 0.5 + t`` and its
grid form in float32 (within ``8 * eps * W`` pixels for images of width W), and an
interpolated value moves by at most that times the largest step between neighbours (1 in [0,
1]). A blend or HSV round trip is a handful of float32 operations on values in [0, 1], each
rounded at ``eps``; 64 eps covers them. Rounded to uint8 at the end, two values that close
give the same level except where the exact value sits within that distance of a half level,
where they differ by one: hence "at most one level, and rarely".
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from data_helpers import CountCalls, gen

from tripletlab.data.photo import (
    CROP_TRIES,
    LUMA,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    crop_boxes,
    jitter_ranges,
    photo_augment,
    random_grayscale,
    random_resized_crop_boxes,
    resized_crop,
    rgb_to_grayscale,
)

EPS32 = torch.finfo(torch.float32).eps
BLEND_TOL = 64 * EPS32


def _images(b: int = 4, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)


def _float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255


# ------------------------------------------------------------------ twins (per sample, float64)


def _boxes_loop(
    area_fraction: torch.Tensor,
    log_ratio: torch.Tensor,
    offsets: torch.Tensor,
    height: int,
    width: int,
    ratio: tuple[float, float],
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop.get_params``, line by line, on given draws."""
    out = []
    for b in range(area_fraction.shape[0]):
        area = height * width
        box = None
        for t in range(area_fraction.shape[1]):
            target_area = area * float(area_fraction[b, t])
            aspect_ratio = math.exp(float(log_ratio[b, t]))
            w = round(math.sqrt(target_area * aspect_ratio))
            h = round(math.sqrt(target_area / aspect_ratio))
            if 0 < w <= width and 0 < h <= height:
                i = math.floor(float(offsets[b, 0]) * (height - h + 1))
                j = math.floor(float(offsets[b, 1]) * (width - w + 1))
                box = (i, j, h, w)
                break
        if box is None:  # fallback to central crop
            in_ratio = float(width) / float(height)
            if in_ratio < min(ratio):
                w = width
                h = round(w / min(ratio))
            elif in_ratio > max(ratio):
                h = height
                w = round(h * max(ratio))
            else:
                w, h = width, height
            box = ((height - h) // 2, (width - w) // 2, h, w)
        out.append(box)
    return torch.tensor(out, dtype=torch.int64)


def _crop_loop(
    images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], flip: torch.Tensor
) -> torch.Tensor:
    """Crop each box, ``F.interpolate`` it (bilinear, align_corners=False) in float64, flip."""
    out = []
    for b in range(images.shape[0]):
        top, left, h, w = (int(v) for v in boxes[b])
        crop = images[b : b + 1, :, top : top + h, left : left + w].double()
        r = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]
        out.append(r.flip(-1) if flip[b] else r)
    return torch.stack(out)


def _luma(px: list[float]) -> float:
    return px[0] if len(px) == 1 else sum(c * v for c, v in zip(LUMA, px, strict=True))


def _luma_image(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., H, W) by :data:`LUMA`."""
    return LUMA[0] * x[..., 0, :, :] + LUMA[1] * x[..., 1, :, :] + LUMA[2] * x[..., 2, :, :]


def _pixels(image: torch.Tensor) -> list[list[float]]:
    """(C, H, W) -> H*W pixels of C floats."""
    return image.double().flatten(1).T.tolist()


def _unpixels(pixels: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(pixels, dtype=torch.float64).T.reshape(like.shape)


def _clamp(v: float) -> float:
    return min(1.0, max(0.0, v))


def _jitter_one(image: torch.Tensor, i: int, f: float) -> torch.Tensor:
    """Adjustment ``i`` (brightness, contrast, saturation, hue) of one (C, H, W) image by
    factor ``f``, pixel by pixel in float64."""
    px = _pixels(image)
    colour = len(px[0]) == 3
    if i == 0:
        px = [[_clamp(f * v) for v in p] for p in px]
    elif i == 1:
        mean = sum(_luma(p) for p in px) / len(px)
        px = [[_clamp(f * v + (1 - f) * mean) for v in p] for p in px]
    elif i == 2 and colour:
        px = [[_clamp(f * v + (1 - f) * _luma(p)) for v in p] for p in px]
    elif i == 3 and colour:
        shifted = []
        for r, g, b in px:
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            shifted.append(list(colorsys.hsv_to_rgb((h + f) % 1.0, s, v)))
        px = shifted
    return _unpixels(px, image)


def _jitter_loop(
    images: torch.Tensor, factors: torch.Tensor, order: tuple[int, ...]
) -> torch.Tensor:
    out = []
    for b in range(images.shape[0]):
        x = images[b].double()
        for i in order:
            x = _jitter_one(x, i, float(factors[b, i]))
        out.append(x)
    return torch.stack(out)


# ------------------------------------------------------------------------------- crop boxes


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (8, 8, (0.08, 1.0), (3 / 4, 4 / 3)),
        (6, 11, (0.2, 1.0), (3 / 4, 4 / 3)),
        (4, 20, (0.9, 1.0), (3 / 4, 4 / 3)),  # mostly the fallback: wider than 4/3
        (20, 4, (0.9, 1.0), (3 / 4, 4 / 3)),  # mostly the fallback: taller than 3/4
        (5, 5, (0.95, 1.0), (2.0, 3.0)),  # the fallback of a square image, ratio above 1
        (7, 7, (1.0, 1.0), (1.0, 1.0)),  # the whole image
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_boxes_match_torchvisions_loop(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], seed: int
) -> None:
    g, b = gen(seed), 64
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, CROP_TRIES, generator=g).double()
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    log_ratio = lo + (hi - lo) * torch.rand(b, CROP_TRIES, generator=g).double()
    offsets = torch.rand(b, 2, generator=g).double()
    got = crop_boxes(area, log_ratio, offsets, height, width, ratio)
    assert got.dtype == torch.int64 and got.shape == (b, 4)
    assert torch.equal(got, _boxes_loop(area, log_ratio, offsets, height, width, ratio))


def test_random_boxes_fit_and_follow_scale_and_ratio() -> None:
    # every try fits a 64 x 64 image here (sides at most sqrt(0.6 * 4/3) * 64), so the first
    # try is taken and the draws' distribution shows unbiased by rejections
    boxes = random_resized_crop_boxes(
        4000, 64, 64, scale=(0.2, 0.6), ratio=(3 / 4, 4 / 3), generator=gen(0)
    )
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= 64).all() and (left + w <= 64).all())
    area, aspect = (h * w).double() / 64**2, w.double() / h.double()
    assert bool((area > 0.18).all() and (area < 0.63).all())  # rounding of the sides
    assert bool((aspect > 0.7).all() and (aspect < 1.43).all())
    assert abs(float(area.mean()) - 0.4) < 0.01  # uniform in [0.2, 0.6]
    assert abs(float(aspect.log().mean())) < 0.01  # log-uniform, symmetric about 1
    assert int((top + h).max()) == 64 and int((left + w).max()) == 64  # reach the far edges


def test_random_boxes_reject_bad_ranges() -> None:
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_boxes(2, 8, 8, scale=(0.5, 0.2), generator=gen(0))
    with pytest.raises(ValueError, match="ratio"):
        random_resized_crop_boxes(2, 8, 8, ratio=(0.0, 1.0), generator=gen(0))


# ------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize("size", [(6, 5), (12, 12), (3, 7), (24, 20)])
@pytest.mark.parametrize("seed", [0, 1])
def test_resized_crop_matches_interpolate_per_box(size: tuple[int, int], seed: int) -> None:
    images = _float(_images(b=8, h=10, w=9, seed=seed))
    boxes = random_resized_crop_boxes(8, 10, 9, scale=(0.1, 1.0), generator=gen(seed))
    flip = torch.rand(8, generator=gen(seed + 5)) < 0.5
    got = resized_crop(images, boxes, size, flip)
    assert got.shape == (8, 3, *size) and got.dtype == torch.float32
    want = _crop_loop(images, boxes, size, flip)
    assert float((got.double() - want).abs().max()) <= 8 * EPS32 * 10


def test_resized_crop_of_the_whole_image_is_the_image() -> None:
    images = _float(_images(h=7, w=7))
    boxes = torch.tensor([[0, 0, 7, 7]]).expand(4, 4)
    out = resized_crop(images, boxes, (7, 7))
    assert float((out - images).abs().max()) < 1e-5
    flipped = resized_crop(images, boxes, (7, 7), torch.ones(4, dtype=torch.bool))
    assert float((flipped - images.flip(-1)).abs().max()) < 1e-5


# ------------------------------------------------------------------------------- colour


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize(
    ("i", "fn", "low", "high"),
    [
        (0, adjust_brightness, 0.0, 2.0),
        (1, adjust_contrast, 0.0, 2.0),
        (2, adjust_saturation, 0.0, 2.0),
        (3, adjust_hue, -0.5, 0.5),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_adjustments_match_the_per_pixel_formula(
    c: int,
    i: int,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    low: float,
    high: float,
    seed: int,
) -> None:
    images = _float(_images(b=5, c=c, seed=seed))
    factor = low + (high - low) * torch.rand(5, generator=gen(seed + 9))
    got = fn(images, factor)
    assert got.shape == images.shape
    factors = torch.ones(5, 4).index_copy(1, torch.tensor([i]), factor[:, None])
    want = _jitter_loop(images, factors, (i,))
    assert float((got.double() - want).abs().max()) <= BLEND_TOL


def test_hue_of_pure_colours_and_greys() -> None:
    red_grey = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 2)
    third = adjust_hue(red_grey, torch.tensor([1 / 3]))  # red -> green, grey stays grey
    assert torch.allclose(third[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(third[0, :, 0, 1], torch.tensor([0.5, 0.5, 0.5]))
    half = adjust_hue(red_grey, torch.tensor([-0.5]))
    assert torch.allclose(half[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0]), atol=1e-6)  # cyan


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1), (1, 3)])
def test_color_jitter_applies_the_order(order: tuple[int, ...]) -> None:
    images = _float(_images(b=3, seed=4))
    lo, hi = zip(*jitter_ranges(0.5, 0.5, 0.5, 0.2), strict=True)
    factors = torch.tensor(lo) + (torch.tensor(hi) - torch.tensor(lo)) * torch.rand(3, 4)
    got = color_jitter(images, factors, order)
    assert float((got.double() - _jitter_loop(images, factors, order)).abs().max()) <= BLEND_TOL


def test_jitter_ranges_are_torchvisions() -> None:
    assert jitter_ranges(0.4, 1.5, 0.0, 0.1) == ((0.6, 1.4), (0.0, 2.5), (1.0, 1.0), (-0.1, 0.1))
    with pytest.raises(ValueError, match=r"hue must be <= 0\.5"):
        jitter_ranges(0, 0, 0, 0.6)
    with pytest.raises(ValueError, match="contrast must be >= 0"):
        jitter_ranges(0, -1, 0, 0)


def test_random_grayscale_uses_luma_and_keeps_channels() -> None:
    images = _float(_images(b=4))
    assert LUMA == (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
    chosen = torch.tensor([True, False, True, False])
    out = random_grayscale(images, chosen)
    luma = _luma_image(images)  # (B, H, W)
    assert out.shape == images.shape
    for b in (0, 2):
        assert torch.allclose(out[b], luma[b].expand(3, -1, -1), atol=1e-6)
    assert torch.equal(out[1::2], images[1::2])
    grey = _float(_images(b=2, c=1))
    assert torch.equal(random_grayscale(grey, torch.ones(2, dtype=torch.bool)), grey)
    assert torch.equal(rgb_to_grayscale(grey), grey)


# ------------------------------------------------------------------------------ pipeline


def _pipeline_loop(images: torch.Tensor, seed: int, settings: dict[str, Any]) -> torch.Tensor:
    """:func:`photo_augment`'s draws made again, then each sample computed in float64."""
    g = gen(seed)
    b, _, height, width = images.shape
    size = settings.get("size") or (height, width)
    scale, ratio = settings["scale"], settings["ratio"]
    u = torch.rand(b, CROP_TRIES, generator=g, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    log_ratio = lo + (hi - lo) * torch.rand(b, CROP_TRIES, generator=g, dtype=torch.float64)
    offsets = torch.rand(b, 2, generator=g, dtype=torch.float64)
    boxes = _boxes_loop(area, log_ratio, offsets, height, width, ratio)
    flip = torch.rand(b, generator=g) < 0.5
    ranges = jitter_ranges(*(settings[k] for k in ("brightness", "contrast", "saturation", "hue")))
    u = torch.rand(b, 4, generator=g)
    factors = torch.tensor(
        [[r[0] + (r[1] - r[0]) * float(u[s, i]) for i, r in enumerate(ranges)] for s in range(b)]
    )
    order = tuple(torch.randperm(4, generator=g).tolist())
    grey = torch.rand(b, generator=g) < settings["grayscale"]
    x = _crop_loop(images.double() / 255, boxes, size, flip)
    x = _jitter_loop(x, factors.double(), order)
    out = []
    for s in range(b):
        xs = x[s]
        if grey[s] and xs.shape[0] == 3:
            xs = _luma_image(xs).expand(3, -1, -1)
        out.append(xs)
    return torch.stack(out).mul(255).round().clamp(0, 255).to(torch.uint8)


_SETTINGS: dict[str, Any] = {
    "scale": (0.2, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.1,
    "grayscale": 0.3,
}


@pytest.mark.parametrize(
    ("c", "h", "w", "size"), [(3, 9, 9, None), (3, 7, 12, (16, 16)), (1, 8, 8, (5, 6))]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_photo_augment_matches_the_per_sample_computation(
    c: int, h: int, w: int, size: tuple[int, int] | None, seed: int
) -> None:
    images = _images(b=12, c=c, h=h, w=w, seed=seed)
    settings = {**_SETTINGS, "size": size}
    got = photo_augment(images, **settings, generator=gen(seed))
    want = _pipeline_loop(images, seed, settings)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    diff = (got.int() - want.int()).abs()
    assert int(diff.max()) <= 1  # float32 against float64, each rounded once (module doc)
    assert float((diff > 0).float().mean()) < 0.01


def test_photo_augment_with_neutral_settings_is_the_identity() -> None:
    images = _images(b=6, h=9, w=9)
    out = photo_augment(
        images,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        hflip=False,
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        grayscale=0,
        generator=gen(0),
    )
    assert torch.equal(out, images)


def test_photo_augment_is_deterministic_per_generator() -> None:
    images = _images(b=8, h=16, w=16)
    a = photo_augment(images, generator=gen(3))
    assert torch.equal(a, photo_augment(images, generator=gen(3)))
    assert not torch.equal(a, photo_augment(images, generator=gen(4)))


def test_photo_augment_treats_each_sample_on_its_own() -> None:
    images = _images(b=8, h=12, w=12)
    changed = images.clone()
    changed[3] = 255 - changed[3]
    a = photo_augment(images, **_SETTINGS, generator=gen(1))
    b = photo_augment(changed, **_SETTINGS, generator=gen(1))
    keep = torch.arange(8) != 3
    assert torch.equal(a[keep], b[keep]) and not torch.equal(a[3], b[3])
    same = images[:1].expand(8, -1, -1, -1)  # one image eight times: eight draws
    out = photo_augment(same.contiguous(), **_SETTINGS, generator=gen(1))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_photo_augment_leaves_the_colour_of_grey_images() -> None:
    grey = _images(b=6, c=1, h=10, w=10)
    plain = {**_SETTINGS, "saturation": 0.0, "hue": 0.0, "grayscale": 0.0}
    colour = {**_SETTINGS, "saturation": 0.9, "hue": 0.5, "grayscale": 1.0}
    out = photo_augment(grey, **colour, generator=gen(2))
    assert out.shape == (6, 1, 10, 10)
    assert torch.equal(out, photo_augment(grey, **plain, generator=gen(2)))


def test_photo_augment_grayscale_one_gives_equal_channels() -> None:
    out = photo_augment(_images(b=5, h=8, w=8), grayscale=1.0, generator=gen(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_photo_augment_flips_about_half() -> None:
    images = torch.arange(8, dtype=torch.uint8).mul(30).expand(400, 1, 8, 8).contiguous()
    out = photo_augment(
        images,
        scale=(1, 1),
        ratio=(1, 1),
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        generator=gen(0),
    )
    flipped = out[:, 0, 0, 0] == 210  # (B,) the last column came first
    assert 150 < int(flipped.sum()) < 250
    assert torch.equal(out[flipped], images[flipped].flip(-1))
    assert torch.equal(out[~flipped], images[~flipped])


def test_photo_augment_has_no_loop_over_the_batch() -> None:
    counts = []
    for b in (2, 64):
        mode = CountCalls()
        with mode:
            photo_augment(_images(b=b, h=12, w=12), **_SETTINGS, generator=gen(0))
        counts.append(mode.calls)
    assert counts[0] == counts[1]


def test_photo_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        photo_augment(torch.zeros(2, 3, 4, 4), generator=gen(0))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        photo_augment(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), generator=gen(0))
    with pytest.raises(ValueError, match="grayscale"):
        photo_augment(_images(), grayscale=1.5, generator=gen(0))
