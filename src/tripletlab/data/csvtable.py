"""Tables of image files, ``csv:FILE``: a header row, then one row per image with the columns
``path`` and ``label`` and optionally ``split``; open-metric-learning's ``df.csv`` (columns
``label, path, split, is_query, is_gallery``, split ``train``/``validation``) reads as it is.

- ``path``: the image file, relative to the table's folder (or absolute); read as image folders'
  files are (:func:`~tripletlab.data.imagefolder.read_listed_images`); kept as the set's
  ``paths`` as written.
- ``label``: integers (``0``, ``17``; classes sorted by value, named by it: ``"0"``, ``"17"``)
  or names (``cat``; classes sorted by name, as image folders' class folders). Labels become
  0-based contiguous ids indexing ``classes``, whatever the row order.
- ``split``: ``train``, or ``test`` / ``validation`` (the same thing). Without the column, the
  seeded stratified split of :func:`~tripletlab.data.load_dataset` (``test_fraction``,
  ``seed``).
- ``is_query``, ``is_gallery`` (both or neither, with ``split``): for test rows, ``True`` /
  ``False`` (also ``1``/``0``, ``yes``/``no``, any case; train rows may leave them empty). When
  some test row is not both, the test set holds the queries and
  :attr:`~tripletlab.data.Splits.gallery` the gallery rows (a row both query and gallery is in
  both, under the same path); when every test row is both, there is no gallery (the test set
  is searched against itself, as for any other dataset).

Other columns are ignored; blank lines are skipped; the file is UTF-8 (a byte-order mark is
allowed). Bad input is one :class:`~tripletlab.data.DataError` naming the line: missing
columns (named), a row with the wrong number of fields, an empty path, a path named twice,
an unknown split, a label that is neither an integer nor a name (empty, or a number such as
``3.0`` that pandas writes for integers next to missing values), integer and name labels mixed,
a flag that is not a boolean. Image files that are missing or unreadable are counted and
skipped with one warning (an error with ``strict``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from tripletlab.checks import printable
from tripletlab.data.errors import DataError
from tripletlab.data.imagecache import CacheSettings
from tripletlab.data.imagefolder import read_listed_images
from tripletlab.data.sets import Splits, _make_splits, _stratified_split

#: The split column's values and the set each one goes to.
CSV_SPLITS: dict[str, str] = {"train": "train", "test": "test", "validation": "test"}
_TRUE = frozenset({"true", "1", "1.0", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "0.0", "no", "n", "f"})
_LAYOUT = "a table with a header row path,label[,split], paths relative to its folder"


class _Table:
    """The rows of a csv table, checked: names, label texts, split and query/gallery flags."""

    def __init__(self, spec: str, file: Path) -> None:
        self.spec, self.file = spec, file
        self.where = spec  # csv:FILE names the file
        try:
            with file.open(encoding="utf-8-sig", newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(
                f"{self.where}: cannot read it as csv ({e}); fix: pass {_LAYOUT}"
            ) from None
        rows_numbered = [(n, r) for n, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
        if not rows_numbered:
            raise DataError(f"{self.where} is empty; fix: write {_LAYOUT}")
        _, header = rows_numbered[0]
        self.header = [h.strip() for h in header]
        missing = [c for c in ("path", "label") if c not in self.header]
        if missing:
            raise DataError(
                f"{self.where} has no column {', '.join(missing)} (header: "
                f"{printable(','.join(self.header))}); fix: write {_LAYOUT}"
            )
        flags = [c for c in ("is_query", "is_gallery") if c in self.header]
        if flags and (len(flags) == 1 or "split" not in self.header):
            other = {"is_query": "is_gallery", "is_gallery": "is_query"}[flags[0]]
            need = other if len(flags) == 1 else "a split column"
            raise DataError(
                f"{self.where} has {', '.join(flags)} without {need}; fix: add the column or "
                "remove the query/gallery columns"
            )
        self.has_split, self.has_flags = "split" in self.header, bool(flags)
        self.lines: list[int] = []
        self.names: list[str] = []
        self.labels: list[str] = []
        self.splits: list[str] = []  # "train" or "test"; empty without a split column
        self.query: list[bool] = []
        self.gallery: list[bool] = []
        first_line: dict[str, int] = {}
        for number, row in rows_numbered[1:]:
            if len(row) != len(self.header):
                raise DataError(
                    f"{self.where} line {number} has {len(row)} field(s), the header "
                    f"{len(self.header)}; fix: one field per column on every line"
                )
            cells = {h: c.strip() for h, c in zip(self.header, row, strict=True)}
            name = cells["path"]
            if not name:
                raise DataError(
                    f"{self.where} line {number} has an empty path; fix: name the image"
                )
            if name in first_line:
                raise DataError(
                    f"{self.where} lines {first_line[name]} and {number} both name "
                    f"{printable(name)}; fix: remove the duplicated row"
                )
            first_line[name] = number
            self.lines.append(number)
            self.names.append(name)
            self.labels.append(cells["label"])
            if self.has_split:
                self.splits.append(self._split(number, cells["split"]))
            if self.has_flags:
                test = self.splits[-1] == "test"
                self.query.append(test and self._flag(number, "is_query", cells["is_query"]))
                self.gallery.append(test and self._flag(number, "is_gallery", cells["is_gallery"]))
                if test and not (self.query[-1] or self.gallery[-1]):
                    raise DataError(
                        f"{self.where} line {number} is a test row neither query nor gallery; "
                        "fix: set is_query or is_gallery"
                    )
        if not self.names:
            raise DataError(f"{self.where} has a header but no rows; fix: add {_LAYOUT}")

    def _split(self, number: int, value: str) -> str:
        split = CSV_SPLITS.get(value.lower())
        if split is None:
            raise DataError(
                f"{self.where} line {number}: unknown split {printable(value)!r}; fix: use "
                f"{', '.join(CSV_SPLITS)}"
            )
        return split

    def _flag(self, number: int, column: str, value: str) -> bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise DataError(
            f"{self.where} line {number}: {column} {printable(value)!r} is not a boolean; fix: "
            "write True or False"
        )

    def classes(self) -> tuple[tuple[str, ...], list[int]]:
        """The class names and each row's label, an index into them."""
        kinds: dict[str, int] = {}  # "integer" / "name" -> first line of that kind
        values: list[int | str] = []
        for number, text in zip(self.lines, self.labels, strict=True):
            try:
                value: int | str = int(text)
                kind = "integer"
            except ValueError:
                if not text or _is_number(text):
                    raise DataError(
                        f"{self.where} line {number}: label {printable(text)!r} is neither an "
                        "integer nor a name; fix: write integers (3, not 3.0) or names"
                    ) from None
                value, kind = text, "name"
            kinds.setdefault(kind, number)
            values.append(value)
        if len(kinds) == 2:
            raise DataError(
                f"{self.where} mixes integer labels (line {kinds['integer']}) and names (line "
                f"{kinds['name']}); fix: use one kind of label"
            )
        ordered = sorted(set(values), key=lambda v: (0, v, "") if isinstance(v, int) else (1, 0, v))
        index = {v: i for i, v in enumerate(ordered)}
        return tuple(str(v) for v in ordered), [index[v] for v in values]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(
    spec: str,
    path_str: str,
    image_size: int,
    strict: bool,
    test_fraction: float,
    seed: int,
    cache: CacheSettings,
) -> Splits:
    file = Path(path_str).expanduser()
    shown = printable(spec)
    if not path_str or not file.is_file():
        raise DataError(
            f"{shown}: no file at {printable(str(file))}; fix: pass csv:FILE, {_LAYOUT}"
        )
    table = _Table(shown, file)
    classes, labels = table.classes()
    items = list(zip(table.names, labels, strict=True))
    root = file.parent
    if not table.has_split:
        (full,) = read_listed_images(shown, root, [items], classes, image_size, strict, cache)
        train_idx, test_idx = _stratified_split(
            full.labels, test_fraction, torch.Generator().manual_seed(seed)
        )
        sets = {"train": full.subset(train_idx), "test": full.subset(test_idx)}
    else:
        picks = {
            "train": [s == "train" for s in table.splits],
            "test": [s == "test" for s in table.splits],
        }
        if table.has_flags and not all(
            q and g
            for q, g, s in zip(table.query, table.gallery, table.splits, strict=True)
            if s == "test"
        ):
            picks["test"], picks["gallery"] = table.query, table.gallery
        parts = [
            [it for it, keep in zip(items, pick, strict=True) if keep] for pick in picks.values()
        ]
        sets = dict(
            zip(
                picks,
                read_listed_images(shown, root, parts, classes, image_size, strict, cache),
                strict=True,
            )
        )
    for split, s in sets.items():
        if len(s) == 0:
            raise DataError(
                f"{shown}: the {split} split has no readable images; fix: add rows "
                + ("with that split" if table.has_split else "or change test_fraction")
            )
    return _make_splits(shown, sets["train"], sets["test"], sets.get("gallery"))
