"""Image folders, ``imagefolder:PATH``: one sub-folder of PNG/JPEG images per class (or
``PATH/train`` and ``PATH/test`` holding such sub-folders), read into
:class:`~tripletlab.data.Splits`; and :func:`read_image_file`, which reads one image file the
same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from tripletlab.data.errors import DataError
from tripletlab.data.sets import ImageSet, Splits, _make_splits, _stratified_split

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """{class name: its image files, sorted} for each visible sub-folder holding any PNG/JPEG
    file (searched recursively); other files and hidden entries are ignored."""
    out: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in _IMAGE_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if files:
            out[folder.name] = files
    return out


def _read_image(path: Path, size: int) -> npt.NDArray[np.uint8] | None:
    """A (size, size) grey or (size, size, 3) colour uint8 array, or None if unreadable.

    Alpha is dropped; the image is resized to size x size (aspect ratio not kept) with Pillow's
    bilinear filter after JPEG draft decoding at no less than the target size.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft(None, (size, size))
            bands = [b for b in img.getbands() if b != "A"]
            mode = "L" if len(bands) == 1 and bands[0] != "P" else "RGB"
            converted = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def read_image_file(path: Path, size: int, channels: int) -> Tensor:
    """One image file as an image folder's images are read: (channels, size, size) uint8.

    Colour images become grey (``channels=1``) with ITU-R 601 luma weights, as Pillow's
    ``convert("L")``; grey images are repeated to three channels (``channels=3``).

    Raises:
        DataError: no such file, or not an image Pillow can read.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if not Path(path).is_file():
        raise DataError(f"no image file at {path}; pass paths of PNG or JPEG files")
    array = _read_image(Path(path), size)
    if array is None:
        raise DataError(f"cannot read {path} as an image; pass PNG or JPEG files")
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


def _load_imagefolder(
    spec: str, path_str: str, image_size: int, strict: bool, test_fraction: float, seed: int
) -> Splits:
    root = Path(path_str).expanduser()
    if not path_str or not root.is_dir():
        raise DataError(
            f"{spec}: {root} is not a folder; fix: pass imagefolder:PATH with one sub-folder of "
            "PNG/JPEG images per class"
        )
    layout_fix = "fix: add sub-folders of PNG/JPEG images, one per class (at least 2)"
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    roots = [root / "train", root / "test"] if split_layout else [root]
    folders = [_class_folders(r) for r in roots]
    classes = tuple(sorted(set().union(*folders)))
    if len(classes) < 2:
        where = f"{root}/train and {root}/test" if split_layout else str(root)
        raise DataError(
            f"{spec}: found {len(classes)} class folder(s) with images in {where}, need at "
            f"least 2; {layout_fix}"
        )
    unreadable: list[Path] = []
    loaded = [_read_folder(f, classes, image_size, unreadable) for f in folders]
    if unreadable:
        message = f"{spec}: {len(unreadable)} unreadable image file(s), first {unreadable[0]}; "
        if strict:
            raise DataError(message + "fix: delete or repair them, or train without --strict")
        warnings.warn(message + "skipped (--strict makes this an error)", stacklevel=3)
    if len({label for _, labels, _ in loaded for label in labels}) < 2:
        raise DataError(f"{spec}: fewer than 2 classes have readable images; {layout_fix}")
    everything = [a for arrays, _, _ in loaded for a in arrays]
    channels = 1 if all(a.ndim == 2 for a in everything) else 3
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
