"""Tests for tripletlab.data.benchmarks: tiny replicas of CUB-200-2011, Cars196, Stanford
Online Products and In-Shop, their list files written as the owners write them, and the exact
splits, labels and classes read from them; the errors for a missing folder or list file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from data_helpers import one_line_error
from PIL import Image

from tripletlab.data import DataError, Splits, absolute_dataset, load_dataset


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, 30)).save(path)


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _summary(splits: Splits) -> dict[str, list[tuple[str, int]]]:
    sets = {"train": splits.train, "test": splits.test}
    if splits.gallery is not None:
        sets["gallery"] = splits.gallery
    out = {}
    for name, s in sets.items():
        assert s.paths is not None
        out[name] = list(zip(s.paths, s.labels.tolist(), strict=True))
    return out


# ------------------------------------------------------------------------------ CUB-200-2011

CUB_CLASSES = {
    1: "001.Black_footed_Albatross",
    2: "002.Laysan_Albatross",
    101: "101.White_Pelican",
    102: "102.Western_Wood_Pewee",
}


def _cub(root: Path) -> Path:
    images, labels = [], []
    image_id = 0
    for class_id, name in CUB_CLASSES.items():
        for k in range(2):
            image_id += 1
            file = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            _image(root / "images" / file, 20 * image_id)
            images.append(f"{image_id} {file}")
            labels.append(f"{image_id} {class_id}")
    _lines(root / "images.txt", images)
    _lines(root / "image_class_labels.txt", labels)
    _lines(root / "classes.txt", [f"{i} {n}" for i, n in CUB_CLASSES.items()])
    _lines(root / "train_test_split.txt", [f"{i} {i % 2}" for i in range(1, image_id + 1)])
    return root


def test_cub200_classes_1_to_100_train_the_rest_test(tmp_path: Path) -> None:
    root = _cub(tmp_path / "CUB_200_2011")
    splits = load_dataset(f"cub200:{root}", image_size=8)
    assert splits.train.classes == tuple(CUB_CLASSES.values())
    assert splits.gallery is None
    names = [
        f"images/{n}/{n.split('.')[1]}_{k:04d}_{2 * c + k + 1}.jpg"
        for c, n in enumerate(CUB_CLASSES.values())
        for k in range(2)
    ]
    assert _summary(splits) == {
        "train": [(names[0], 0), (names[1], 0), (names[2], 1), (names[3], 1)],
        "test": [(names[4], 2), (names[5], 2), (names[6], 3), (names[7], 3)],
    }
    assert splits.train.images.shape == (4, 3, 8, 8)
    assert splits.name == f"cub200:{root}"


def test_cub200_missing_folder_and_list_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(f"cub200:{tmp_path / 'nowhere'}")
    message = one_line_error(e)
    assert "is not a folder" in message and "cub_200_2011" in message
    assert "images.txt, image_class_labels.txt, classes.txt, images/" in message
    root = _cub(tmp_path / "CUB_200_2011")
    (root / "image_class_labels.txt").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(f"cub200:{root}")
    assert f"no image_class_labels.txt in {root}" in one_line_error(e)


def test_cub200_missing_image_warns_or_fails_with_strict(tmp_path: Path) -> None:
    root = _cub(tmp_path / "CUB_200_2011")
    victim = next((root / "images" / CUB_CLASSES[101]).iterdir())
    victim.unlink()
    with pytest.warns(UserWarning, match="1 missing and 0 unreadable image file"):
        splits = load_dataset(f"cub200:{root}", image_size=8)
    assert (len(splits.train), len(splits.test)) == (4, 3)
    with pytest.raises(DataError) as e:
        load_dataset(f"cub200:{root}", image_size=8, strict=True)
    assert victim.name in one_line_error(e)


def test_cub200_bad_list_rows(tmp_path: Path) -> None:
    root = _cub(tmp_path / "CUB_200_2011")
    _lines(root / "image_class_labels.txt", ["1 1", "2 x"])
    with pytest.raises(DataError) as e:
        load_dataset(f"cub200:{root}")
    assert "image_class_labels.txt line 2: class_id 'x' is not an integer" in one_line_error(e)


# ---------------------------------------------------------------------------------- Cars196


def _cars(root: Path, classes: list[int], tests: list[int]) -> list[str]:
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(classes)), dtype=[(f, "O") for f in fields])
    names = []
    for i, (class_id, test) in enumerate(zip(classes, tests, strict=True)):
        name = f"car_ims/{i + 1:06d}.jpg"
        _image(root / name, 30 * i)
        names.append(name)
        annotations[0, i] = (name, 1, 2, 11, 9, np.uint8(class_id), np.uint8(test))
    class_names = np.empty((1, 196), dtype=object)
    for k in range(196):
        class_names[0, k] = f"Maker Model {k + 1}"
    scipy.io.savemat(
        root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names}
    )
    return names


def test_cars196_classes_1_to_98_train_the_rest_test(tmp_path: Path) -> None:
    root = tmp_path / "cars"
    names = _cars(root, [1, 98, 99, 1, 196, 2], [0, 1, 0, 1, 1, 0])  # `test` is not the split
    splits = load_dataset(f"cars196:{root}", image_size=8)
    assert splits.train.classes == tuple(f"Maker Model {k}" for k in range(1, 197))
    assert _summary(splits) == {
        "train": [(names[0], 0), (names[1], 97), (names[3], 0), (names[5], 1)],
        "test": [(names[2], 98), (names[4], 195)],
    }


def test_cars196_missing_mat_and_bad_mat(tmp_path: Path) -> None:
    (tmp_path / "cars").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(f"cars196:{tmp_path / 'cars'}")
    message = one_line_error(e)
    assert "no cars_annos.mat in" in message and "car_ims/" in message
    scipy.io.savemat(tmp_path / "cars" / "cars_annos.mat", {"other": np.zeros(3)})
    with pytest.raises(DataError) as e:
        load_dataset(f"cars196:{tmp_path / 'cars'}")
    assert "cannot read" in one_line_error(e)


# ------------------------------------------------------------------- Stanford Online Products


def _sop(root: Path) -> None:
    header = "image_id class_id super_class_id path"
    rows = {
        "train": [
            (1, 1, "bicycle_final"),
            (2, 1, "bicycle_final"),
            (3, 2, "bicycle_final"),
            (4, 2, "bicycle_final"),
        ],
        "test": [(5, 3, "cabinet_final"), (6, 3, "cabinet_final"), (7, 10, "cabinet_final")],
    }
    for split, items in rows.items():
        lines = [header]
        for image_id, class_id, folder in items:
            name = f"{folder}/{class_id}_{image_id}.JPG"
            _image(root / name, 25 * image_id)
            lines.append(f"{image_id} {class_id} {1 if folder == 'bicycle_final' else 2} {name}")
        _lines(root / f"Ebay_{split}.txt", lines)


def test_sop_reads_its_train_and_test_files(tmp_path: Path) -> None:
    root = tmp_path / "Stanford_Online_Products"
    _sop(root)
    splits = load_dataset(f"sop:{root}", image_size=8)
    assert splits.train.classes == ("1", "2", "3", "10")  # class ids in numeric order
    assert _summary(splits) == {
        "train": [
            ("bicycle_final/1_1.JPG", 0),
            ("bicycle_final/1_2.JPG", 0),
            ("bicycle_final/2_3.JPG", 1),
            ("bicycle_final/2_4.JPG", 1),
        ],
        "test": [
            ("cabinet_final/3_5.JPG", 2),
            ("cabinet_final/3_6.JPG", 2),
            ("cabinet_final/10_7.JPG", 3),
        ],
    }


def test_sop_missing_list_file_and_short_row(tmp_path: Path) -> None:
    root = tmp_path / "Stanford_Online_Products"
    _sop(root)
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(f"sop:{root}")
    message = one_line_error(e)
    assert "no Ebay_test.txt in" in message and "cvgl.stanford.edu" in message
    _lines(root / "Ebay_test.txt", ["image_id class_id super_class_id path", "5 3 2"])
    with pytest.raises(DataError) as e:
        load_dataset(f"sop:{root}")
    assert "Ebay_test.txt line 2 has 3 field(s), expected 4" in one_line_error(e)


# ------------------------------------------------------------------------------------ In-Shop

INSHOP = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000001/01_1_front.jpg", "id_00000001", "train"),
    ("img/MEN/Denim/id_00000001/01_2_side.jpg", "id_00000001", "train"),
    ("img/WOMEN/Tees/id_00000080/01_1_front.jpg", "id_00000080", "query"),
    ("img/WOMEN/Tees/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
    ("img/WOMEN/Tees/id_00000080/01_3_back.jpg", "id_00000080", "gallery"),
    ("img/MEN/Pants/id_00000081/02_1_front.jpg", "id_00000081", "gallery"),
    ("img/MEN/Pants/id_00000081/02_2_side.jpg", "id_00000081", "query"),
]


def _inshop(list_file: Path, image_root: Path) -> None:
    lines = [str(len(INSHOP)), "image_name item_id evaluation_status"]
    for i, (name, item, status) in enumerate(INSHOP):
        _image(image_root / name, 20 * i)
        lines.append(f"{name:<60}{item:<14}{status}")
    _lines(list_file, lines)


def test_inshop_train_query_gallery(tmp_path: Path) -> None:
    root = tmp_path / "inshop"
    _inshop(root / "list_eval_partition.txt", root)
    splits = load_dataset(f"inshop:{root}", image_size=8)
    assert splits.train.classes == ("id_00000001", "id_00000002", "id_00000080", "id_00000081")
    n = [name for name, _, _ in INSHOP]
    assert _summary(splits) == {
        "train": [(n[0], 1), (n[1], 1), (n[2], 0), (n[3], 0)],
        "test": [(n[4], 2), (n[8], 3)],
        "gallery": [(n[5], 2), (n[6], 2), (n[7], 3)],
    }
    assert splits.gallery is not None and splits.gallery.images.shape == (3, 3, 8, 8)


def test_inshop_as_distributed_eval_and_img_folders(tmp_path: Path) -> None:
    root = tmp_path / "In-shop Clothes Retrieval Benchmark"
    _inshop(root / "Eval" / "list_eval_partition.txt", root / "Img")
    splits = load_dataset(f"inshop:{root}", image_size=8)
    assert splits.gallery is not None and len(splits.gallery) == 3
    assert splits.train.paths is not None and splits.train.paths[0] == "Img/" + INSHOP[0][0]


def test_inshop_errors(tmp_path: Path) -> None:
    root = tmp_path / "inshop"
    root.mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(f"inshop:{root}")
    message = one_line_error(e)
    assert "no list_eval_partition.txt in" in message and "DeepFashion" in message
    _lines(
        root / "list_eval_partition.txt",
        ["1", "image_name item_id evaluation_status", "img/a.jpg id_1 val"],
    )
    with pytest.raises(DataError) as e:
        load_dataset(f"inshop:{root}")
    assert "evaluation_status 'val' is not one of train, query, gallery" in one_line_error(e)


def test_benchmark_specs_made_absolute_and_listed_in_unknown_name_error(tmp_path: Path) -> None:
    assert absolute_dataset("sop:/data/x/../SOP") == "sop:/data/SOP"
    assert absolute_dataset("csv:/data/a/../df.csv") == "csv:/data/df.csv"
    with pytest.raises(DataError) as e:
        load_dataset("cub201:/x")
    assert "cub200:PATH" in one_line_error(e) and "csv:FILE" in one_line_error(e)


def test_no_warning_on_clean_benchmark(tmp_path: Path) -> None:
    root = tmp_path / "Stanford_Online_Products"
    _sop(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"sop:{root}", image_size=8)
