"""Tests for tripletlab.data.transforms: batch augmentation against a brute-force loop, and
normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from data_helpers import CountCalls, gen

from tripletlab.data import augment, load_dataset, normalize


def _batch(b: int = 16, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)


def _augment_loop(images: torch.Tensor, pad: int, hflip: bool, g: torch.Generator) -> torch.Tensor:
    """Brute-force twin: draws the same random numbers, then pads, slices and flips per image."""
    b, _, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5 if hflip else torch.zeros(b, dtype=torch.bool)
    out = torch.empty_like(images)
    for k in range(b):
        padded = torch.zeros(images.shape[1], h + 2 * pad, w + 2 * pad, dtype=torch.uint8)
        padded[:, pad : pad + h, pad : pad + w] = images[k]
        crop = padded[:, int(dy[k]) : int(dy[k]) + h, int(dx[k]) : int(dx[k]) + w]
        out[k] = crop.flip(-1) if flip[k] else crop
    return out


@pytest.mark.parametrize(("pad", "hflip"), [(0, True), (1, False), (2, True), (4, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_augment_matches_loop(pad: int, hflip: bool, seed: int) -> None:
    images = _batch(seed=seed)
    out = augment(images, crop_padding=pad, hflip=hflip, generator=gen(seed))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, _augment_loop(images, pad, hflip, gen(seed)))


def test_augment_identity() -> None:
    images = _batch()
    out = augment(images, crop_padding=0, hflip=False, generator=gen(0))
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_augment_flips_about_half() -> None:
    images = _batch(b=400, h=3, w=4)
    out = augment(images, crop_padding=0, hflip=True, generator=gen(0))
    flipped = (out == images.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == images).all(dim=(1, 2, 3))
    assert bool((flipped | kept).all())
    assert 160 < int(flipped.sum()) < 240


def test_augment_crops_shift_content() -> None:
    b, pad = 200, 2
    images = torch.zeros(b, 1, 7, 7, dtype=torch.uint8)
    images[:, 0, 3, 3] = 255  # one bright pixel in the middle
    out = augment(images, crop_padding=pad, hflip=False, generator=gen(0))
    assert bool((out.sum(dim=(1, 2, 3)) == 255).all())  # a shift of <= pad keeps the pixel
    pos = torch.nonzero(out[:, 0] == 255)[:, 1:]  # (B, 2) row, col
    shifts = {(int(r) - 3, int(c) - 3) for r, c in pos}
    assert shifts == {(r, c) for r in range(-pad, pad + 1) for c in range(-pad, pad + 1)}


def test_augment_deterministic_per_generator() -> None:
    images = _batch()
    a = augment(images, crop_padding=2, hflip=True, generator=gen(3))
    b = augment(images, crop_padding=2, hflip=True, generator=gen(3))
    c = augment(images, crop_padding=2, hflip=True, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _calls(fn: Callable[[], object]) -> int:
    mode = CountCalls()
    with mode:
        fn()
    return mode.calls


def test_augment_has_no_loop_over_the_batch() -> None:
    small, large = _batch(b=2), _batch(b=64)

    def run(x: torch.Tensor) -> Callable[[], object]:
        return lambda: augment(x, crop_padding=2, hflip=True, generator=gen(0))

    assert _calls(run(small)) == _calls(run(large))


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(2, 1, 3, 3), crop_padding=1, hflip=False, generator=gen(0))
    with pytest.raises(ValueError, match="crop_padding"):
        augment(_batch(), crop_padding=-1, hflip=False, generator=gen(0))


def test_normalize() -> None:
    images = _batch(b=4, c=3)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = (
        images.double() / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)
    ) / torch.tensor(std).double().view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(images, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="> 0"):
        normalize(images, mean, (0.2, 0.0, 0.4))
    with pytest.raises(ValueError, match="uint8"):
        normalize(images.float(), mean, std)


def test_normalized_train_set_has_zero_mean_unit_std() -> None:
    splits = load_dataset("digits")
    x = normalize(splits.train.images[:], splits.mean, splits.std).double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-5
