"""Files: the one home of the user cache folder (:func:`cache_dir`), of "temporary file beside
the target, then a rename" (atomic writes),
of the one-line error of a failed write (:class:`WriteError`), of the clean-up after writes
that were killed (:func:`remove_stale_temporaries`), of the safe reading of ``.npz``
archives (:func:`load_npz`) and of a file's digest (:func:`file_sha256`).

A reader sees the old file or the new one, never a part; a failed or interrupted write
leaves no temporary file behind (the temporary is removed on any exception, Ctrl-C
included). Every writer of the package (checkpoints, ``config.json``, embeddings and index
files, pictures, the report, ONNX models, downloads) goes through :func:`atomic_path`.

Temporary files are named ``.<name>.<random>.tmp`` in the target's folder, so the rename
never crosses a file system, and get the usual permissions (``0o666`` less the umask, where
``mkstemp`` would give ``0o600``). A process killed while writing (SIGKILL, the OOM killer,
a power cut) cannot remove its temporary: the next write of the same target does, and
:func:`remove_stale_temporaries` sweeps a whole folder (a run folder when training starts).
A writer holds a lock (``flock``) on its temporary while it lives, so a sweep never removes a
temporary that another process is still writing.

An ``OSError`` of a write (a read-only or full file system, a file too large, no permission,
a folder that cannot be created) becomes a :class:`WriteError`: a ``ValueError`` whose one
line names the file and the fix, which the CLI prints with exit status 2.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

if sys.platform != "win32":
    import fcntl

__all__ = [
    "FRESH_S",
    "UNLOCKED_STALE_S",
    "NpzError",
    "WriteError",
    "atomic_file",
    "atomic_path",
    "atomic_save_npz",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_npz",
    "remove_stale_temporaries",
    "temporary_path",
    "write_errors",
]

_O_BINARY = getattr(os, "O_BINARY", 0)
#: ``.<name>.<16 hex digits>.tmp``, as :func:`temporary_path` names them.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{16}\.tmp")
#: A temporary changed less than this many seconds ago is never removed: its writer may not
#: have locked it yet.
FRESH_S = 5.0
#: Where files cannot be locked (Windows, some network file systems), a temporary counts as
#: left by a killed write once it has not changed for this many seconds.
UNLOCKED_STALE_S = 3600.0

# errno name -> (what went wrong, the fix), for WriteError's message.
_REASONS = {
    "ENOSPC": ("no space left on the device", "free some space or write to another disk"),
    "EDQUOT": ("disk quota exceeded", "free some space or write to another disk"),
    "EFBIG": ("file too large for its file system", "write to a file system that takes it"),
    "EROFS": ("read-only file system", "write to a writable folder"),
    "EACCES": ("permission denied", "write to a folder you may write to"),
    "EPERM": ("permission denied", "write to a folder you may write to"),
    "EISDIR": ("it is a folder", "give a file name"),
    "ENOTEMPTY": ("it is a folder", "give a file name"),
    "ENOTDIR": ("a file is in the way of its folder", "move that file or choose another path"),
    "EEXIST": ("a file is in the way of its folder", "move that file or choose another path"),
    "ENAMETOOLONG": ("the name is too long", "choose a shorter path"),
}


def cache_dir() -> Path:
    """The user cache, ``$XDG_CACHE_HOME/tripletlab`` (``~/.cache/tripletlab`` when unset).

    A relative ``$XDG_CACHE_HOME`` is ignored, as the XDG base directory spec asks.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tripletlab"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]


class WriteError(ValueError):
    """A file that could not be written; the one-line message names it and the fix.

    A ``ValueError``, so that the CLI reports it like any bad input (exit status 2).

    Attributes:
        path: the file that was to be written.
        errno: the ``OSError``'s error number (``errno.ENOSPC``...), or ``None``.
    """

    def __init__(self, path: Path, err: OSError, *, folder: Path | None = None) -> None:
        name = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
        reason, fix = _REASONS.get(name, (err.strerror or _first_line(err), "choose another path"))
        what = f"create the folder {folder} for {path}" if folder is not None else f"write {path}"
        super().__init__(f"cannot {what}: {reason}; {fix}")
        self.path = path
        self.errno = err.errno


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """An ``OSError`` raised in the block becomes a :class:`WriteError` naming ``path``: for
    a writer's own writes into a temporary of :func:`atomic_path` (the other atomic writers
    need nothing more)."""
    try:
        yield
    except OSError as err:
        raise WriteError(Path(path), err) from err


def temporary_path(path: Path) -> Path:
    """A fresh name for a temporary file beside ``path`` (``.<name>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive lock on ``fd`` without waiting: ``True`` when taken, ``False`` when
    another open file holds it, ``None`` where files cannot be locked."""
    if sys.platform == "win32":
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP...: a file system without locks
        return None
    return True


