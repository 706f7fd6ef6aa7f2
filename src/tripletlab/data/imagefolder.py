"""Image folders, ``imagefolder:PATH``: one sub-folder of images per class (or ``PATH/train``
and ``PATH/test`` holding such sub-folders), read into :class:`~tripletlab.data.Splits`; and
:func:`read_image_file`, which reads one image file the same way.

How a file is read, here and by :func:`read_image_file` alike:

- the suffixes read are :data:`IMAGE_SUFFIXES` (PNG, JPEG, GIF, WEBP, TIFF, BMP; any case);
  of a file with several frames (GIF, WEBP, TIFF) the first frame;
- 16- and 32-bit integer images (Pillow modes ``I;16``, ``I;16B``, ``I;16L``, ``I``) are
  scaled to 8 bits as ``round(value / 257)`` after clipping to [0, 65535]: the 16-bit range
  maps onto 0..255 whatever a file's own range, so a dark image stays dark next to a bright
  one (Pillow's ``convert("L")`` would clip them, turning most pixels white);
- an image is *colour* when, converted to RGB (palette, CMYK, YCbCr, ... included) and
  resized, the channels of some pixel differ by more than :data:`GREY_TOLERANCE` levels;
  otherwise it is grey (Pillow's luma), whatever its mode: a grey GIF palette, a grey CMYK
  scan or a lossy WEBP of a grey picture is grey;
- alpha is dropped; the image is resized to size x size (aspect ratio not kept).

A folder holds colour images when at least one of its images is colour (channels are kept,
grey images are repeated over them); a mix is said in one warning counting both kinds.

Folders are walked following symbolic links, each real folder once: a link to a folder
already seen (the class's own parent, another class) is skipped, so links cannot loop, and
a top-level link to the image folder itself, to a folder above it or to another class is
not a class.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import Tensor

from tripletlab.checks import printable
from tripletlab.data.errors import DataError
from tripletlab.data.sets import ImageSet, Splits, _make_splits, _stratified_split

#: The image file suffixes read (compared in lower case), by image folders and
#: :func:`read_image_file` alike.
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
_KINDS = "PNG, JPEG, GIF, WEBP, TIFF or BMP"
#: Channels of a grey pixel may differ by this much (lossy WEBP stores grey images with
#: differences of 1 between channels).
GREY_TOLERANCE = 2


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _walk_images(folder: Path, seen: set[str]) -> list[Path]:
    """The visible image files under ``folder`` (following links), sorted; a folder whose
    real path is in ``seen`` is not entered, and each folder entered is added to it."""
    files: list[Path] = []
    for current, dirs, names in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirs):
            real = _real(Path(current) / d)
            if not d.startswith(".") and real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep  # os.walk enters only these
        here = Path(current)
        files += [
            here / n
            for n in names
            if not n.startswith(".") and _is_image_name(n) and (here / n).is_file()
        ]
    return sorted(files)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """{class name: its image files, sorted} for each visible sub-folder of ``root`` holding
    any image file (searched recursively, see the module); other files are ignored.

    A sub-folder that is a link to ``root``, to a folder above it or to a folder already
    taken as a class (real folders are taken before links) is not a class.
    """
    top = _real(root)
    above = {_real(p) for p in [Path(top), *Path(top).parents]}
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ordered = [p for p in candidates if not p.is_symlink()]
    ordered += [p for p in candidates if p.is_symlink()]
    chosen: dict[str, Path] = {}
    seen = set(above)
    for folder in ordered:
        real = _real(folder)
        if real not in seen:
            seen.add(real)
            chosen[folder.name] = folder
    out: dict[str, list[Path]] = {}
    for name in sorted(chosen):
        files = _walk_images(chosen[name], seen)
        if files:
            out[name] = files
    return out


def _to_8_bits(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer image (mode ``I;16*`` or ``I``) as 8-bit grey, ``round(value /
    257)`` after clipping to [0, 65535]; any other image as it is."""
    if not img.mode.startswith("I"):
        return img
    values = np.clip(np.asarray(img).astype(np.float64), 0.0, 65535.0)  # (H, W)
    return Image.fromarray(np.rint(values / 257.0).astype(np.uint8))


