"""Image folders, ``imagefolder:PATH``: one sub-folder of images per class (or ``PATH/train``
and ``PATH/test`` holding such sub-folders; images in the sub-folders of a class folder are
of that class), read into :class:`~tripletlab.data.Splits`; and
:func:`read_listed_images`, which reads the files a csv table or a benchmark's list names.

Each file is decoded as :mod:`~tripletlab.data.decode` says (EXIF orientation, 16 bits
scaled, alpha dropped, the central square resized to size x size, grey or colour), once, into
the decoded-image cache (:mod:`~tripletlab.data.imagecache`) that the sets read on demand.
Unreadable files are counted and skipped with one warning (an error with ``strict``).

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

import torch

from tripletlab.checks import printable
from tripletlab.data.decode import IMAGE_KINDS, is_image_name
from tripletlab.data.errors import DataError
from tripletlab.data.imagecache import CacheSettings, DiskImages, decode_files
from tripletlab.data.sets import Images, ImageSet, Splits, _make_splits, _stratified_split


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
            if not n.startswith(".") and is_image_name(n) and (here / n).is_file()
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


def _read_parts(
    spec: str,
    root: Path,
    parts: Sequence[Sequence[tuple[Path, int, str]]],
    size: int,
    cache: CacheSettings,
) -> tuple[list[tuple[Images, list[int], list[str]]], list[str]]:
    """Decode the files of each part (``(file, label, name shown)`` triples) through the
    cache of ``root``, all at once. Returns per part its readable images (3 or 1 channels, see
    :func:`_channels`), their labels and names; and the names of the unreadable files."""
    files = [f for part in parts for f, _, _ in part]
    images, status = decode_files(root, files, size, cache, what=f"{len(files):,} images")
    items = [item for part in parts for item in part]
    known = [(c, n) for c, (_, _, n) in zip(status, items, strict=True) if c is not None]
    channels = _channels(spec, known)
    images = _with_channels(images, channels)
    out: list[tuple[Images, list[int], list[str]]] = []
    unreadable: list[str] = []
    row = 0  # rows of `images` are the readable files, in order
    at = 0
    for part in parts:
        keep: list[int] = []
        labels: list[int] = []
        names: list[str] = []
        for _, label, name in part:
            if status[at] is None:
                unreadable.append(name)
            else:
                keep.append(row)
                labels.append(label)
                names.append(name)
                row += 1
            at += 1
        index = torch.tensor(keep, dtype=torch.int64)
        picked = images.take(index) if isinstance(images, DiskImages) else images[index]
        out.append((picked, labels, names))
    return out, unreadable


def _with_channels(images: Images, channels: int) -> Images:
    """Rows decoded with 3 channels as ``channels`` (1: the first, equal to the others in a
    grey image)."""
    if isinstance(images, DiskImages):
        return images.with_channels(channels)
    return images if channels == 3 else images[:, :1].contiguous()


def _channels(spec: str, images: list[tuple[bool, str]], stacklevel: int = 5) -> int:
    """3 when any image is colour (see :mod:`~tripletlab.data.decode`), else 1; one warning
    when the set mixes colour and grey images, counting both and naming the first file of
    the fewer kind (``images`` pairs each image's colour flag with the name shown)."""
    colour = [name for is_colour, name in images if is_colour]
    grey = [name for is_colour, name in images if not is_colour]
    if colour and grey:
        counts = f"{spec}: {len(colour)} colour and {len(grey)} grey images"
        if len(grey) < len(colour):
            message = (
                f"{counts} (first grey one: {printable(grey[0])}); all are read with 3 "
                "channels, each grey image's one channel copied to all 3 (check that they belong)"
            )
        else:
            message = (
                f"{counts} (first colour one: {printable(colour[0])}); all are read with 3 "
                "channels, since an image is colour when its channels differ and any colour "
                "image makes the set colour (convert the colour ones to grey for 1 channel)"
            )
        warnings.warn(message, stacklevel=stacklevel)
    return 3 if colour else 1


def _load_imagefolder(
    spec: str,
    path_str: str,
    image_size: int,
    strict: bool,
    test_fraction: float,
    seed: int,
    cache: CacheSettings,
) -> Splits:
    root = Path(path_str).expanduser()
    if not path_str:
        raise DataError(
            f"{printable(spec)}: no folder given; fix: pass imagefolder:PATH with one "
            "sub-folder of images per class"
        )
    if not root.is_dir():
        raise DataError(
            f"{printable(spec)}: {printable(str(root))} is not a folder; fix: pass "
            "imagefolder:PATH with one sub-folder of images per class"
        )
    spec = printable(spec)  # as messages show it
    layout_fix = f"fix: add sub-folders of {IMAGE_KINDS} images, one per class (at least 2)"
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
    parts = [
        [
            (path, classes.index(cls), path.relative_to(root).as_posix())
            for cls, files in folder.items()
            for path in files
        ]
        for folder in folders
    ]
    loaded, unreadable = _read_parts(spec, root, parts, image_size, cache)
    if unreadable:
        first = printable(unreadable[0])
        message = f"{spec}: {len(unreadable)} unreadable image file(s), first {first}; "
        if strict:
            raise DataError(message + "fix: delete or repair them, or train without --strict")
        warnings.warn(message + "skipped (--strict makes this an error)", stacklevel=3)
    if len({label for _, labels, _ in loaded for label in labels}) < 2:
        raise DataError(f"{spec}: fewer than 2 classes have readable images; {layout_fix}")
    sets = [
        ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes, tuple(names))
        for images, labels, names in loaded
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
    cache: CacheSettings,
) -> list[ImageSet]:
    """Read the image files a dataset's list files name, one :class:`ImageSet` per part, as
    image folders are read (see :mod:`~tripletlab.data.decode`: grey or colour, the central
    square at size x size), through the decoded-image cache of ``root``.

    Args:
        spec: the dataset spec, as messages show it.
        root: the folder the names are relative to (an absolute name is taken as it is).
        parts: per set, ``(name, label)`` pairs: the file's name as listed (kept as the set's
            ``paths``) and its label, an index into ``classes``.
        classes: the class names all sets share.
        size: the side the images are resized to.
        strict: raise on missing or unreadable files instead of skipping them.
        cache: the cache folder, decoding workers and progress.

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
    present: list[list[tuple[Path, int, str]]] = []
    for part in parts:
        kept: list[tuple[Path, int, str]] = []
        for name, label in part:
            path = root / name
            if not path.is_file():
                missing.append(name)
            elif not is_image_name(path.name):
                unreadable.append(name)
            else:
                kept.append((path, label, name))
        present.append(kept)
    loaded, undecoded = _read_parts(spec, root, present, size, cache)
    unreadable += undecoded
    if missing or unreadable:
        first = printable((missing or unreadable)[0])
        message = (
            f"{spec}: {len(missing)} missing and {len(unreadable)} unreadable image file(s) "
            f"under {printable(str(root))}, first {first}; "
        )
        if strict:
            raise DataError(message + "fix: restore or repair them, or load without --strict")
        warnings.warn(message + "skipped (--strict makes this an error)", stacklevel=4)
    return [
        ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes, tuple(names))
        for images, labels, names in loaded
    ]
