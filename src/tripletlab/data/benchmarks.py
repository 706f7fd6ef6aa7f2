"""The many-class retrieval benchmarks, read from their archives as their owners distribute them
(extracted into a folder the user names): ``cub200:PATH``, ``cars196:PATH``, ``sop:PATH`` and
``inshop:PATH``, with the class-disjoint splits of the deep metric learning protocol (Oh Song,
Xiang, Jegelka and Savarese, "Deep Metric Learning via Lifted Structured Feature Embedding",
CVPR 2016, arXiv:1511.06452):

- ``cub200``: CUB-200-2011 (Wah, Branson, Welinder, Perona and Belongie, 2011): ``images.txt``
  (image id, name under ``images/``), ``image_class_labels.txt`` (image id, class id) and
  ``classes.txt`` (class id, name); classes 1-100 train, 101-200 test (``train_test_split.txt``,
  the classification split, is not used). Class names as ``classes.txt`` writes them
  (``001.Black_footed_Albatross``).
- ``cars196``: Cars196 (Krause, Stark, Deng and Fei-Fei, "3D Object Representations for
  Fine-Grained Categorization", 2013): ``cars_annos.mat`` (its ``annotations`` struct array:
  ``relative_im_path``, ``class``; the bounding boxes and the ``test`` flag of the
  classification split are not used; its ``class_names``) and ``car_ims/``; classes 1-98 train,
  99-196 test.
- ``sop``: Stanford Online Products (Oh Song et al., 2016): ``Ebay_train.txt`` and
  ``Ebay_test.txt`` (a header, then ``image_id class_id super_class_id path``), their split
  (11,318 train and 11,316 test classes); class names are the class ids (``"1"``).
- ``inshop``: DeepFashion In-Shop Clothes Retrieval (Liu, Luo, Qiu, Wang and Tang, CVPR 2016):
  ``list_eval_partition.txt`` (a count, a header, then ``image_name item_id
  evaluation_status``) and ``img/``; ``train`` rows train, ``query`` rows are the test set and
  ``gallery`` rows :attr:`~tripletlab.data.Splits.gallery`; class names are the item ids. The
  list may also sit in ``Eval/`` and the images in ``Img/img/``, as in the distributed folder.

Class ids become 0-based contiguous labels in the order of the ids (numeric); every set holds
all the classes (``classes``), train and test each using their own. Each set's ``paths`` name
the image files relative to PATH. Images are read as image folders' are
(:func:`~tripletlab.data.imagefolder.read_listed_images`): resized to ``image_size``, grey or
colour, missing and unreadable files skipped with one warning (an error with ``strict``).

None of these has a direct licensed download link, so nothing is downloaded: a missing folder
or list file is one :class:`~tripletlab.data.DataError` saying where to get the archive and the
folder layout expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from tripletlab.checks import printable
from tripletlab.data.errors import DataError
from tripletlab.data.imagecache import CacheSettings
from tripletlab.data.imagefolder import read_listed_images
from tripletlab.data.sets import ImageSet, Splits, _make_splits


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark comes from and the folder it is read from.

    Attributes:
        name: the spec's prefix without the colon (``"cub200"``).
        source: where to get the archive, in words with the address.
        layout: the folder PATH must be, and what it holds.
    """

    name: str
    source: str
    layout: str


BENCHMARKS: dict[str, Benchmark] = {
    "cub200": Benchmark(
        "cub200",
        "CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/",
        "the extracted CUB_200_2011 folder (images.txt, image_class_labels.txt, classes.txt, "
        "images/)",
    ),
    "cars196": Benchmark(
        "cars196",
        "car_ims.tgz and cars_annos.mat from https://ai.stanford.edu/~jkrause/cars/"
        "car_dataset.html (or a mirror of them)",
        "a folder holding cars_annos.mat and car_ims/ (car_ims.tgz extracted there)",
    ),
    "sop": Benchmark(
        "sop",
        "Stanford_Online_Products.zip from https://cvgl.stanford.edu/projects/lifted_struct/ "
        "(a Google Drive link)",
        "the extracted Stanford_Online_Products folder (Ebay_train.txt, Ebay_test.txt, "
        "bicycle_final/ and the other class folders)",
    ),
    "inshop": Benchmark(
        "inshop",
        "the In-shop Clothes Retrieval Benchmark (Eval/list_eval_partition.txt, Img/img.zip) "
        "from https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html (a Google "
        "Drive link)",
        "a folder holding list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/ "
        "(or Img/img/: img.zip extracted)",
    ),
}


