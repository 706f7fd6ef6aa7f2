"""Tests for tripletlab.data: IDX reading and validation, locating and downloading files,
digits, image folders, class-disjoint splits, pairs and triplets, augmentation, normalisation.

Everything runs offline on files the tests write (``file://`` URLs stand in for the mirrors);
the real Fashion-MNIST and MNIST are only read when they are installed.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from tripletlab import data
from tripletlab.data import (
    DataError,
    IdxDataset,
    IdxFile,
    ImageSet,
    Splits,
    augment,
    class_split,
    download_file,
    load_dataset,
    locate_files,
    normalize,
    pair_indices,
    read_idx,
    read_idx_pair,
    triplet_indices,
)

# --------------------------------------------------------------------------- helpers

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """An IDX encoding of ``array`` written independently of the reader."""
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray[Any, Any], *, gz: bool = False) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real data anywhere: empty system roots, cache and no $TRIPLETLAB_DATA."""
    monkeypatch.setattr(data, "SYSTEM_DATA_ROOTS", (tmp_path / "system",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TRIPLETLAB_DATA", raising=False)
    return tmp_path


# --------------------------------------------------------------------------- IDX reading

_SHAPES = [(7,), (3, 5), (4, 3, 2)]


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: np.dtype[Any], gz: bool) -> None:
    rng = np.random.default_rng(0)
    for shape in _SHAPES:
        if dtype.kind == "f":
            array = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        path = write_idx(tmp_path / f"a{len(shape)}{'.gz' if gz else ''}", array, gz=gz)
        out = read_idx(path)
        assert out.shape == shape
        assert out.dtype == dtype  # native byte order
        assert out.flags.writeable
        np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_content(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_idx(tmp_path / "no-suffix", array, gz=True)
    np.testing.assert_array_equal(read_idx(str(path)), array)


def test_read_idx_empty_dimension(tmp_path: Path) -> None:
    array = np.zeros((0, 28, 28), dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "empty", array)).shape == (0, 28, 28)


def _corrupt(kind: str) -> bytes:
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    corruptions: dict[str, Callable[[], bytes]] = {
        "bad_magic": lambda: b"\x01\x00" + good[2:],
        "unknown_dtype": lambda: good[:2] + b"\x0a" + good[3:],
        "zero_dims": lambda: b"\x00\x00\x08\x00",
        "short_magic": lambda: b"\x00\x00",
        "truncated_header": lambda: good[:9],
        "truncated": lambda: good[:-1],
        "trailing": lambda: good + b"\x00\x00\x00",
        "truncated_gzip": lambda: gzip.compress(good)[:-12],
        "corrupt_gzip": lambda: b"\x1f\x8b" + b"\xff" * 30,
    }
    return corruptions[kind]()


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("bad_magic", "magic"),
        ("unknown_dtype", "type code 0x0A"),
        ("zero_dims", "0 dimensions"),
        ("short_magic", "truncated"),
        ("truncated_header", "truncated IDX header"),
        ("truncated", "truncated IDX file"),
        ("trailing", "3 unexpected trailing bytes"),
        ("truncated_gzip", "gzip"),
        ("corrupt_gzip", "gzip"),
    ],
)
def test_read_idx_corruption(tmp_path: Path, kind: str, words: str) -> None:
    path = tmp_path / f"{kind}-idx3-ubyte.gz"
    path.write_bytes(_corrupt(kind))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    message = one_line_error(excinfo)
    assert str(path) in message
    assert words in message
    assert "fix:" in message


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_read_idx_pair_count_mismatch(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbl", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        read_idx_pair(images, labels)
    message = one_line_error(excinfo)
    assert str(images) in message and str(labels) in message
    assert "5 images" in message and "4 labels" in message


def test_read_idx_pair_wrong_kinds(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbl", np.zeros(5, dtype=np.int32))
    with pytest.raises(DataError, match="labels"):
        read_idx_pair(images, labels)
    with pytest.raises(DataError, match="images"):
        read_idx_pair(labels, labels)
    out_images, out_labels = read_idx_pair(images, write_idx(tmp_path / "l8", np.ones(5, np.uint8)))
    assert out_images.shape == (5, 2, 2) and out_labels.shape == (5,)


# --------------------------------------------------------------------------- checksum table


def test_checksum_table_is_well_formed() -> None:
    for dataset in data.IDX_DATASETS.values():
        assert set(dataset.files) == set(data.IDX_PARTS)
        assert len(dataset.classes) == 10
        assert dataset.mirrors and all(m.endswith("/") for m in dataset.mirrors)
        for file in dataset.files.values():
            for digest in (file.gz_sha256, file.raw_sha256):
                assert len(digest) == 64 and int(digest, 16) >= 0


# --------------------------------------------------------------------------- locating files


def _place(folder: Path, *, gz: bool = True, skip: str | None = None) -> Path:
    """Empty stand-ins for mnist's four files (locate_files only checks they exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, file in data.IDX_DATASETS["mnist"].files.items():
        if part != skip:
            (folder / (file.name + (".gz" if gz else ""))).write_bytes(b"")
    return folder


def test_locate_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _place(isolated / "explicit" / "mnist")
    env = _place(isolated / "env" / "mnist")
    system = _place(isolated / "system" / "mnist")
    cache = _place(isolated / "xdg" / "tripletlab" / "mnist")
    monkeypatch.setenv("TRIPLETLAB_DATA", str(isolated / "env"))

    def where(data_dir: Path | None = None) -> set[Path]:
        return {p.parent for p in locate_files("mnist", data_dir, download=False).values()}

    assert where(isolated / "explicit") == {explicit}
    assert where() == {env}
    monkeypatch.delenv("TRIPLETLAB_DATA")
    assert where() == {system}
    monkeypatch.setattr(data, "SYSTEM_DATA_ROOTS", ())
    assert where() == {cache}


def test_locate_skips_incomplete_folders_and_prefers_raw(isolated: Path) -> None:
    _place(isolated / "explicit" / "mnist", skip="test-labels")
    complete = _place(isolated / "system" / "mnist")
    _place(complete, gz=False)
    found = locate_files("mnist", isolated / "explicit", download=False)
    assert {p.parent for p in found.values()} == {complete}
    assert not any(p.suffix == ".gz" for p in found.values())
    assert set(found) == set(data.IDX_PARTS)


def test_locate_accepts_files_directly_in_data_dir(isolated: Path) -> None:
    flat = _place(isolated / "flat")
    assert {p.parent for p in locate_files("mnist", flat, download=False).values()} == {flat}


def test_cache_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "tripletlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert data.cache_dir() == Path.home() / ".cache" / "tripletlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "tripletlab"


def test_missing_data_without_download(isolated: Path) -> None:
    for name, fix in [("mnist", "setup_data.sh"), ("fashion-mnist", "dataset-fashion-mnist")]:
        with pytest.raises(DataError) as excinfo:
            load_dataset(name, data_dir=isolated / "nothing", download=False)
        message = one_line_error(excinfo)
        assert name in message and "download=False" in message and fix in message
        assert str(isolated / "nothing") in message


def test_missing_data_and_mirrors_unreachable(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = IdxDataset(
        mirrors=((isolated / "no-mirror").as_uri() + "/",),
        files=data.IDX_DATASETS["mnist"].files,
        classes=data.IDX_DATASETS["mnist"].classes,
        fix=data.IDX_DATASETS["mnist"].fix,
    )
    monkeypatch.setitem(data.IDX_DATASETS, "mnist", dead)
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist")
    message = one_line_error(excinfo)
    assert "download failed" in message and "setup_data.sh" in message
    # Nothing half-written is left in the cache.
    cache = isolated / "xdg" / "tripletlab" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_locate_rejects_non_idx_names() -> None:
    with pytest.raises(DataError, match="digits"):
        locate_files("digits")


# --------------------------------------------------------------------------- downloading


def test_download_first_mirror_missing_second_used(tmp_path: Path) -> None:
    payload = b"payload bytes"
    (tmp_path / "mirror2").mkdir()
    (tmp_path / "mirror2" / "f.gz").write_bytes(payload)
    urls = [(tmp_path / "mirror1" / "f.gz").as_uri(), (tmp_path / "mirror2" / "f.gz").as_uri()]
    dest = tmp_path / "out" / "sub" / "f.gz"
    assert download_file(urls, dest, sha256(payload).upper()) == dest
    assert dest.read_bytes() == payload
    assert list(dest.parent.iterdir()) == [dest]  # no temporary files left


def test_download_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "f.gz"
    src.write_bytes(b"tampered")
    dest = tmp_path / "out" / "f.gz"
    with pytest.raises(DataError) as excinfo:
        download_file([src.as_uri()], dest, sha256(b"original"))
    message = one_line_error(excinfo)
    assert "f.gz" in message and sha256(b"tampered") in message and sha256(b"original") in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_failure_keeps_existing_dest(tmp_path: Path) -> None:
    dest = tmp_path / "f.gz"
    dest.write_bytes(b"precious")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"wrong")
    urls = [(tmp_path / "missing.gz").as_uri(), bad.as_uri()]
    with pytest.raises(DataError, match=r"could not download f\.gz"):
        download_file(urls, dest, sha256(b"right"))
    assert dest.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gz", "f.gz"]


def test_download_keeps_a_verified_dest_without_fetching(tmp_path: Path) -> None:
    dest = tmp_path / "f.gz"
    dest.write_bytes(b"good")
    assert download_file([(tmp_path / "missing").as_uri()], dest, sha256(b"good")) == dest


def test_download_replaces_a_bad_dest(tmp_path: Path) -> None:
    dest = tmp_path / "f.gz"
    dest.write_bytes(b"stale")
    src = tmp_path / "src.gz"
    src.write_bytes(b"fresh")
    download_file([src.as_uri()], dest, sha256(b"fresh"))
    assert dest.read_bytes() == b"fresh"


def test_download_without_urls(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no URL"):
        download_file([], tmp_path / "f.gz", sha256(b""))


# ------------------------------------------------------------------- IDX datasets end to end


@pytest.fixture
def tiny_mnist(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 12/6-image stand-in for mnist served from a file:// mirror, with its own checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels": np.arange(12, dtype=np.uint8) % 10,
        "test-images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "test-labels": np.arange(6, dtype=np.uint8) % 3,
    }
    mirror = isolated / "mirror"
    mirror.mkdir()
    files: dict[data.IdxPart, IdxFile] = {}
    for part, file in data.IDX_DATASETS["mnist"].files.items():
        raw = idx_bytes(arrays[part])
        packed = gzip.compress(raw)
        (mirror / f"{file.name}.gz").write_bytes(packed)
        files[part] = IdxFile(file.name, gz_sha256=sha256(packed), raw_sha256=sha256(raw))
    fake = IdxDataset(
        mirrors=((isolated / "dead").as_uri() + "/", mirror.as_uri() + "/"),
        files=files,
        classes=data.IDX_DATASETS["mnist"].classes,
        fix="the mnist fix",
    )
    monkeypatch.setitem(data.IDX_DATASETS, "mnist", fake)
    return mirror


def test_idx_dataset_downloads_and_loads(tiny_mnist: Path, isolated: Path) -> None:
    splits = load_dataset("mnist")
    cache = isolated / "xdg" / "tripletlab" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in tiny_mnist.iterdir())
    assert splits.name == "mnist"
    assert splits.train.images.shape == (12, 1, 28, 28)
    assert splits.test.images.shape == (6, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert splits.train.classes == tuple("0123456789")
    np.testing.assert_array_equal(
        splits.train.images[:, 0].numpy(), read_idx(cache / "train-images-idx3-ubyte.gz")
    )
    x = splits.train.images.double() / 255
    assert splits.mean == pytest.approx((float(x.mean()),))
    assert splits.std == pytest.approx((float(x.std(unbiased=False)),))
    # Second load finds the cache; no mirror needed.
    for p in tiny_mnist.iterdir():
        p.unlink()
    again = load_dataset("mnist", image_size=14)
    assert again.train.images.shape == (12, 1, 14, 14)
    assert again.train.images.dtype == torch.uint8


def test_idx_dataset_downloads_into_data_dir_and_keeps_present_files(
    tiny_mnist: Path, isolated: Path
) -> None:
    target = isolated / "mine" / "mnist"
    target.mkdir(parents=True)
    raw = gzip.decompress((tiny_mnist / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (target / "t10k-labels-idx1-ubyte").write_bytes(raw)  # already there, uncompressed
    load_dataset("mnist", data_dir=isolated / "mine")
    assert sorted(p.name for p in target.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]


def test_idx_dataset_checksum_mismatch(tiny_mnist: Path, isolated: Path) -> None:
    folder = isolated / "mine" / "mnist"
    folder.mkdir(parents=True)
    for p in tiny_mnist.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "train-labels-idx1-ubyte.gz"
    tampered = np.full(12, 3, dtype=np.uint8)
    bad.write_bytes(gzip.compress(idx_bytes(tampered)))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", data_dir=isolated / "mine")
    message = one_line_error(excinfo)
    expected = data.IDX_DATASETS["mnist"].files["train-labels"].raw_sha256
    assert str(bad) in message and "checksum mismatch" in message
    assert expected in message and sha256(idx_bytes(tampered)) in message
    assert "the mnist fix" in message


def test_idx_dataset_truncated_file_named(tiny_mnist: Path, isolated: Path) -> None:
    folder = isolated / "mine" / "mnist"
    folder.mkdir(parents=True)
    for p in tiny_mnist.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as excinfo:
        load_dataset("mnist", data_dir=isolated / "mine")
    assert str(bad) in one_line_error(excinfo)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar-10")
    message = one_line_error(excinfo)
    assert "cifar-10" in message
    for name in [*data.DATASETS, "imagefolder:PATH"]:
        assert name in message


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"image_size": 0}, "image_size"), ({"test_fraction": 1.0}, "test_fraction")],
)
def test_bad_arguments(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_dataset("digits", **kwargs)


# --------------------------------------------------------------------------- digits


def _expected_test_size(labels: torch.Tensor, fraction: float) -> int:
    counts = Counter(labels.tolist())
    return sum(min(max(int(np.floor(n * fraction + 0.5)), 1), n - 1) for n in counts.values())


def test_digits() -> None:
    splits = load_dataset("digits", seed=3)
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous() and test.images.is_contiguous()
    assert train.labels.dtype == torch.int64
    assert train.classes == tuple(str(d) for d in range(10)) == test.classes
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    all_labels = torch.cat([train.labels, test.labels])
    assert len(test) == _expected_test_size(all_labels, 0.2)
    # Stratified: each class's share of test within one item of its share of the whole.
    for c in range(10):
        n_c = int((all_labels == c).sum())
        assert abs(int((test.labels == c).sum()) - 0.2 * n_c) <= 1
    # Pixel values are the sklearn values x * 255 / 16, rounded.
    assert set(torch.unique(train.images).tolist()) <= {
        int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)
    }
    assert splits.name == "digits" and len(splits.mean) == 1


def test_digits_deterministic_per_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.test.images, c.test.images)
    small = load_dataset("digits", test_fraction=0.5)
    all_labels = torch.cat([small.train.labels, small.test.labels])
    assert len(small.test) == _expected_test_size(all_labels, 0.5)


# --------------------------------------------------------------------------- image folders


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
    splits = load_dataset(f"imagefolder:{root}", image_size=12, test_fraction=0.34, seed=0)
    assert splits.name == f"imagefolder:{root}"
    assert splits.train.classes == ("cat", "dog")
    assert splits.train.images.shape[1:] == (3, 12, 12)
    assert len(splits.train) + len(splits.test) == 6
    assert sorted(splits.test.labels.tolist()) == [0, 1]
    assert len(splits.mean) == len(splits.std) == 3
    # A greyscale image is repeated over the three channels.
    both = torch.cat([splits.train.images, splits.test.images])
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
    assert set(torch.unique(splits.train.images).tolist()) <= {10, 50}


def test_imagefolder_unreadable_skipped_with_one_warning(tmp_path: Path) -> None:
    root = _folder(tmp_path / "u", {c: [("png", (6, 6), "L")] * 3 for c in ("a", "b")})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "b" / "empty.jpg").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(f"imagefolder:{root}", image_size=6)
    ours = [w for w in caught if "unreadable" in str(w.message)]
    assert len(ours) == 1
    assert "2 unreadable" in str(ours[0].message) and "strict=True" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller of load_dataset
    assert len(splits.train) + len(splits.test) == 6
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"imagefolder:{root}", image_size=6, strict=True)
    message = one_line_error(excinfo)
    assert "2 unreadable" in message and "broken.png" in message


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
    with pytest.raises(DataError, match="is not a folder"):
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


# --------------------------------------------------------------------------- ImageSet and Splits


def _set(labels: list[int], classes: int = 10, size: int = 4) -> ImageSet:
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, size, size)
    return ImageSet(images.contiguous(), torch.tensor(labels), tuple(map(str, range(classes))))


def test_imageset_subset_and_validation() -> None:
    s = _set([0, 1, 2, 1])
    assert len(s) == 4
    by_mask = s.subset(s.labels == 1)
    assert by_mask.labels.tolist() == [1, 1] and by_mask.classes == s.classes
    assert by_mask.images[:, 0, 0, 0].tolist() == [1, 3]
    assert s.subset(torch.tensor([3, 0])).labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="mask"):
        s.subset(torch.tensor([True, False]))
    with pytest.raises(DataError, match="index"):
        s.subset(torch.tensor([0.5]))
    with pytest.raises(DataError, match="lie in"):
        _set([0, 10])
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), ("a",))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageSet(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ("a",)
        )
    strided = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)[..., ::2]
    assert ImageSet(strided, torch.zeros(2, dtype=torch.long), ("a",)).images.is_contiguous()


def test_imageset_paths_follow_subsets() -> None:
    s = _set([0, 1, 2, 1])
    assert s.paths is None and s.subset(s.labels == 1).paths is None
    named = ImageSet(s.images, s.labels, s.classes, ("w", "x", "y", "z"))
    assert named.subset(named.labels == 1).paths == ("x", "z")
    assert named.subset(torch.tensor([3, 0])).paths == ("z", "w")
    assert named.subset(torch.tensor([], dtype=torch.long)).paths == ()
    with pytest.raises(DataError, match="4 images but 3 paths"):
        ImageSet(s.images, s.labels, s.classes, ("a", "b", "c"))


def test_splits_validation() -> None:
    s = _set([0, 1])
    with pytest.raises(DataError, match="one value per channel"):
        Splits("x", s, s, (0.5, 0.5), (1.0, 1.0))
    other = ImageSet(s.images, s.labels, tuple("abcdefghij"))
    with pytest.raises(DataError, match="same classes"):
        Splits("x", s, other, (0.5,), (1.0,))


# --------------------------------------------------------------------------- class_split


def _splits(train_labels: list[int], test_labels: list[int], classes: int = 10) -> Splits:
    return data._make_splits("toy", _set(train_labels, classes), _set(test_labels, classes))


_TOY = _splits(list(range(10)) * 3, list(range(10)) * 2)


def test_class_split_lists_are_disjoint() -> None:
    out = class_split(_TOY, train_classes=[0, 1, 2], test_classes=[5, 6])
    assert set(out.train.labels.tolist()) == {0, 1, 2}
    assert set(out.test.labels.tolist()) == {5, 6}
    assert len(out.train) == 9 and len(out.test) == 4
    assert out.train.classes == _TOY.train.classes and out.name == "toy"
    x = out.train.images.double() / 255
    assert out.mean == pytest.approx((float(x.mean()),))  # recomputed on the new train set


def test_class_split_complements() -> None:
    out = class_split(_TOY, train_classes=[0, 1, 2, 3])
    assert set(out.test.labels.tolist()) == set(range(4, 10))
    out = class_split(_TOY, test_classes=[8, 9])
    assert set(out.train.labels.tolist()) == set(range(8))
    assert set(out.test.labels.tolist()) == {8, 9}


def test_class_split_unseen_classes() -> None:
    out = class_split(_TOY, unseen_classes=3)
    assert set(out.train.labels.tolist()) == set(range(7))
    assert set(out.test.labels.tolist()) == {7, 8, 9}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"train_classes": [0, 1, 2], "test_classes": [2, 3]}, "overlap on \\[2\\]"),
        ({"train_classes": [0, 10]}, "unknown class ids \\[10\\]"),
        ({"test_classes": [-1, 3]}, "unknown class ids \\[-1\\]"),
        ({"train_classes": [0]}, "train side has 1 class"),
        ({"test_classes": [4]}, "test side has 1 class"),
        ({"unseen_classes": 1}, "between 2 and 8"),
        ({"unseen_classes": 9}, "between 2 and 8"),
        ({"unseen_classes": 2, "train_classes": [0, 1]}, "not both"),
        ({}, "needs train_classes"),
    ],
)
def test_class_split_errors(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=words) as excinfo:
        class_split(_TOY, **kwargs)
    one_line_error(excinfo)


def test_class_split_counts_classes_with_images() -> None:
    sparse = _splits([0, 1, 2, 3] * 2, [0, 1, 2, 3], classes=6)  # classes 4, 5 have no images
    with pytest.raises(DataError, match="test side has 0 class"):
        class_split(sparse, train_classes=[0, 1, 2, 3])


# --------------------------------------------------------------------------- pairs and triplets

_LABEL_LAYOUTS = {
    "balanced": [c for c in range(4) for _ in range(5)],
    "unbalanced": [0] * 9 + [1] * 2 + [2] * 5 + [3] * 3,
    "singletons": [7, 7, 3, 9, 9, 9, 1, 5],  # 3, 1, 5 are alone in their class
    "sparse_ids": [100, -4, 100, -4, 2, 2, 2],
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("layout", list(_LABEL_LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_indices_invariants(layout: str, seed: int) -> None:
    labels = torch.tensor(_LABEL_LAYOUTS[layout])
    i, j, same = pair_indices(labels, 400, generator=_gen(seed))
    assert i.shape == j.shape == same.shape == (400,)
    assert i.dtype == j.dtype == torch.int64 and same.dtype == torch.bool
    for a, b, s in zip(i.tolist(), j.tolist(), same.tolist(), strict=True):
        if s:
            assert a != b and labels[a] == labels[b]
        else:
            assert labels[a] != labels[b]
    assert 120 < int(same.sum()) < 280  # Bernoulli(0.5) over 400 pairs
    # Each item is a negative pair's first item about equally often (permutation cycling).
    counts = torch.bincount(i[~same], minlength=len(labels))
    assert int(counts.max() - counts.min()) <= 1


def test_pair_indices_deterministic() -> None:
    labels = torch.tensor(_LABEL_LAYOUTS["unbalanced"])
    a = pair_indices(labels, 50, generator=_gen(5))
    b = pair_indices(labels, 50, generator=_gen(5))
    c = pair_indices(labels, 50, generator=_gen(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_pair_negative_class_uniform_over_other_classes() -> None:
    # Class 1 holds 80% of the items, yet as in siamese-triplet a negative's class is drawn
    # uniformly among the other classes: half of class 0's negatives come from class 1.
    labels = torch.tensor([0] * 5 + [1] * 40 + [2] * 5)
    i, j, same = pair_indices(labels, 6000, generator=_gen(0))
    from_zero = (~same) & (labels[i] == 0)
    share_one = float((labels[j[from_zero]] == 1).double().mean())
    assert 0.4 < share_one < 0.6


@pytest.mark.parametrize("layout", list(_LABEL_LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_indices_invariants(layout: str, seed: int) -> None:
    labels = torch.tensor(_LABEL_LAYOUTS[layout])
    a, p, n = triplet_indices(labels, 300, generator=_gen(seed))
    assert a.shape == p.shape == n.shape == (300,)
    assert a.dtype == p.dtype == n.dtype == torch.int64
    assert bool((a != p).all())
    assert torch.equal(labels[a], labels[p])
    assert bool((labels[a] != labels[n]).all())
    sizes = Counter(labels.tolist())
    eligible = [k for k, y in enumerate(labels.tolist()) if sizes[y] >= 2]
    counts = torch.bincount(a, minlength=len(labels))
    assert set(torch.nonzero(counts).squeeze(1).tolist()) == set(eligible)  # singletons skipped
    assert int(counts[eligible].max() - counts[eligible].min()) <= 1


def test_positive_and_negative_choices_are_uniform() -> None:
    labels = torch.tensor([0] * 5 + [1] * 40 + [2] * 5)
    a, p, n = triplet_indices(labels, 20000, generator=_gen(0))
    # The anchor's partner is uniform over the 4 other members of its class.
    counts = torch.bincount(p[a == 0], minlength=5)[:5]
    assert counts[0] == 0 and bool((counts[1:] > 0.8 * counts[1:].float().mean()).all())
    # The negative's class is uniform over the other classes (siamese-triplet), not its items.
    share_one = float((labels[n[labels[a] == 0]] == 1).double().mean())
    assert 0.45 < share_one < 0.55


def test_triplet_indices_deterministic_and_empty() -> None:
    labels = torch.tensor(_LABEL_LAYOUTS["balanced"])
    x = triplet_indices(labels, 40, generator=_gen(1))
    y = triplet_indices(labels, 40, generator=_gen(1))
    assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
    empty = triplet_indices(labels, 0, generator=_gen(1))
    assert all(t.shape == (0,) for t in empty)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ([3, 3, 3], "at least 2 classes"),
        ([0, 1, 2], "at least 2 items"),
        ([], "at least 2 classes"),
    ],
)
@pytest.mark.parametrize("fn", [pair_indices, triplet_indices])
def test_pairs_and_triplets_errors(labels: list[int], words: str, fn: Callable[..., Any]) -> None:
    with pytest.raises(DataError, match=words):
        fn(torch.tensor(labels, dtype=torch.long), 5, generator=_gen(0))


def test_pairs_and_triplets_bad_arguments() -> None:
    with pytest.raises(DataError, match="integer labels"):
        pair_indices(torch.tensor([0.0, 1.0]), 4, generator=_gen(0))
    with pytest.raises(DataError, match=">= 0"):
        triplet_indices(torch.tensor([0, 0, 1]), -1, generator=_gen(0))


# --------------------------------------------------------------------------- augment


def _batch(b: int = 16, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 256, (b, c, h, w), generator=_gen(seed), dtype=torch.uint8)


def _augment_loop(images: torch.Tensor, pad: int, hflip: bool, g: torch.Generator) -> torch.Tensor:
    """Brute-force twin: draws the same random numbers, then pads, slices and flips per image."""
    b, _, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5 if hflip else torch.zeros(b, dtype=torch.bool)
    out = torch.empty_like(images)
    for k in range(b):
        padded = torch.zeros(images.shape[1], h + 2 * pad, w + 2 * pad, dtype=torch.uint8)
        padded[:, pad : pad + h, pad : pad + w] = images[k]
        crop = padded[:, int(dy[k]) : int(dy[k]) + h, int(dx[k]) : int(dx[k]) + w]
        out[k] = crop.flip(-1) if flip[k] else crop
    return out


@pytest.mark.parametrize(("pad", "hflip"), [(0, True), (1, False), (2, True), (4, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_augment_matches_loop(pad: int, hflip: bool, seed: int) -> None:
    images = _batch(seed=seed)
    out = augment(images, crop_padding=pad, hflip=hflip, generator=_gen(seed))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, _augment_loop(images, pad, hflip, _gen(seed)))


def test_augment_identity() -> None:
    images = _batch()
    out = augment(images, crop_padding=0, hflip=False, generator=_gen(0))
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_augment_flips_about_half() -> None:
    images = _batch(b=400, h=3, w=4)
    out = augment(images, crop_padding=0, hflip=True, generator=_gen(0))
    flipped = (out == images.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == images).all(dim=(1, 2, 3))
    assert bool((flipped | kept).all())
    assert 160 < int(flipped.sum()) < 240


def test_augment_crops_shift_content() -> None:
    b, pad = 200, 2
    images = torch.zeros(b, 1, 7, 7, dtype=torch.uint8)
    images[:, 0, 3, 3] = 255  # one bright pixel in the middle
    out = augment(images, crop_padding=pad, hflip=False, generator=_gen(0))
    assert bool((out.sum(dim=(1, 2, 3)) == 255).all())  # a shift of <= pad keeps the pixel
    pos = torch.nonzero(out[:, 0] == 255)[:, 1:]  # (B, 2) row, col
    shifts = {(int(r) - 3, int(c) - 3) for r, c in pos}
    assert shifts == {(r, c) for r in range(-pad, pad + 1) for c in range(-pad, pad + 1)}


def test_augment_deterministic_per_generator() -> None:
    images = _batch()
    a = augment(images, crop_padding=2, hflip=True, generator=_gen(3))
    b = augment(images, crop_padding=2, hflip=True, generator=_gen(3))
    c = augment(images, crop_padding=2, hflip=True, generator=_gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


class _CountCalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _calls(fn: Callable[[], object]) -> int:
    mode = _CountCalls()
    with mode:
        fn()
    return mode.calls


def test_augment_has_no_loop_over_the_batch() -> None:
    small, large = _batch(b=2), _batch(b=64)

    def run(x: torch.Tensor) -> Callable[[], object]:
        return lambda: augment(x, crop_padding=2, hflip=True, generator=_gen(0))

    assert _calls(run(small)) == _calls(run(large))


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(2, 1, 3, 3), crop_padding=1, hflip=False, generator=_gen(0))
    with pytest.raises(ValueError, match="crop_padding"):
        augment(_batch(), crop_padding=-1, hflip=False, generator=_gen(0))


def test_default_hflip() -> None:
    assert data.default_hflip("fashion-mnist")
    assert not data.default_hflip("mnist") and not data.default_hflip("digits")
    assert data.default_hflip("imagefolder:/x")


# --------------------------------------------------------------------------- normalize


def test_normalize() -> None:
    images = _batch(b=4, c=3)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = (
        images.double() / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)
    ) / torch.tensor(std).double().view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(images, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="> 0"):
        normalize(images, mean, (0.2, 0.0, 0.4))
    with pytest.raises(ValueError, match="uint8"):
        normalize(images.float(), mean, std)


def test_normalized_train_set_has_zero_mean_unit_std() -> None:
    splits = load_dataset("digits")
    x = normalize(splits.train.images, splits.mean, splits.std).double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-5


# ------------------------------------------------------------------- real data, if installed


_REAL_TEST_COUNTS = {
    "fashion-mnist": [1000] * 10,
    "mnist": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}


@pytest.mark.parametrize(
    ("name", "first_labels", "mean"),
    [("fashion-mnist", [9, 0, 0, 3, 0, 2], 0.2860), ("mnist", [5, 0, 4, 1, 9, 2], 0.1307)],
)
def test_real_idx_dataset(name: str, first_labels: list[int], mean: float) -> None:
    try:
        locate_files(name, download=False)
    except DataError:
        pytest.skip(f"{name} is not installed (run scripts/setup_data.sh)")
    splits = load_dataset(name, download=False)
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert len(splits.train.classes) == 10
    assert splits.train.labels[:6].tolist() == first_labels
    assert torch.bincount(splits.test.labels).tolist() == _REAL_TEST_COUNTS[name]
    assert splits.mean[0] == pytest.approx(mean, abs=1e-4)


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
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match=r"cannot read .* as an image"):
        data.read_image_file(tmp_path / "bad.png", 8, 1)
