"""The one home of file writes and ``.npz`` reads (:mod:`tripletlab.io`): a failed write is
one :class:`WriteError` line naming the file and the fix and leaves the old file and no
temporary; temporaries of killed writes are removed, never those still being written;
``.npz`` archives are read without unpickling, with reasons of our own wording."""

from __future__ import annotations

import errno
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tripletlab.io import (
    FRESH_S,
    NpzError,
    WriteError,
    atomic_path,
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_bytes,
    load_npz,
    remove_stale_temporaries,
    temporary_path,
    write_errors,
)

WRITERS = {
    "bytes": lambda p: atomic_write_bytes(p, b"new"),
    "npz": lambda p: atomic_save_npz(p, {"a": np.arange(3)}),
    "torch": lambda p: atomic_torch_save({"a": torch.ones(2)}, p),
}


def fail(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> None:
    """Make ``os.<name>`` (``open`` or ``replace``) raise ``OSError(code)`` for temporaries."""
    real = getattr(os, name)

    def failing(*args: object, **kwargs: object) -> object:
        if str(args[0]).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("open", errno.EROFS, "read-only file system; write to a writable folder"),
        ("replace", errno.ENOSPC, "no space left on the device; free some space"),
        ("replace", errno.EFBIG, "file too large for its file system; write to a file system"),
        ("open", errno.EACCES, "permission denied; write to a folder you may write to"),
        ("open", errno.EDQUOT, "disk quota exceeded; free some space"),
        ("replace", errno.EIO, "Input/output error; choose another path"),
    ],
)
def test_a_failed_write_is_one_line_and_leaves_the_old_file(
    writer: str,
    name: str,
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    fail(monkeypatch, name, code)
    with pytest.raises(WriteError) as excinfo:
        WRITERS[writer](path)
    text = str(excinfo.value)
    assert text.startswith(f"cannot write {path}: ") and message in text
    assert "\n" not in text and ".tmp" not in text
    assert isinstance(excinfo.value, ValueError) and excinfo.value.errno == code
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_really_full_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes go to /dev/full, where every write fails with ENOSPC (the temporary itself is
    created, then removed): the error comes from the kernel, not from a stub."""
    real_open = os.open

    def to_dev_full(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".tmp") and not flags & os.O_CREAT:
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", to_dev_full)
    path = tmp_path / "e.npz"
    path.write_bytes(b"old")
    with pytest.raises(WriteError, match=r"cannot write .*e\.npz: no space left on the device"):
        atomic_save_npz(path, {"a": np.zeros(100_000)})
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]


def test_a_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError) as excinfo:
        atomic_write_bytes(blocker / "sub" / "a.png", b"new")
    assert str(excinfo.value) == (
        f"cannot create the folder {blocker / 'sub'} for {blocker / 'sub' / 'a.png'}: a file is "
        "in the way of its folder; move that file or choose another path"
    )
    with pytest.raises(WriteError, match="it is a folder; give a file name"):
        atomic_write_bytes(tmp_path, b"new")  # the target is a folder
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_write_errors_names_the_path_and_leaves_other_errors() -> None:
    with (
        pytest.raises(WriteError, match=r"^cannot write x\.onnx: no space left"),
        write_errors(Path("x.onnx")),
    ):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KeyError), write_errors(Path("x.onnx")):
        raise KeyError("not a write error")


def test_the_block_of_atomic_path_gets_an_empty_file(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.is_file() and tmp.stat().st_size == 0 and tmp.parent == tmp_path
        tmp.write_text("new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# ------------------------------------------------------------------- stale temporaries


def leftover(target: Path, age_s: float = 600.0) -> Path:
    """A temporary that a killed write of ``target`` left, changed ``age_s`` seconds ago."""
    tmp = temporary_path(target)
    tmp.write_bytes(b"partial")
    then = time.time() - age_s
    os.utime(tmp, (then, then))
    return tmp


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    old_a, old_b = leftover(tmp_path / "a.npz"), leftover(tmp_path / "b.pt")
    fresh = leftover(tmp_path / "c.npz", age_s=0.0)  # its writer may be about to lock it
    kept = [tmp_path / "notes.tmp", tmp_path / ".a.npz.xyz.tmp", tmp_path / "a.npz"]
    for p in kept:
        p.write_text("not ours")
    (tmp_path / ".d.npz.0123456789abcdef.tmp").mkdir()  # a folder: never removed
    assert remove_stale_temporaries(tmp_path, "a.npz") == [old_a]
    assert remove_stale_temporaries(tmp_path) == [old_b]
    assert fresh.exists() and all(p.exists() for p in kept)
    assert remove_stale_temporaries(tmp_path / "missing") == []
    assert remove_stale_temporaries(tmp_path / "a.npz") == []  # a file, not a folder


def test_a_temporary_being_written_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "a.npz"
    with atomic_path(target) as tmp:
        then = time.time() - 10 * FRESH_S
        os.utime(tmp, (then, then))  # old, but its writer holds the lock
        assert remove_stale_temporaries(tmp_path) == []
        assert tmp.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_a_write_removes_what_a_killed_write_of_its_target_left(tmp_path: Path) -> None:
    target = tmp_path / "a.npz"
    mine, other = leftover(target), leftover(tmp_path / "b.npz")
    atomic_write_bytes(target, b"new")
    assert not mine.exists() and other.exists()  # only the target's own
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "a.npz"]


# ---------------------------------------------------------------------------- load_npz


def test_load_npz_reads_every_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.arange(3), s=np.array(["a", "b"]))
    arrays = load_npz(tmp_path / "a.npz")
    assert sorted(arrays) == ["s", "x"] and arrays["x"].tolist() == [0, 1, 2]


def bad_npz(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("embeddings, labels\n1, 2\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"embeddings": [1.0]}))
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), np.arange(3))
        path.with_suffix(".npy").rename(path)
    elif kind == "objects":
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    elif kind == "truncated":
        np.savez(path, a=np.arange(100_000))
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", "not an array")
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "an empty file"),
        ("text", "not a zip of .npy arrays"),
        ("pickle", "not a zip of .npy arrays"),
        ("npy", "a single .npy array, not an .npz archive"),
        ("objects", "it holds pickled Python objects, which are never loaded"),
        ("truncated", "a damaged archive (BadZipFile"),
        ("zip", "its member 'a.txt' is not a .npy array"),
    ],
)
def test_load_npz_says_why_in_its_own_words(tmp_path: Path, kind: str, reason: str) -> None:
    with pytest.raises(NpzError) as excinfo:
        load_npz(bad_npz(tmp_path, kind))
    text = str(excinfo.value)
    assert reason in text and "\n" not in text
    assert "allow_pickle" not in text and "pickle.load" not in text  # no unsafe advice
