"""Decoding one image file into a square uint8 array, the one way every image of an image
folder, a csv table or a benchmark is read (:func:`decode_image`), and :func:`read_image_file`,
which reads one file for a query the same way.

How a file is read:

- the suffixes read are :data:`IMAGE_SUFFIXES` (PNG, JPEG, GIF, WEBP, TIFF, BMP; any case);
  of a file with several frames (GIF, WEBP, TIFF) the first frame;
- the EXIF orientation is applied (a photo taken with the camera on its side stands upright);
- 16- and 32-bit integer images (Pillow modes ``I;16``, ``I;16B``, ``I;16L``, ``I``) are
  scaled to 8 bits as ``round(value / 257)`` after clipping to [0, 65535]: the 16-bit range
  maps onto 0..255 whatever a file's own range, so a dark image stays dark next to a bright
  one (Pillow's ``convert("L")`` would clip them, turning most pixels white);
- palette, CMYK, YCbCr, LAB... images are converted to RGB; alpha is dropped (as
  torchvision's loader does), not composited;
- the aspect ratio is kept: the central square of side ``min(width, height)`` is resized to
  size x size (Pillow's bilinear filter, which averages over the pixels it shrinks), which is
  "resize the shorter side to size, then centre crop"; JPEGs are decoded at the smallest
  scale (1/2, 1/4, 1/8) still at least that large;
- an image is *colour* when the channels of some pixel of the result differ by more than
  :data:`GREY_TOLERANCE` levels; otherwise it is grey (Pillow's luma), whatever its mode: a
  grey GIF palette, a grey CMYK scan or a lossy WEBP of a grey picture is grey.

A file Pillow cannot read (truncated, empty, not an image, a decompression bomb) is
*unreadable*: :func:`decode_image` returns ``None`` and its callers count and skip it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageOps
from torch import Tensor

from tripletlab.checks import printable
from tripletlab.data.errors import DataError

#: The image file suffixes read (compared in lower case).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
)
#: The kinds of :data:`IMAGE_SUFFIXES`, as messages name them.
IMAGE_KINDS = "PNG, JPEG, GIF, WEBP, TIFF or BMP"
#: Channels of a grey pixel may differ by this much (lossy WEBP stores grey images with
#: differences of 1 between channels).
GREY_TOLERANCE = 2


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_SUFFIXES` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _to_8_bits(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer image (mode ``I;16*`` or ``I``) as 8-bit grey, ``round(value /
    257)`` after clipping to [0, 65535]; any other image as it is."""
    if not img.mode.startswith("I"):
        return img
    values = np.clip(np.asarray(img).astype(np.float64), 0.0, 65535.0)  # (H, W)
    return Image.fromarray(np.rint(values / 257.0).astype(np.uint8))


def _centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) box of the central square of a width x height image."""
    side = min(width, height)
    left = (width - side) / 2
    top = (height - side) / 2
    return left, top, left + side, top + side


def decode_image(path: Path, size: int) -> npt.NDArray[np.uint8] | None:
    """A (size, size) grey or (size, size, 3) colour uint8 array, or None if unreadable.

    Read as the module says: first frame, EXIF orientation applied, 16 bits scaled, alpha
    dropped, the central square resized to size x size, grey unless the channels differ.
    """
    try:
        with Image.open(path) as opened:
            opened.draft(None, (size, size))  # JPEG: decode at a reduced scale >= size
            img = _to_8_bits(ImageOps.exif_transpose(opened))
            bands = [b for b in img.getbands() if b != "A"]
            mode = "L" if len(bands) == 1 and bands[0] != "P" else "RGB"
            converted = img.convert(mode).resize(
                (size, size), Image.Resampling.BILINEAR, box=_centre_square(*img.size)
            )
            array = np.asarray(converted, dtype=np.uint8)
            if array.ndim == 3 and _is_grey(array):
                array = np.asarray(converted.convert("L"), dtype=np.uint8)  # grey content
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return array


def _is_grey(rgb: npt.NDArray[np.uint8]) -> bool:
    """Whether no pixel of (H, W, 3) ``rgb`` has channels more than :data:`GREY_TOLERANCE`
    apart."""
    x = rgb.astype(np.int16)
    return bool((np.abs(x - x[..., :1]) <= GREY_TOLERANCE).all())


def read_image_file(path: Path, size: int, channels: int) -> Tensor:
    """One image file as an image folder's images are read (see the module): (channels,
    size, size) uint8.

    Colour images become grey (``channels=1``) with ITU-R 601 luma weights, as Pillow's
    ``convert("L")``; grey images are repeated to three channels (``channels=3``).

    Raises:
        DataError: no such file (or a folder), a suffix not in :data:`IMAGE_SUFFIXES`, or
            not an image Pillow can read.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    shown = printable(str(path))
    if Path(path).is_dir():
        raise DataError(f"{shown} is a folder; pass its image files (e.g. {shown}/*.png)")
    if not Path(path).is_file():
        raise DataError(f"no image file at {shown}; pass paths of {IMAGE_KINDS} files")
    if not is_image_name(Path(path).name):
        raise DataError(
            f"{shown} is not named as an image file ({', '.join(IMAGE_SUFFIXES)}); pass "
            f"{IMAGE_KINDS} files"
        )
    array = decode_image(Path(path), size)
    if array is None:
        raise DataError(f"cannot read {shown} as an image; pass {IMAGE_KINDS} files")
    x = torch.from_numpy(np.array(array))  # a writable copy of the decoded pixels
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)  # (1 or 3, size, size)
    if x.shape[0] == channels:
        return x.contiguous()
    if channels == 3:
        return x.expand(3, size, size).contiguous()
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    return (x.float() * luma).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