def _read_image(path: Path, size: int) -> npt.NDArray[np.uint8] | None:
    """A (size, size) grey or (size, size, 3) colour uint8 array, or None if unreadable.

    Read as the module says (first frame, 16 bits scaled, grey unless the channels differ,
    alpha dropped); resized to size x size with Pillow's bilinear filter after JPEG draft
    decoding at no less than the target size.
    """
    try:
        with Image.open(path) as opened:
            opened.draft(None, (size, size))
            img = _to_8_bits(opened)
            bands = [b for b in img.getbands() if b != "A"]
            mode = "L" if len(bands) == 1 and bands[0] != "P" else "RGB"
            converted = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
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
        DataError: no such file, a suffix not in :data:`IMAGE_SUFFIXES`, or not an image
            Pillow can read.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    shown = printable(str(path))
    if not Path(path).is_file():
        raise DataError(f"no image file at {shown}; pass paths of {_KINDS} files")
    if not _is_image_name(Path(path).name):
        raise DataError(
            f"{shown} is not named as an image file ({', '.join(IMAGE_SUFFIXES)}); pass "
            f"{_KINDS} files"
        )
    array = _read_image(Path(path), size)
    if array is None:
        raise DataError(f"cannot read {shown} as an image; pass {_KINDS} files")
    x = torch.from_numpy(np.array(array))  # a writable copy of the decoded pixels
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)  # (1 or 3, size, size)
    if x.shape[0] == channels:
        return x.contiguous()
    if channels == 3:
        return x.expand(3, size, size).contiguous()
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    return (x.float() * luma).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _read_folder(
    folders: dict[str, list[Path]], classes: tuple[str, ...], size: int, unreadable: list[Path]
) -> tuple[list[npt.NDArray[np.uint8]], list[int], list[Path]]:
    """Read every image of ``folders`` ({class name: files}); labels index ``classes``.
    Returns the arrays, their labels and their files (the readable ones)."""
    arrays: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    read: list[Path] = []
    for cls, files in folders.items():
        label = classes.index(cls)
        for path in files:
            array = _read_image(path, size)
            if array is None:
                unreadable.append(path)
            else:
                arrays.append(array)
                labels.append(label)
                read.append(path)
    return arrays, labels, read