def _fix(bench: Benchmark) -> str:
    return f"fix: get {bench.source} and pass {bench.name}:PATH with PATH {bench.layout}"


def _root(spec: str, bench: Benchmark, path_str: str) -> Path:
    root = Path(path_str).expanduser()
    if not path_str or not root.is_dir():
        raise DataError(f"{printable(spec)}: {printable(str(root))} is not a folder; {_fix(bench)}")
    return root


def _list_file(spec: str, bench: Benchmark, root: Path, *names: str) -> Path:
    """The first of ``names`` (relative to ``root``) that is a file."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{printable(spec)}: no {names[0]} in {printable(str(root))}; {_fix(bench)}")


def _rows(
    spec: str, path: Path, columns: tuple[str, ...], skip: int
) -> list[tuple[int, list[str]]]:
    """The whitespace-separated rows of a list file after its first ``skip`` lines, each with
    its line number (1-based); blank lines are skipped.

    Raises:
        DataError: a row without exactly ``len(columns)`` fields, or an unreadable file.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{printable(spec)}: cannot read {printable(str(path))}: {e}") from None
    rows = []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(columns):
            raise DataError(
                f"{printable(spec)}: {printable(str(path))} line {number} has {len(fields)} "
                f"field(s), expected {len(columns)} ({' '.join(columns)}); fix: restore the "
                "file from the archive"
            )
        rows.append((number, fields))
    return rows


