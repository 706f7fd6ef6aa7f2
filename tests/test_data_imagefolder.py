"""Tests for tripletlab.data.imagefolder: image folders (grey and colour, unreadable files,
the train/test layout, paths) and reading one image file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import one_line_error

from tripletlab import data
from tripletlab.data import DataError, load_dataset


def _save(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, int, int] = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def _folder(root: Path, spec: Mapping[str, list[tuple[str, tuple[int, int], str]]]) -> Path:
    for cls, files in spec.items():
        for i, (ext, size, mode) in enumerate(files):
            _save(root / cls / f"{i}.{ext}", size, mode, 40 * i + 10)
    return root


def test_a_mixed_folder_names_the_first_image_of_the_fewer_kind(tmp_path: Path) -> None:
    colour, grey = ("png", (10, 10), "RGB"), ("png", (10, 10), "L")
    root = _folder(tmp_path / "mostly", {"a": [colour, colour, grey], "b": [colour, colour]})
    with pytest.warns(UserWarning, match=r"4 colour and 1 grey images \(first grey one: a/2"):
        load_dataset(f"imagefolder:{root}", image_size=8, test_fraction=0.34, seed=0)


def test_imagefolder_grey_and_colour(tmp_path: Path) -> None:
    root = _folder(
        tmp_path / "imgs",
        {
            "cat": [("png", (10, 12), "L"), ("jpg", (40, 30), "RGB"), ("png", (9, 9), "L")],
            "dog": [("jpeg", (16, 16), "RGB"), ("PNG", (5, 20), "L"), ("png", (8, 8), "RGB")],
        },
    )
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    (root / "empty").mkdir()  # no images: not a class
    with pytest.warns(UserWarning, match=r"3 colour and 3 grey images \(first colour one: cat/1"):
        splits = load_dataset(f"imagefolder:{root}", image_size=12, test_fraction=0.34, seed=0)
    assert splits.name == f"imagefolder:{root}"
    assert splits.train.classes == ("cat", "dog")
    assert splits.train.images.shape[1:] == (3, 12, 12)
    assert len(splits.train) + len(splits.test) == 6
    assert sorted(splits.test.labels.tolist()) == [0, 1]
    assert len(splits.mean) == len(splits.std) == 3
    # A greyscale image is repeated over the three channels.
    both = torch.cat([splits.train.images[:], splits.test.images[:]])
    grey = (both[:, 0] == both[:, 1]).all(dim=(1, 2)) & (both[:, 1] == both[:, 2]).all(dim=(1, 2))
    assert int(grey.sum()) == 3


def test_imagefolder_all_grey_gives_one_channel(tmp_path: Path) -> None:
    root = _folder(
        tmp_path / "g",
        {c: [("png", (6, 6), "L"), ("png", (7, 5), "L")] for c in ("a", "b", "c")},
    )
    splits = load_dataset(f"imagefolder:{root}", image_size=4)
    assert splits.train.images.shape[1:] == (1, 4, 4)
    assert len(splits.train) == 3 and len(splits.test) == 3
    # Constant images stay constant through the resize.
    assert set(torch.unique(splits.train.images[:]).tolist()) <= {10, 50}


def test_imagefolder_unreadable_skipped_with_one_warning(tmp_path: Path) -> None:
    root = _folder(tmp_path / "u", {c: [("png", (6, 6), "L")] * 3 for c in ("a", "b")})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "b" / "empty.jpg").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(f"imagefolder:{root}", image_size=6)
    ours = [w for w in caught if "unreadable" in str(w.message)]
    assert len(ours) == 1
    assert "2 unreadable" in str(ours[0].message) and "--strict" in str(ours[0].message)
    assert "=True" not in str(ours[0].message)  # the CLI flag, not the Python argument
    assert ours[0].filename == __file__  # points at the caller of load_dataset
    assert len(splits.train) + len(splits.test) == 6
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"imagefolder:{root}", image_size=6, strict=True)
    message = one_line_error(excinfo)
    assert "2 unreadable" in message and "broken.png" in message
    assert "without --strict" in message and "=False" not in message


@pytest.mark.parametrize("classes", [0, 1])
def test_imagefolder_fewer_than_two_classes(tmp_path: Path, classes: int) -> None:
    root = tmp_path / "few"
    root.mkdir()
    _folder(root, {f"c{i}": [("png", (4, 4), "L")] * 2 for i in range(classes)})
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"imagefolder:{root}")
    message = one_line_error(excinfo)
    assert f"found {classes} class folder" in message and "at least 2" in message


def test_imagefolder_class_with_only_unreadable_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "x", {"a": [("png", (4, 4), "L")] * 2})
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"nope")
    with (
        pytest.warns(UserWarning, match="1 unreadable"),
        pytest.raises(DataError, match="fewer than 2 classes"),
    ):
        load_dataset(f"imagefolder:{root}")


def test_imagefolder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="imagefolder:: no folder given; fix: pass imagefolder:"):
        load_dataset("imagefolder:")


def test_imagefolder_train_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "split"
    _folder(root / "train", {c: [("png", (5, 5), "RGB")] * 2 for c in ("a", "b", "c")})
    _folder(root / "test", {c: [("jpg", (9, 9), "RGB")] for c in ("c", "d")})
    splits = load_dataset(f"imagefolder:{root}", image_size=8, test_fraction=0.9)
    assert splits.train.classes == ("a", "b", "c", "d")
    assert sorted(splits.train.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(splits.test.labels.tolist()) == [2, 3]
    assert splits.test.images.shape == (2, 3, 8, 8)


def test_imagefolder_paths_name_each_image(tmp_path: Path) -> None:
    root = _folder(tmp_path / "p", {c: [("png", (6, 6), "L")] * 3 for c in ("a", "b")})
    (root / "a" / "sub").mkdir()
    _save(root / "a" / "sub" / "deep.png", (6, 6), "L", 200)
    (root / "b" / "broken.png").write_bytes(b"nope")  # skipped: no path for it
    with pytest.warns(UserWarning, match="1 unreadable"):
        splits = load_dataset(f"imagefolder:{root}", image_size=6, test_fraction=0.3)
    for s in (splits.train, splits.test):
        assert s.paths is not None and len(s.paths) == len(s)
        for path, label, image in zip(s.paths, s.labels.tolist(), s.images, strict=True):
            assert path.split("/")[0] == s.classes[label]  # the class folder
            assert (root / path).is_file()
            pixel = {"0": 10, "1": 50, "2": 90, "p": 200}[path[-5]]  # _folder's 40 * i + 10
            assert int(image[0, 0, 0]) == pixel  # the path names the image it came with
    paths = sorted([*splits.train.paths, *splits.test.paths])  # type: ignore[misc]
    assert paths == [
        "a/0.png",
        "a/1.png",
        "a/2.png",
        "a/sub/deep.png",
        "b/0.png",
        "b/1.png",
        "b/2.png",
    ]
    split_root = tmp_path / "s"
    _folder(split_root / "train", {c: [("png", (5, 5), "L")] for c in ("a", "b")})
    _folder(split_root / "test", {c: [("png", (5, 5), "L")] for c in ("a", "b")})
    layout = load_dataset(f"imagefolder:{split_root}", image_size=4)
    assert layout.train.paths == ("train/a/0.png", "train/b/0.png")
    assert layout.test.paths == ("test/a/0.png", "test/b/0.png")


def test_read_image_file(tmp_path: Path) -> None:
    from PIL import Image

    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    Image.fromarray(np.full((5, 5), 7, dtype=np.uint8)).save(tmp_path / "grey.png")
    red = data.read_image_file(tmp_path / "red.png", 8, 3)
    assert red.shape == (3, 8, 8) and red.dtype == torch.uint8
    assert red[0].min() == 255 and red[1:].max() == 0
    assert set(data.read_image_file(tmp_path / "red.png", 8, 1).flatten().tolist()) == {76}
    grey = data.read_image_file(tmp_path / "grey.png", 4, 3)
    assert grey.shape == (3, 4, 4) and set(grey.flatten().tolist()) == {7}
    with pytest.raises(data.DataError, match="no image file at"):
        data.read_image_file(tmp_path / "none.png", 8, 1)
    with pytest.raises(data.DataError, match=r"is a folder; pass its image files \(e.g. "):
        data.read_image_file(tmp_path, 8, 1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match=r"cannot read .* as an image"):
        data.read_image_file(tmp_path / "bad.png", 8, 1)


# ------------------------------------------------------------------ 16 bits, formats, links


def _eight_bits_by_loop(values: np.ndarray) -> list[list[int]]:
    """The brute-force twin of the 16-bit scaling: clip to [0, 65535], divide by 257, round
    half to even (as numpy's rint), one pixel at a time in Python floats."""
    return [[round(min(max(float(v), 0.0), 65535.0) / 257.0) for v in row] for row in values]


@pytest.mark.parametrize(
    ("dtype", "suffix", "mode"),
    [("<u2", "png", "I;16"), (">u2", "tif", "I;16B"), ("<i4", "tif", "I")],
)
def test_sixteen_bit_images_are_scaled_not_clipped(
    tmp_path: Path, dtype: str, suffix: str, mode: str
) -> None:
    from PIL import Image

    values = (np.arange(36).reshape(6, 6) * 1871).astype(dtype)  # 0 .. 65485
    values[0, 0] = 65535
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode == mode  # the mode under test really is what Pillow reads
    expected = torch.tensor(_eight_bits_by_loop(values), dtype=torch.uint8)
    assert len(set(expected.flatten().tolist())) > 30  # a full range, not white
    x = data.read_image_file(path, 6, 1)  # same size: no resampling
    assert torch.equal(x[0], expected)
    # the same pixels through an image folder
    for cls in ("a", "b"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(values).save(tmp_path / "set" / cls / f"{i}.{suffix}")
    splits = load_dataset(f"imagefolder:{tmp_path / 'set'}", image_size=6)
    assert splits.train.images.shape[1] == 1
    assert all(torch.equal(img[0], expected) for img in splits.train.images)


def test_every_image_kind_is_read_by_folders_and_files_alike(tmp_path: Path) -> None:
    from PIL import Image, features

    kinds = [s for s in data.IMAGE_SUFFIXES if s != ".webp" or features.check("webp")]
    assert {".gif", ".tif", ".tiff", ".bmp", ".png", ".jpg"} <= set(kinds)
    g = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i, suffix in enumerate(kinds):
            pixels = g.integers(0, 256, (8, 8), dtype=np.uint8)
            path = tmp_path / cls / f"{i}{suffix.upper() if i % 2 else suffix}"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(path)
    animated = [Image.new("L", (8, 8), v) for v in (200, 30)]  # frame 0 is 200
    animated[0].save(tmp_path / "a" / "anim.gif", save_all=True, append_images=animated[1:])
    (tmp_path / "a" / "notes.ppm").write_bytes(b"P5 1 1 255\n\x00")  # not a listed suffix
    splits = load_dataset(f"imagefolder:{tmp_path}", image_size=8, test_fraction=0.3)
    paths = sorted([*(splits.train.paths or ()), *(splits.test.paths or ())])
    assert len(paths) == 2 * len(kinds) + 1 and "a/notes.ppm" not in paths
    assert "a/anim.gif" in paths
    assert splits.train.images.shape[1] == 1  # grey pictures in every format, lossy WEBP too
    assert set(data.read_image_file(tmp_path / "a" / "anim.gif", 8, 1).flatten().tolist()) == {200}
    for name in paths:  # every file the folder read, read on its own gives the same pixels
        s = splits.train if name in (splits.train.paths or ()) else splits.test
        row = (s.paths or ()).index(name)
        assert torch.equal(data.read_image_file(tmp_path / name, 8, 1), s.images[row])
    with pytest.raises(DataError) as excinfo:
        data.read_image_file(tmp_path / "a" / "notes.ppm", 8, 1)
    message = one_line_error(excinfo)
    assert "not named as an image file" in message and ".gif" in message


def test_links_to_folders_already_seen_are_not_classes_and_do_not_loop(tmp_path: Path) -> None:
    root = _folder(tmp_path / "r", {c: [("png", (4, 4), "L")] * 2 for c in ("a", "b")})
    (root / "loop").symlink_to(root, target_is_directory=True)  # the folder itself
    (root / "up").symlink_to(tmp_path, target_is_directory=True)  # a folder above it
    (root / "again").symlink_to(root / "b", target_is_directory=True)  # another class
    (root / "a" / "parent").symlink_to(root, target_is_directory=True)  # inside a class
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    outside = _folder(tmp_path / "elsewhere", {"c": [("png", (4, 4), "L")] * 2}) / "c"
    (root / "c").symlink_to(outside, target_is_directory=True)  # a real class, linked
    splits = load_dataset(f"imagefolder:{root}", image_size=4)
    assert splits.train.classes == ("a", "b", "c")
    paths = sorted([*(splits.train.paths or ()), *(splits.test.paths or ())])
    assert paths == ["a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png", "c/1.png"]


@pytest.mark.parametrize(
    ("extra", "channels", "colour", "grey"),
    [
        ({"mode": "CMYK", "color": (0, 0, 0, 90)}, 1, 0, 0),  # grey ink only: grey
        ({"mode": "RGB", "color": (60, 60, 60)}, 1, 0, 0),  # an RGB file of grey pixels
        ({"mode": "P", "color": 3}, 1, 0, 0),  # a palette of greys
        ({"mode": "CMYK", "color": (200, 0, 0, 0)}, 3, 1, 4),  # truly colour: said
    ],
)
def test_one_colour_mode_file_does_not_turn_the_set_colour_silently(
    tmp_path: Path, extra: dict[str, object], channels: int, colour: int, grey: int
) -> None:
    from PIL import Image

    root = _folder(tmp_path / "m", {c: [("png", (6, 6), "L")] * 2 for c in ("a", "b")})
    img = Image.new(str(extra["mode"]), (6, 6), extra["color"])  # type: ignore[arg-type]
    if extra["mode"] == "P":
        img.putpalette([v for i in range(256) for v in (i, i, i)])
    img.save(root / "b" / ("odd.jpg" if extra["mode"] == "CMYK" else "odd.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(f"imagefolder:{root}", image_size=6, test_fraction=0.4)
    assert splits.train.images.shape[1] == channels
    notes = [str(w.message) for w in caught if "colour" in str(w.message)]
    if colour:
        assert len(notes) == 1 and f"{colour} colour and {grey} grey images" in notes[0]
        assert "b/odd.jpg" in notes[0] and "\n" not in notes[0]
    else:
        assert notes == []


def test_names_with_newlines_and_tabs_print_escaped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "n", {c: [("png", (4, 4), "L")] * 2 for c in ("a\nb", "c\td")})
    (root / "c\td" / "bad\n.png").write_bytes(b"nope")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(f"imagefolder:{root}", image_size=4)
    assert splits.train.classes == ("a\nb", "c\td")  # the names themselves are kept
    (message,) = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert "\n" not in message and "\t" not in message and "bad\\n.png" in message
    with pytest.raises(DataError) as excinfo:
        data.read_image_file(root / "a\nb" / "missing.png", 4, 1)
    assert "a\\nb" in one_line_error(excinfo)