def _stack(arrays: list[npt.NDArray[np.uint8]], channels: int, size: int) -> Tensor:
    out = np.empty((len(arrays), channels, size, size), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a if a.ndim == 2 else a.transpose(2, 0, 1)  # grey broadcasts to 3 channels
    return torch.from_numpy(out)


def _channels(
    spec: str, images: list[tuple[npt.NDArray[np.uint8], str]], stacklevel: int = 4
) -> int:
    """3 when any image is colour (see the module), else 1; one warning when the folder mixes
    colour and grey images, counting both and naming the first colour file (``images`` pairs
    each array with the name shown)."""
    colour = [name for array, name in images if array.ndim == 3]
    if colour and len(colour) < len(images):
        first = printable(colour[0])
        warnings.warn(
            f"{spec}: {len(colour)} colour and {len(images) - len(colour)} grey images (first "
            f"colour one: {first}); all are read with 3 channels, since an image is colour when "
            "its channels differ and any colour image makes the set colour (convert the colour "
            "ones to grey for 1 channel)",
            stacklevel=stacklevel,
        )
    return 3 if colour else 1


def _load_imagefolder(
    spec: str, path_str: str, image_size: int, strict: bool, test_fraction: float, seed: int
) -> Splits:
    root = Path(path_str).expanduser()
    if not path_str or not root.is_dir():
        raise DataError(
            f"{printable(spec)}: {printable(str(root))} is not a folder; fix: pass "
            "imagefolder:PATH with one sub-folder of images per class"
        )
    spec = printable(spec)  # as messages show it
    layout_fix = f"fix: add sub-folders of {_KINDS} images, one per class (at least 2)"
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    roots = [root / "train", root / "test"] if split_layout else [root]
    folders = [_class_folders(r) for r in roots]
    classes = tuple(sorted(set().union(*folders)))
    if len(classes) < 2:
        where = f"{root}/train and {root}/test" if split_layout else str(root)
        where = printable(where)
        raise DataError(
            f"{spec}: found {len(classes)} class folder(s) with images in {where}, need at "
            f"least 2; {layout_fix}"
        )
    unreadable: list[Path] = []
    loaded = [_read_folder(f, classes, image_size, unreadable) for f in folders]
    if unreadable:
        first = printable(str(unreadable[0]))
        message = f"{spec}: {len(unreadable)} unreadable image file(s), first {first}; "
        if strict:
            raise DataError(message + "fix: delete or repair them, or train without --strict")
        warnings.warn(message + "skipped (--strict makes this an error)", stacklevel=3)
    if len({label for _, labels, _ in loaded for label in labels}) < 2:
        raise DataError(f"{spec}: fewer than 2 classes have readable images; {layout_fix}")
    channels = _channels(
        spec,
        [
            (a, f.relative_to(root).as_posix())
            for arrays, _, files in loaded
            for a, f in zip(arrays, files, strict=True)
        ],
    )
    sets = [
        ImageSet(
            _stack(arrays, channels, image_size),
            torch.tensor(labels, dtype=torch.int64),
            classes,
            tuple(p.relative_to(root).as_posix() for p in files),
        )
        for arrays, labels, files in loaded
    ]
    if not split_layout:
        full = sets[0]
        train_idx, test_idx = _stratified_split(
            full.labels, test_fraction, torch.Generator().manual_seed(seed)
        )
        sets = [full.subset(train_idx), full.subset(test_idx)]
    for split, s in zip(("train", "test"), sets, strict=True):
        if len(s) == 0:
            raise DataError(
                f"{spec}: the {split} split has no readable images; fix: add images"
                + (f" under {root / split}" if split_layout else " or change test_fraction")
            )
    return _make_splits(spec, sets[0], sets[1])


def read_listed_images(
    spec: str,
    root: Path,
    parts: Sequence[Sequence[tuple[str, int]]],
    classes: tuple[str, ...],
    size: int,
    strict: bool,
) -> list[ImageSet]:
    """Read the image files a dataset's list files name, one :class:`ImageSet` per part, as
    image folders are read (see the module: grey or colour, resized to size x size).

    Args:
        spec: the dataset spec, as messages show it.
        root: the folder the names are relative to (an absolute name is taken as it is).
        parts: per set, ``(name, label)`` pairs: the file's name as listed (kept as the set's
            ``paths``) and its label, an index into ``classes``.
        classes: the class names all sets share.
        size: the side the images are resized to.
        strict: raise on missing or unreadable files instead of skipping them.

    Returns:
        One set per part, in the order listed, without the skipped files; 3 channels when any
        image of any part is colour, else 1 (a mix is warned about once).

    Raises:
        DataError: missing or unreadable files with ``strict``.

    Corner cases: a file whose suffix is not in :data:`IMAGE_SUFFIXES` counts as unreadable;
    missing and unreadable files are skipped with one warning that counts both
    and names the first; a part may come back empty (its loader says what that means).
    """
    missing: list[str] = []
    unreadable: list[str] = []
    loaded: list[tuple[list[npt.NDArray[np.uint8]], list[int], list[str]]] = []
    for part in parts:
        arrays: list[npt.NDArray[np.uint8]] = []
        labels: list[int] = []
        names: list[str] = []
        for name, label in part:
            path = root / name
            readable = path.is_file() and _is_image_name(path.name)
            array = _read_image(path, size) if readable else None
            if array is None:
                (unreadable if path.is_file() else missing).append(name)
                continue
            arrays.append(array)
            labels.append(label)
            names.append(name)
        loaded.append((arrays, labels, names))
    if missing or unreadable:
        first = printable((missing or unreadable)[0])
        message = (
            f"{spec}: {len(missing)} missing and {len(unreadable)} unreadable image file(s) "
            f"under {printable(str(root))}, first {first}; "
        )
        if strict:
            raise DataError(message + "fix: restore or repair them, or load without --strict")
        warnings.warn(message + "skipped (--strict makes this an error)", stacklevel=4)
    channels = _channels(
        spec,
        [(a, n) for arrays, _, names in loaded for a, n in zip(arrays, names, strict=True)],
        stacklevel=5,
    )
    return [
        ImageSet(
            _stack(arrays, channels, size),
            torch.tensor(labels, dtype=torch.int64),
            classes,
            tuple(names),
        )
        for arrays, labels, names in loaded
    ]