def _create_locked(tmp: Path) -> int | None:
    """Create ``tmp`` (it must not exist); return a descriptor holding a lock on it, to be
    closed once it is renamed or removed, or ``None`` where nothing can be held (Windows
    renames no open file)."""
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
    if _try_lock(fd) is None:
        os.close(fd)
        return None
    return fd


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to fill (it exists, empty); on a clean
    exit it replaces ``path``, on an exception it is removed and ``path`` is left as it was.

    For writers that need a file name rather than a file object (a checker that reads the
    file back before it may replace the old one). The folder is created if needed, and the
    temporaries of ``path`` that killed writes left are removed first.

    Raises:
        WriteError: the folder cannot be created, the temporary cannot be created or cannot
            replace ``path``. An ``OSError`` of the block itself is the caller's (see
            :func:`write_errors`).
    """
    path = Path(path)
    remove_stale_temporaries(path.parent, path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(path, err, folder=path.parent) from err
    tmp = temporary_path(path)
    with write_errors(path):
        lock = _create_locked(tmp)
    try:
        yield tmp
        with write_errors(path):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """:func:`atomic_path` opened for binary writing: what the block writes replaces
    ``path`` on a clean exit; raising inside the block (say after a checksum mismatch)
    discards it::

        with atomic_file(dest) as f:
            f.write(data)

    Raises:
        WriteError: as :func:`atomic_path`, and when the buffered data cannot be written on
            closing. The block's own ``f.write`` raises ``OSError`` (wrap it in
            :func:`write_errors` when the block does nothing else).
    """
    with atomic_path(path) as tmp:
        with write_errors(path):
            f = os.fdopen(os.open(tmp, os.O_WRONLY | _O_BINARY), "wb")
        try:
            yield f
        except BaseException:
            with suppress(OSError):
                f.close()
            raise
        with write_errors(path):
            f.close()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`); returns ``path``.

    Raises:
        WriteError: the file cannot be written; ``path`` is left as it was.
    """
    with atomic_file(path) as f, write_errors(path):
        f.write(data)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: Path) -> Path:
    """``torch.save`` straight into the temporary file (the checkpoint is never held in
    memory a second time), then the rename; returns ``path``."""
    with atomic_file(path) as f, write_errors(path):
        torch.save(obj, f)
    return path


def atomic_save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` straight into the temporary file (the archive is never
    held in memory), then the rename; returns ``path`` (no ``.npz`` suffix is added).

    Raises:
        WriteError: the file cannot be written; ``path`` is left as it was.
    """
    with atomic_file(path) as f, write_errors(path):
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes as hex, read ``chunk`` bytes at a time (a checkpoint is
    never held in memory whole).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder``; return them.

    Only files named as :func:`temporary_path` names them (``.<name>.<16 hex digits>.tmp``)
    directly in ``folder`` are considered, those of the target ``name`` when it is given.
    :func:`atomic_path` calls this for its target; call it on a folder that only tripletlab
    writes (a run folder, its ``checkpoints``) before writing into it.

    Corner cases: a temporary that a running writer holds locked is kept, and so is one
    changed in the last :data:`FRESH_S` seconds; where files cannot be locked a temporary is
    removed only once unchanged for :data:`UNLOCKED_STALE_S`. A missing or unreadable folder,
    and a temporary that cannot be removed, are passed over in silence (the write that
    follows reports a folder it cannot write).
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        m = _TEMPORARY.fullmatch(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        path = Path(entry.path)
        with suppress(OSError):
            if entry.is_file(follow_symlinks=False) and _stale(path):
                path.unlink()
                removed.append(path)
    return removed


def _stale(path: Path) -> bool:
    """Whether the temporary ``path`` was left by a killed write (see
    :func:`remove_stale_temporaries`)."""
    fd = os.open(path, os.O_RDWR | _O_BINARY)  # writable: NFS locks need it
    try:
        info = os.fstat(fd)
        age = time.time() - info.st_mtime
        if not stat.S_ISREG(info.st_mode) or age < FRESH_S:
            return False
        locked = _try_lock(fd)
        return locked is True or (locked is None and age >= UNLOCKED_STALE_S)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- reading

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip's end


class NpzError(ValueError):
    """An ``.npz`` archive that cannot be read safely. The message is a short reason without
    the file's name (the caller names the file and the fix) and never numpy's own text, which
    suggests loading with ``allow_pickle``."""


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``path`` by name, read with
    ``allow_pickle=False``: loading a file never runs code.

    Raises:
        NpzError: the file cannot be read, is empty, is not a zip of ``.npy`` arrays (a
            single ``.npy``, a pickle, text), holds a member that is not an array or an
            object array (pickled Python objects, never loaded), or is damaged.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as err:
        raise NpzError(f"cannot be read: {err.strerror or _first_line(err)}") from None
    if not head:
        raise NpzError("an empty file")
    if head.startswith(_NPY_MAGIC):
        raise NpzError("a single .npy array, not an .npz archive of named arrays")
    if not head.startswith(_ZIP_MAGICS):
        raise NpzError("not a zip of .npy arrays")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise NpzError("it holds pickled Python objects, which are never loaded") from None
        raise NpzError(f"a damaged archive ({_first_line(err)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise NpzError(f"a damaged archive ({type(err).__name__}: {_first_line(err)})") from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise NpzError(f"its member {k!r} is not a .npy array")
    return arrays
