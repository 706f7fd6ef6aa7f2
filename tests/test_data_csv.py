"""Tests for tripletlab.data.csvtable: ``csv:FILE`` tables (names or integer labels, with or
without a split column, open-metric-learning's df.csv with query/gallery flags) and the
one-line error for each kind of bad input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_helpers import one_line_error
from PIL import Image

from tripletlab.data import DataError, ImageSet, load_dataset


def _table(root: Path, header: str, rows: list[str], images: bool = True) -> Path:
    """Write ``root/table.csv`` and, with ``images``, a tiny image for each row's path."""
    for i, row in enumerate(rows if images else []):
        path = root / row.split(",")[header.split(",").index("path")]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (9, 7), 10 * i).save(path)
    file = root / "table.csv"
    file.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return file


def _items(s: ImageSet) -> list[tuple[str, int]]:
    assert s.paths is not None
    return list(zip(s.paths, s.labels.tolist(), strict=True))


def test_names_sorted_and_the_split_column(tmp_path: Path) -> None:
    rows = [
        "imgs/d1.png,dog,train",
        "imgs/c1.png,cat,train",
        "imgs/d2.png,dog,test",
        "imgs/b1.png,bird,test",
        "imgs/c2.png,cat,test",
    ]
    splits = load_dataset(f"csv:{_table(tmp_path, 'path,label,split', rows)}", image_size=6)
    assert splits.train.classes == ("bird", "cat", "dog")
    assert _items(splits.train) == [("imgs/d1.png", 2), ("imgs/c1.png", 1)]
    assert _items(splits.test) == [("imgs/d2.png", 2), ("imgs/b1.png", 0), ("imgs/c2.png", 1)]
    assert splits.gallery is None and splits.train.images.shape == (2, 1, 6, 6)


def test_integer_labels_sorted_by_value_and_extra_columns_ignored(tmp_path: Path) -> None:
    rows = ["a.png,10,x,train", "b.png,2,y,train", "c.png,10,z,test", "d.png,07,w,test"]
    file = _table(tmp_path, "path,label,note,split", rows)
    splits = load_dataset(f"csv:{file}", image_size=6)
    assert splits.train.classes == ("2", "7", "10")
    assert _items(splits.train) == [("a.png", 2), ("b.png", 0)]
    assert _items(splits.test) == [("c.png", 2), ("d.png", 1)]


def test_without_split_column_the_seeded_stratified_split(tmp_path: Path) -> None:
    rows = [f"{c}{i}.png,{c}" for c in "abc" for i in range(4)]
    file = _table(tmp_path, "path,label", rows)
    one = load_dataset(f"csv:{file}", image_size=6, test_fraction=0.25, seed=3)
    two = load_dataset(f"csv:{file}", image_size=6, test_fraction=0.25, seed=3)
    assert one.test.paths == two.test.paths
    assert torch.bincount(one.test.labels).tolist() == [1, 1, 1]  # round(4 * 0.25) per class
    assert one.train.paths is not None and one.test.paths is not None
    assert sorted(one.train.paths + one.test.paths) == sorted(r.split(",")[0] for r in rows)


def test_oml_df_csv_every_validation_row_query_and_gallery(tmp_path: Path) -> None:
    header = "label,path,split,is_query,is_gallery"
    rows = [
        "0,i/0.jpg,train,,",
        "0,i/1.jpg,train,,",
        "1,i/2.jpg,train,,",
        "2,i/3.jpg,validation,True,True",
        "3,i/4.jpg,validation,True,True",
    ]
    splits = load_dataset(f"csv:{_table(tmp_path, header, rows)}", image_size=6)
    assert splits.gallery is None  # the test set is searched against itself
    assert _items(splits.test) == [("i/3.jpg", 2), ("i/4.jpg", 3)]
    assert _items(splits.train) == [("i/0.jpg", 0), ("i/1.jpg", 0), ("i/2.jpg", 1)]


def test_oml_df_csv_query_and_gallery(tmp_path: Path) -> None:
    header = "label,path,split,is_query,is_gallery"
    rows = [
        "0,i/0.jpg,train,False,False",
        "1,i/1.jpg,train,False,False",
        "2,i/2.jpg,validation,True,False",
        "2,i/3.jpg,validation,False,True",
        "3,i/4.jpg,validation,1,1",
        "3,i/5.jpg,validation,0,1",
    ]
    splits = load_dataset(f"csv:{_table(tmp_path, header, rows)}", image_size=6)
    assert _items(splits.test) == [("i/2.jpg", 2), ("i/4.jpg", 3)]
    assert splits.gallery is not None
    assert _items(splits.gallery) == [("i/3.jpg", 2), ("i/4.jpg", 3), ("i/5.jpg", 3)]


@pytest.mark.parametrize(
    ("header", "rows", "expected"),
    [
        ("file,split", ["a.png,train"], "has no column path, label (header: file,split)"),
        ("path,class", ["a.png,1"], "has no column label"),
        ("path,label,split", ["a.png,1,train", "b.png,1,dev"], "line 3: unknown split 'dev'"),
        ("path,label,split", ["a.png,1,train", "a.png,1,test"], "lines 2 and 3 both name a.png"),
        ("path,label", ["a.png,3.0", "b.png,1"], "label '3.0' is neither an integer nor a name"),
        ("path,label", ["a.png,", "b.png,1"], "line 2: label '' is neither an integer nor"),
        (
            "path,label",
            ["a.png,1", "b.png,cat"],
            "mixes integer labels (line 2) and names (line 3)",
        ),
        ("path,label", ["a.png,1,extra"], "line 2 has 3 field(s), the header 2"),
        ("path,label,split,is_query", ["a.png,1,test,1"], "is_query without is_gallery"),
        (
            "path,label,split,is_query,is_gallery",
            ["a.png,1,test,maybe,1"],
            "is_query 'maybe' is not a boolean",
        ),
        ("path,label", [], "has a header but no rows"),
    ],
)
def test_bad_tables_one_line_each(
    tmp_path: Path, header: str, rows: list[str], expected: str
) -> None:
    file = _table(tmp_path, header, rows, images=False)
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{file}")
    assert expected in one_line_error(e)


def test_missing_images_counted_and_skipped_or_strict(tmp_path: Path) -> None:
    rows = ["a.png,x,train", "b.png,y,train", "c.png,x,test", "d.png,y,test"]
    file = _table(tmp_path, "path,label,split", rows)
    (tmp_path / "b.png").unlink()
    (tmp_path / "d.png").unlink()
    with pytest.warns(UserWarning, match="2 missing and 0 unreadable image file.*first b.png"):
        splits = load_dataset(f"csv:{file}", image_size=6)
    assert splits.train.paths == ("a.png",) and splits.test.paths == ("c.png",)
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{file}", strict=True)
    assert "2 missing" in one_line_error(e)


def test_no_file_and_empty_split(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{tmp_path / 'none.csv'}")
    assert "no file at" in one_line_error(e) and "path,label[,split]" in one_line_error(e)
    file = _table(tmp_path, "path,label,split", ["a.png,x,train", "b.png,y,train"])
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{file}")
    assert "the test split has no readable images" in one_line_error(e)
