"""Tests for tripletlab.data.decode: the aspect ratio kept (central square), EXIF orientation,
image modes (CMYK, palette with transparency, grey with alpha, 16 bits), tiny images, and the
files that cannot be read (truncated, empty, not an image)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tripletlab.data.decode import decode_image


def _stripes(width: int, height: int) -> Image.Image:
    """Three vertical (or horizontal, when taller) thirds: blue, green, red."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    long_side = max(width, height)
    for i, c in enumerate(colours):
        part = slice(i * long_side // 3, (i + 1) * long_side // 3)
        if width >= height:
            a[:, part] = c
        else:
            a[part, :] = c
    return Image.fromarray(a)


def _mostly_green(out: np.ndarray | None) -> bool:
    """Green everywhere; at the edges the bilinear filter, which averages over the pixels it
    shrinks, reaches a little into the blue and red thirds, never as far as a squeeze would."""
    assert out is not None and out.ndim == 3
    return bool((out[..., 1] > 150).all() and (out[..., [0, 2]] < 100).all())


@pytest.mark.parametrize(("width", "height"), [(90, 30), (30, 90)])
def test_the_central_square_is_kept_not_squeezed(tmp_path: Path, width: int, height: int) -> None:
    # The shorter side is 30, the central 30 x 30 square is the green third: a squeeze would
    # bring pure blue and red in.
    _stripes(width, height).save(tmp_path / "s.png")
    out = decode_image(tmp_path / "s.png", 5)
    assert out is not None and out.shape == (5, 5, 3)
    assert _mostly_green(out)
    assert (out[1:-1, 1:-1] == np.array([0, 255, 0], dtype=np.uint8)).all()


def test_a_square_image_is_resized_whole(tmp_path: Path) -> None:
    a = np.zeros((8, 8), dtype=np.uint8)
    a[:, 4:] = 200
    Image.fromarray(a).save(tmp_path / "h.png")
    out = decode_image(tmp_path / "h.png", 4)
    assert out is not None and out.shape == (4, 4)
    assert (out[:, 0] == 0).all() and (out[:, 3] == 200).all()  # the columns next to the
    assert (out[:, 1] < out[:, 2]).all()  # middle are blended by the bilinear filter


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored landscape 30 x 10 with orientation 6 ("rotate 90 degrees clockwise to view"):
    # viewed, it is 10 wide and 30 tall, and its central square is still the green third.
    img = _stripes(90, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.png", exif=exif.tobytes())
    assert _mostly_green(decode_image(tmp_path / "r.png", 6))
    # A marker in the stored top-left corner ends at the viewed top-right after the rotation.
    a = np.full((12, 12), 0, dtype=np.uint8)
    a[:4, :4] = 255
    Image.fromarray(a).save(tmp_path / "m.png", exif=exif.tobytes())
    out = decode_image(tmp_path / "m.png", 12)
    assert out is not None and out[0, -1] == 255 and out[0, 0] == 0 and out[-1, 0] == 0


def test_modes_are_converted(tmp_path: Path) -> None:
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    out = decode_image(tmp_path / "cmyk.jpg", 6)
    assert out is not None and out.shape == (6, 6, 3)
    assert out[..., 0].min() > 200 and out[..., 1:].max() < 60  # red

    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png")
    out = decode_image(tmp_path / "pal.png", 6)
    assert out is not None and (out == np.array([10, 200, 30], dtype=np.uint8)).all()

    Image.new("LA", (6, 6), (90, 0)).save(tmp_path / "la.png")  # grey, fully transparent
    out = decode_image(tmp_path / "la.png", 3)
    assert out is not None and out.shape == (3, 3) and (out == 90).all()  # alpha dropped


def test_one_pixel_image_is_read(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (5, 100, 200)).save(tmp_path / "p.png")
    out = decode_image(tmp_path / "p.png", 4)
    assert out is not None and (out == np.array([5, 100, 200], dtype=np.uint8)).all()


def test_unreadable_files_give_none(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _stripes(64, 64).save(buf, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    for name in ("truncated.jpg", "empty.png", "text.png"):
        assert decode_image(tmp_path / name, 8) is None, name
