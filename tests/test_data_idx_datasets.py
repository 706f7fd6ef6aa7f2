"""Tests for tripletlab.data.idx_datasets: the checksum table, locating the IDX files, the
cache folder, and fashion-mnist/mnist loaded end to end.

Everything runs offline on files the tests write (``file://`` URLs stand in for the mirrors);
the real Fashion-MNIST and MNIST are only read when they are installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import idx_bytes, one_line_error, sha256

from tripletlab import data
from tripletlab.data import (
    DataError,
    IdxDataset,
    IdxFile,
    idx_datasets,
    load_dataset,
    locate_files,
    read_idx,
)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real data anywhere: empty system roots, cache and no $TRIPLETLAB_DATA."""
    monkeypatch.setattr(idx_datasets, "SYSTEM_DATA_ROOTS", (tmp_path / "system",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TRIPLETLAB_DATA", raising=False)
    return tmp_path


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
    monkeypatch.setattr(idx_datasets, "SYSTEM_DATA_ROOTS", ())
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
    assert splits.train.images[:].dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert splits.train.classes == tuple("0123456789")
    np.testing.assert_array_equal(
        splits.train.images[:][:, 0].numpy(), read_idx(cache / "train-images-idx3-ubyte.gz")
    )
    x = splits.train.images[:].double() / 255
    assert splits.mean == pytest.approx((float(x.mean()),))
    assert splits.std == pytest.approx((float(x.std(unbiased=False)),))
    # Second load finds the cache; no mirror needed.
    for p in tiny_mnist.iterdir():
        p.unlink()
    again = load_dataset("mnist", image_size=14)
    assert again.train.images.shape == (12, 1, 14, 14)
    assert again.train.images[:].dtype == torch.uint8


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
