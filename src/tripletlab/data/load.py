""":func:`load_dataset`: the dataset names, the ``KIND:PATH`` forms (image folders, csv tables,
the retrieval benchmarks) and the loader each one goes to; :func:`absolute_dataset`: a spec
that names the same data from any folder; :func:`default_hflip`: whether random horizontal
flips suit a dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

from tripletlab.data.benchmarks import LOADERS
from tripletlab.data.csvtable import _load_csv
from tripletlab.data.digits import _load_digits
from tripletlab.data.errors import DataError
from tripletlab.data.idx_datasets import _load_idx_dataset
from tripletlab.data.imagecache import CacheSettings, default_image_cache
from tripletlab.data.imagefolder import _load_imagefolder
from tripletlab.data.sets import Splits

DatasetName = Literal["fashion-mnist", "mnist", "digits"]
DATASETS: tuple[str, ...] = get_args(DatasetName)  # plus the PATH_FORMS
IMAGEFOLDER_PREFIX = "imagefolder:"
CSV_PREFIX = "csv:"
#: The specs that name a file or folder: ``imagefolder:PATH``, ``csv:FILE`` and the benchmarks.
PATH_FORMS: tuple[str, ...] = (
    "imagefolder:PATH",
    "csv:FILE",
    *(f"{name}:PATH" for name in LOADERS),
)
#: Every form of a dataset spec: the named sets, then the PATH_FORMS.
DATASET_FORMS: tuple[str, ...] = (*DATASETS, *PATH_FORMS)
_PATH_PREFIXES: tuple[str, ...] = tuple(form.split(":")[0] + ":" for form in PATH_FORMS)


def absolute_dataset(spec: str) -> str:
    """``spec`` naming the same data from any working folder: a ``KIND:PATH`` form (see
    :data:`PATH_FORMS`) with PATH made absolute (``~`` expanded, joined to the current
    folder, ``..`` folded, links kept as named); the other specs (and an empty PATH) as they are.

    A run stores its dataset this way, so ``evaluate``, ``embed``, ``plot`` and ``search``
    find an image folder from wherever they are run.

    >>> absolute_dataset("digits")
    'digits'
    >>> absolute_dataset("imagefolder:/data/photos/../faces")
    'imagefolder:/data/faces'
    >>> absolute_dataset("cub200:/data/CUB_200_2011/")
    'cub200:/data/CUB_200_2011'
    """
    spec = spec.strip()
    for prefix in _PATH_PREFIXES:
        if spec.startswith(prefix) and spec != prefix:
            return prefix + os.path.abspath(os.path.expanduser(spec[len(prefix) :]))
    return spec


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    download: bool = True,
    image_size: int | None = None,
    strict: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    cache: CacheSettings | None = None,
) -> Splits:
    """Load a dataset as uint8 images, split into train and test: the IDX sets and digits
    in memory, image folders, csv tables and the benchmarks as rows of the decoded-image cache
    read on demand (decoded once, by several processes).

    Args:
        spec: ``"fashion-mnist"``, ``"mnist"``, ``"digits"``, ``"imagefolder:PATH"``,
            ``"csv:FILE"`` (:mod:`~tripletlab.data.csvtable`) or a retrieval benchmark read from
            its extracted archive, ``"cub200:PATH"``, ``"cars196:PATH"``, ``"sop:PATH"``,
            ``"inshop:PATH"`` (:mod:`~tripletlab.data.benchmarks`).
        data_dir: first folder searched for the IDX files (see :func:`locate_files`); only
            ``fashion-mnist`` and ``mnist`` use it.
        download: whether missing IDX files may be fetched from the official mirrors.
        image_size: side of the square images (default: :func:`default_image_size`). IDX
            datasets are resized (bilinear, antialiased) only when it is not 28; image
            folders, csv tables and the benchmarks are always resized to it; ``digits``
            ignores it and stays 8x8.
        strict: for image folders, csv tables and the benchmarks, raise on missing or
            unreadable image files instead of skipping them with one warning that counts them.
        seed: seeds the stratified splits of ``digits``, of image folders without
            ``train/`` and ``test/`` sub-folders and of csv tables without a split column.
        test_fraction: the share of each class put in test by those splits: a class of n >= 2
            items gives ``clamp(round(n * test_fraction), 1, n - 1)``; a single item stays in
            train.
        cache: for image folders, csv tables and the benchmarks, where the decoded images
            are cached (:mod:`~tripletlab.data.imagecache`), by how many processes they are
            decoded and the progress callback; default: :func:`default_image_cache` with
            :func:`default_workers` processes.

    Returns:
        Splits with (N, C, H, W) uint8 images and int64 labels. ``fashion-mnist``/``mnist``:
        the official 60,000/10,000 split, 1 x 28 x 28, classes "T-shirt/top".."Ankle boot" or
        "0".."9". ``digits``: 1 x 8 x 8 (pixels x * 255 / 16, rounded), classes "0".."9".
        ``imagefolder:PATH``: ``PATH/train`` and ``PATH/test`` when both exist (classes are the
        union of their sub-folders), else PATH's sub-folders split by ``test_fraction``; class
        names are the folder names, sorted; 3 channels when any image is colour (its RGB
        channels differ), else 1 (grey images are repeated; a mix is warned about); decoded
        as :mod:`tripletlab.data.decode` says (EXIF orientation, 16 bits scaled, alpha
        dropped, the central square resized: aspect ratio kept); each
        set's ``paths`` name the image files, relative to PATH (``train/cat/1.png`` or
        ``cat/1.png``). ``csv:FILE`` and the benchmarks are read the same way, with the splits
        their modules describe: the benchmarks' class-disjoint train/test (CUB-200-2011 classes
        1-100 / 101-200, Cars196 1-98 / 99-196, Stanford Online Products its Ebay_train.txt /
        Ebay_test.txt), In-Shop train / query (``test``) / gallery (``Splits.gallery``).

    Raises:
        DataError: unknown dataset name (listing the valid ones), bad arguments, IDX files
            missing, corrupt or with a wrong checksum, an image folder with fewer than 2 classes,
            an empty split, missing or unreadable images with ``strict``, a missing benchmark
            folder or list file (saying where to get the archive and the layout expected), bad
            rows of a list file or csv table.
    """
    spec = spec.strip()
    cache = cache or CacheSettings(default_image_cache())
    if image_size is None:
        image_size = default_image_size(spec)
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if spec.startswith(IMAGEFOLDER_PREFIX):
        path = spec[len(IMAGEFOLDER_PREFIX) :]
        return _load_imagefolder(spec, path, image_size, strict, test_fraction, seed, cache)
    if spec.startswith(CSV_PREFIX):
        path = spec[len(CSV_PREFIX) :]
        return _load_csv(spec, path, image_size, strict, test_fraction, seed, cache)
    kind, colon, path = spec.partition(":")
    for name, load in LOADERS.items():
        if colon and name == kind:
            return load(spec, path, image_size, strict, cache)
    loaders: dict[DatasetName, Callable[[], Splits]] = {
        "fashion-mnist": lambda: _load_idx_dataset("fashion-mnist", data_dir, download, image_size),
        "mnist": lambda: _load_idx_dataset("mnist", data_dir, download, image_size),
        "digits": lambda: _load_digits(test_fraction, seed),
    }
    for name, loader in loaders.items():
        if name == spec:
            return loader()
    raise DataError(f"unknown dataset {spec!r}; valid: {', '.join((*DATASETS, *PATH_FORMS))}")


#: The side images of folders, csv tables and the benchmarks are resized to by default:
#: measured on colour icons of 1,223 classes (docs/results.md), unseen precision@1 0.356 and
#: 0.320 at 48 px (two seeds) against 0.307 and 0.292 at 28, for about 2.4x the time of a
#: step; a network trained from scratch on the CPU, so far smaller than ImageNet's 224.
FOLDER_IMAGE_SIZE = 48

# The side of the IDX sets and digits as distributed (they are not resized by default).
_NATIVE_SIZE: dict[DatasetName, int] = {"fashion-mnist": 28, "mnist": 28, "digits": 8}


def default_image_size(spec: str) -> int:
    """The side a dataset's images get when none is asked for: 28 for ``fashion-mnist`` and
    ``mnist`` and 8 for ``digits`` (their own), :data:`FOLDER_IMAGE_SIZE` for image folders,
    csv tables and the benchmarks.

    Example:
        >>> default_image_size("mnist"), default_image_size("imagefolder:photos")
        (28, 48)
    """
    for key, value in _NATIVE_SIZE.items():
        if key == spec.strip():
            return value
    return FOLDER_IMAGE_SIZE


# Whether a horizontal flip keeps an image in its class: not for digits.
_HFLIP: dict[DatasetName, bool] = {"fashion-mnist": True, "mnist": False, "digits": False}


def default_hflip(name: str) -> bool:
    """Whether random horizontal flips suit a dataset: False for mnist and digits (a flipped
    digit is not that digit), True for fashion-mnist and image folders."""
    for key, value in _HFLIP.items():
        if key == name:
            return value
    return True
