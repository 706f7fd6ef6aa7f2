"""Tests for tripletlab.data.imagecache: rows read from the cache equal the images decoded in
memory however they are indexed; a second load decodes nothing; a changed or added file is
decoded again and only it; a corrupt or other-version cache is rebuilt; a cache folder that
cannot be written falls back to memory; an interrupted build leaves the old cache whole and no
temporary; several workers decode what one does."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab.data import imagecache, sets
from tripletlab.data.decode import decode_image
from tripletlab.data.imagecache import CacheSettings, DiskImages, cache_path, decode_files


def _images(root: Path, n: int, *, grey_every: int = 3) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if i % grey_every == 0:
            img = Image.fromarray(rng.integers(0, 256, (9 + i % 4, 11), dtype=np.uint8))
        else:
            img = Image.fromarray(rng.integers(0, 256, (10, 8 + i % 5, 3), dtype=np.uint8))
        path = root / f"{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    decode = decode_image

    def counting(path: Path, size: int) -> np.ndarray | None:
        seen.append(Path(path).name)
        return decode(path, size)

    monkeypatch.setattr(imagecache, "decode_image", counting)
    return seen


def test_rows_on_disk_equal_the_images_in_memory(tmp_path: Path) -> None:
    paths = _images(tmp_path / "imgs", 12)
    (tmp_path / "imgs" / "bad.png").write_text("no image")
    paths.insert(5, tmp_path / "imgs" / "bad.png")
    memory, status_m = decode_files(tmp_path / "imgs", paths, 6, CacheSettings(None, 1))
    disk, status_d = decode_files(tmp_path / "imgs", paths, 6, CacheSettings(tmp_path / "c", 1))
    assert isinstance(memory, torch.Tensor) and isinstance(disk, DiskImages)
    assert status_m == status_d and status_d[5] is None and sum(s is None for s in status_d) == 1
    assert [s for s in status_d if s is not None] == [i % 3 != 0 for i in range(12)]
    assert disk.shape == memory.shape == (12, 3, 6, 6) and len(disk) == 12
    assert torch.equal(disk[:], memory)
    assert torch.equal(disk[3], memory[3]) and torch.equal(disk[-1], memory[-1])
    assert torch.equal(disk[2:9:3], memory[2:9:3])
    index = torch.tensor([[7, 0], [7, 11]])
    assert torch.equal(disk[index], memory[index])  # (2, 2, 3, 6, 6)
    mask = torch.arange(12) % 2 == 1
    assert torch.equal(disk[mask], memory[mask])
    picked = disk.take(torch.tensor([4, 1, 1]))
    assert isinstance(picked, DiskImages) and torch.equal(picked[:], memory[[4, 1, 1]])
    grey = disk.with_channels(1)
    assert grey.shape == (12, 1, 6, 6) and torch.equal(grey[:], memory[:, :1])
    again = pickle.loads(pickle.dumps(disk))  # another process reopens the file
    assert torch.equal(again[:], memory)
    with pytest.raises(IndexError):
        disk[12]


def test_a_second_load_decodes_nothing_and_a_change_decodes_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images(tmp_path / "imgs", 6)
    settings = CacheSettings(tmp_path / "c", 1)
    seen = _count_decodes(monkeypatch)
    first, _ = decode_files(tmp_path / "imgs", paths, 5, settings)
    assert len(seen) == 6
    seen.clear()
    second, _ = decode_files(tmp_path / "imgs", paths, 5, settings)
    assert seen == [] and torch.equal(first[:], second[:])
    # Change one file (new pixels, new size and time) and add one.
    Image.new("RGB", (7, 7), (10, 120, 230)).save(paths[2])
    os.utime(paths[2], ns=(10**18, 10**18))
    extra = tmp_path / "imgs" / "new.png"
    Image.new("L", (5, 5), 77).save(extra)
    third, status = decode_files(tmp_path / "imgs", [*paths, extra], 5, settings)
    assert sorted(seen) == ["002.png", "new.png"]
    assert (third[2] == torch.tensor([10, 120, 230]).view(3, 1, 1)).all()
    assert (third[6] == 77).all() and status[6] is False
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(third[keep], first[keep])
    assert len(list((tmp_path / "c").iterdir())) == 1  # one file, no temporaries


def test_a_long_header_is_read_back(tmp_path: Path) -> None:
    # Hundreds of entries: the header spans several HEADER_ALIGN blocks, and the rows start
    # where the writer put them.
    folder = tmp_path / "many"
    folder.mkdir()
    paths = []
    for i in range(300):
        paths.append(folder / f"a-rather-long-file-name-to-grow-the-header-{i:04d}.png")
        Image.new("L", (1, 1), i % 256).save(paths[-1])
    images, _ = decode_files(folder, paths, 2, CacheSettings(tmp_path / "c", 1))
    assert isinstance(images, DiskImages) and images.file.offset > imagecache.HEADER_ALIGN
    assert images[:][:, 0, 0, 0].tolist() == [i % 256 for i in range(300)]


def test_each_size_has_its_own_cache(tmp_path: Path) -> None:
    paths = _images(tmp_path / "imgs", 3)
    settings = CacheSettings(tmp_path / "c", 1)
    a, _ = decode_files(tmp_path / "imgs", paths, 4, settings)
    b, _ = decode_files(tmp_path / "imgs", paths, 8, settings)
    assert a.shape[-1] == 4 and b.shape[-1] == 8
    assert cache_path(tmp_path / "c", tmp_path / "imgs", 4).is_file()
    assert cache_path(tmp_path / "c", tmp_path / "imgs", 8).is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "version"])
def test_a_corrupt_or_foreign_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    paths = _images(tmp_path / "imgs", 4)
    settings = CacheSettings(tmp_path / "c", 1)
    good, _ = decode_files(tmp_path / "imgs", paths, 5, settings)
    expected = good[:]
    del good
    target = cache_path(tmp_path / "c", tmp_path / "imgs", 5)
    raw = target.read_bytes()
    if damage == "garbage":
        target.write_bytes(b"\x00garbage" * 10)
    elif damage == "truncated":
        target.write_bytes(raw[:-7])
    else:
        monkeypatch.setattr(imagecache, "CACHE_VERSION", imagecache.CACHE_VERSION + 1)
    with pytest.warns(UserWarning, match=r"is corrupt or was written by another version"):
        again, _ = decode_files(tmp_path / "imgs", paths, 5, settings)
    assert torch.equal(again[:], expected)
    header_length = int.from_bytes(
        target.read_bytes()[len(imagecache.MAGIC) : len(imagecache.MAGIC) + 8], "little"
    )
    start = len(imagecache.MAGIC) + 8
    header = json.loads(target.read_bytes()[start : start + header_length])
    assert header["version"] == imagecache.CACHE_VERSION and header["rows"] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_falls_back_to_memory(tmp_path: Path) -> None:
    paths = _images(tmp_path / "imgs", 3)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.warns(UserWarning, match=r"cannot write .*decoding the images into memory"):
            images, _ = decode_files(tmp_path / "imgs", paths, 5, CacheSettings(folder, 1))
    finally:
        folder.chmod(0o700)
    assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 5, 5)


def test_a_cache_that_cannot_be_written_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk (ENOSPC) while the rows are written, whoever runs the test.
    paths = _images(tmp_path / "imgs", 3)

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imagecache, "_copy_rows", full)
    with pytest.warns(UserWarning, match=r"no space left.*into memory instead"):
        images, status = decode_files(tmp_path / "imgs", paths, 5, CacheSettings(tmp_path / "c"))
    assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 5, 5)
    assert all(s is not None for s in status)
    assert list((tmp_path / "c").iterdir()) == []  # no temporary left


def test_an_interrupted_build_keeps_the_old_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images(tmp_path / "imgs", 4)
    settings = CacheSettings(tmp_path / "c", 1)
    decode_files(tmp_path / "imgs", paths[:2], 5, settings)
    target = cache_path(tmp_path / "c", tmp_path / "imgs", 5)
    before = target.read_bytes()

    def interrupted(job: tuple[str, int]) -> tuple[np.ndarray | None, bool]:
        raise KeyboardInterrupt

    monkeypatch.setattr(imagecache, "_decode_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_files(tmp_path / "imgs", paths, 5, settings)
    assert target.read_bytes() == before
    assert [p.name for p in (tmp_path / "c").iterdir()] == [target.name]


def test_workers_decode_what_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images(tmp_path / "imgs", 20)
    monkeypatch.setattr(imagecache, "PARALLEL_FROM", 1)
    calls: list[tuple[str, int, int]] = []
    progress = CacheSettings(None, 2, lambda d, done, total: calls.append((d, done, total)))
    parallel, s_par = decode_files(tmp_path / "imgs", paths, 6, progress, what="20 images")
    serial, s_ser = decode_files(tmp_path / "imgs", paths, 6, CacheSettings(None, 1))
    assert torch.equal(parallel[:], serial[:]) and s_par == s_ser
    desc = "decoding 20 images into the image cache"
    assert calls[0] == (desc, 0, 20) and calls[-1] == (desc, 20, 20)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        CacheSettings(None, 0)


def test_statistics_of_a_large_set_on_disk_come_from_an_even_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _images(tmp_path / "imgs", 12)
    memory, _ = decode_files(tmp_path / "imgs", paths, 6, CacheSettings(None, 1))
    disk, _ = decode_files(tmp_path / "imgs", paths, 6, CacheSettings(tmp_path / "c", 1))
    assert isinstance(disk, DiskImages) and isinstance(memory, torch.Tensor)
    # at most STATS_SAMPLE rows: every row, as in memory
    whole = sets._channel_stats(memory)
    assert sets._channel_stats(disk) == whole
    monkeypatch.setattr(sets, "STATS_SAMPLE", 4)
    sample = sets._channel_stats(disk)
    assert sample == sets._channel_stats(memory[[0, 4, 7, 11]])  # evenly spaced, ends included
    assert sample != whole
    assert sets._channel_stats(memory) == whole  # images in memory are measured whole