def _int(spec: str, path: Path, number: int, text: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(
            f"{printable(spec)}: {printable(str(path))} line {number}: {column} "
            f"{printable(text)!r} is not an integer; fix: restore the file from the archive"
        ) from None


def _finish(
    spec: str,
    root: Path,
    parts: dict[str, list[tuple[str, int]]],
    classes: tuple[str, ...],
    image_size: int,
    strict: bool,
    cache: CacheSettings,
) -> list[ImageSet]:
    """Read each part's images; raise if one comes back empty."""
    sets = read_listed_images(spec, root, list(parts.values()), classes, image_size, strict, cache)
    for split, s in zip(parts, sets, strict=True):
        if len(s) == 0:
            raise DataError(
                f"{printable(spec)}: the {split} split has no readable images under "
                f"{printable(str(root))}; fix: restore the images from the archive"
            )
    return sets


def _class_split(
    spec: str,
    root: Path,
    items: list[tuple[str, int]],
    ids: list[int],
    names: list[str],
    last_train_id: int,
    image_size: int,
    strict: bool,
    cache: CacheSettings,
) -> Splits:
    """Train on the items of class ids <= ``last_train_id``, test on the others; ``items`` are
    (name under root, class id), ``ids`` and ``names`` the classes (ids in order)."""
    label = {class_id: i for i, class_id in enumerate(ids)}
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for name, class_id in items:
        parts["train" if class_id <= last_train_id else "test"].append((name, label[class_id]))
    train, test = _finish(spec, root, parts, tuple(names), image_size, strict, cache)
    return _make_splits(printable(spec), train, test)


def _load_cub200(
    spec: str, path_str: str, image_size: int, strict: bool, cache: CacheSettings
) -> Splits:
    bench = BENCHMARKS["cub200"]
    root = _root(spec, bench, path_str)
    files = [
        _list_file(spec, bench, root, n)
        for n in ("images.txt", "image_class_labels.txt", "classes.txt")
    ]
    images = {
        _int(spec, files[0], n, f[0], "image_id"): f[1]
        for n, f in _rows(spec, files[0], ("image_id", "name"), 0)
    }
    labels = {
        _int(spec, files[1], n, f[0], "image_id"): _int(spec, files[1], n, f[1], "class_id")
        for n, f in _rows(spec, files[1], ("image_id", "class_id"), 0)
    }
    classes = sorted(
        (_int(spec, files[2], n, f[0], "class_id"), f[1])
        for n, f in _rows(spec, files[2], ("class_id", "name"), 0)
    )
    known = {class_id for class_id, _ in classes}
    items = []
    for image_id, name in sorted(images.items()):
        class_id = labels.get(image_id)
        if class_id is None or class_id not in known:
            what = "no class" if class_id is None else f"class {class_id}, not in classes.txt"
            raise DataError(
                f"{printable(spec)}: image {image_id} of images.txt has {what} in "
                f"image_class_labels.txt; fix: restore the files from the archive"
            )
        items.append(("images/" + name, class_id))
    return _class_split(
        spec,
        root,
        items,
        [c for c, _ in classes],
        [n for _, n in classes],
        100,
        image_size,
        strict,
        cache,
    )


def _scalar(value: object) -> Any:
    """The one element of a loadmat field, however nested (``array([[3]])`` -> 3)."""
    array = np.asarray(value)
    while array.dtype == object and array.size == 1:
        array = np.asarray(array.ravel()[0])
    if array.size != 1:
        raise ValueError(f"a field holds {array.size} values, expected 1")
    return array.ravel()[0]


def _load_cars196(
    spec: str, path_str: str, image_size: int, strict: bool, cache: CacheSettings
) -> Splits:
    bench = BENCHMARKS["cars196"]
    root = _root(spec, bench, path_str)
    mat_path = _list_file(spec, bench, root, "cars_annos.mat")
    shown = printable(str(mat_path))
    try:
        mat = scipy.io.loadmat(str(mat_path))
        annotations = np.asarray(mat["annotations"]).ravel()
        names = [str(_scalar(n)) for n in np.asarray(mat["class_names"]).ravel()]
        items = [
            (str(_scalar(a["relative_im_path"])), int(_scalar(a["class"]))) for a in annotations
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(
            f"{printable(spec)}: cannot read {shown} as the Cars196 annotations ({e}); "
            f"{_fix(bench)}"
        ) from None
    bad = [class_id for _, class_id in items if not 1 <= class_id <= len(names)]
    if bad:
        raise DataError(
            f"{printable(spec)}: {shown} has class {bad[0]} but {len(names)} class_names; "
            "fix: restore cars_annos.mat from the archive"
        )
    ids = list(range(1, len(names) + 1))
    return _class_split(spec, root, items, ids, names, 98, image_size, strict, cache)


def _load_sop(
    spec: str, path_str: str, image_size: int, strict: bool, cache: CacheSettings
) -> Splits:
    bench = BENCHMARKS["sop"]
    root = _root(spec, bench, path_str)
    columns = ("image_id", "class_id", "super_class_id", "path")
    parts: dict[str, list[tuple[str, int]]] = {}
    for split in ("train", "test"):
        file = _list_file(spec, bench, root, f"Ebay_{split}.txt")
        parts[split] = [
            (f[3], _int(spec, file, n, f[1], "class_id")) for n, f in _rows(spec, file, columns, 1)
        ]
    ids = sorted({class_id for part in parts.values() for _, class_id in part})
    label = {class_id: i for i, class_id in enumerate(ids)}
    indexed = {k: [(name, label[c]) for name, c in v] for k, v in parts.items()}
    train, test = _finish(spec, root, indexed, tuple(map(str, ids)), image_size, strict, cache)
    return _make_splits(printable(spec), train, test)


_INSHOP_STATUS = ("train", "query", "gallery")


def _load_inshop(
    spec: str, path_str: str, image_size: int, strict: bool, cache: CacheSettings
) -> Splits:
    bench = BENCHMARKS["inshop"]
    root = _root(spec, bench, path_str)
    file = _list_file(spec, bench, root, "list_eval_partition.txt", "Eval/list_eval_partition.txt")
    prefix = "Img/" if not (root / "img").is_dir() and (root / "Img" / "img").is_dir() else ""
    columns = ("image_name", "item_id", "evaluation_status")
    rows = _rows(spec, file, columns, 2)
    parts: dict[str, list[tuple[str, str]]] = {status: [] for status in _INSHOP_STATUS}
    for number, (name, item, status) in rows:
        if status not in parts:
            raise DataError(
                f"{printable(spec)}: {printable(str(file))} line {number}: evaluation_status "
                f"{printable(status)!r} is not one of {', '.join(_INSHOP_STATUS)}; fix: restore "
                "the file from the archive"
            )
        parts[status].append((prefix + name, item))
    items = sorted({item for part in parts.values() for _, item in part})
    label = {item: i for i, item in enumerate(items)}
    indexed = {k: [(name, label[item]) for name, item in v] for k, v in parts.items()}
    train, query, gallery = _finish(spec, root, indexed, tuple(items), image_size, strict, cache)
    return _make_splits(printable(spec), train, query, gallery)


#: The loader of each benchmark, called with (spec, PATH, image_size, strict, cache).
LOADERS: dict[str, Callable[[str, str, int, bool, CacheSettings], Splits]] = {
    "cub200": _load_cub200,
    "cars196": _load_cars196,
    "sop": _load_sop,
    "inshop": _load_inshop,
}
