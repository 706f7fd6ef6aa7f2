"""The decoded-image cache: the images of an image folder, csv table or benchmark decoded once
at a resolution (:func:`~tripletlab.data.decode.decode_image`), by several processes, into one
uint8 file that runs, ``evaluate``, ``embed`` and ``plot`` read rows of on demand
(:class:`DiskImages`), so memory stays bounded whatever the number of images.

A cache file holds the images under one folder (the image folder, the table's folder, the
benchmark's folder) at one size, ``<cache>/<hash of the folder>-<size>px.tlimg``::

    MAGIC | header length (uint64, little-endian) | header (JSON, then spaces up to a
    multiple of HEADER_ALIGN bytes from the start) | rows: (R, 3, size, size) uint8,
    channel-first; a grey image's three channels are equal

The header lists every file decoded so far, keyed by its absolute path, byte size and
modification time (ns): ``[path, bytes, mtime_ns, row, colour]``, with ``row`` -1 for a file
that could not be read (not decoded again until it changes). A file whose size or time
changed, or that is new, is decoded again; the rows of the others are reused, copied into the
new file. Files are written through a temporary and a rename (:mod:`tripletlab.io`), so a
reader sees the old cache or the new one; a process reading the old one keeps its open file.
A file of another :data:`CACHE_VERSION`, a corrupt or truncated one is rebuilt with one
warning. Where the cache folder cannot be written (read-only, full), the images are decoded
into memory with one warning, so the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from tripletlab.checks import printable
from tripletlab.data.decode import decode_image
from tripletlab.data.errors import DataError
from tripletlab.io import WriteError, atomic_file, cache_dir, write_errors

#: ``progress(description, done, total)``: a call with ``done == 0`` starts a task, one with
#: ``done == total`` ends it (the CLI draws one progress bar per task).
Progress = Callable[[str, int, int], None]

#: Bumped whenever decoding or the file layout changes: a cache of another version is rebuilt.
CACHE_VERSION = 1
MAGIC = b"TRIPLETLAB-IMAGES\n"
#: Rows start at a multiple of this many bytes.
HEADER_ALIGN = 4096
SUFFIX = ".tlimg"
#: Fewer images than this are decoded in this process (starting workers costs more).
PARALLEL_FROM = 256
_LENGTH = struct.Struct("<Q")
#: What :class:`DiskImages` can be indexed with, as a tensor can.
Index = int | slice | Tensor | Sequence[int]


def default_image_cache() -> Path:
    """The cache folder by default: ``$TRIPLETLAB_IMAGE_CACHE`` when set, else ``images`` in
    the user cache (:func:`~tripletlab.io.cache_dir`)."""
    override = os.environ.get("TRIPLETLAB_IMAGE_CACHE", "")
    return Path(override).expanduser() if override else cache_dir() / "images"


def default_workers() -> int:
    """The decoding processes by default: the CPUs this process may use, at most 16."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


@dataclass(frozen=True)
class CacheSettings:
    """Where and how images are decoded.

    Attributes:
        folder: the cache folder; ``None`` decodes into memory (no file written).
        workers: decoding processes, >= 1.
        progress: reports ``("decoding <what>", done, total)`` while images are decoded.
    """

    folder: Path | None
    workers: int = field(default_factory=default_workers)
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise DataError(f"workers must be >= 1, got {self.workers}")


class _CacheFile:
    """An open cache file: its rows start at ``offset``; ``build`` names this write of it."""

    def __init__(self, path: Path, offset: int, size: int, rows: int, build: str) -> None:
        self.path = path
        self.offset = offset
        self.size = size
        self.rows = rows
        self.build = build
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "fd"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Reopen by name in another process; the file must be the same write of it."""
        self.__dict__.update(state)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        header = _read_header(self.fd)
        if header is None or header[0].get("build") != self.build:
            os.close(self.fd)
            raise DataError(
                f"the image cache {printable(str(self.path))} was rewritten while in use; fix: "
                "run again"
            )

    def read(self, buffer: memoryview, row: int) -> None:
        """Fill ``buffer`` from the start of ``row``."""
        offset = self.offset + row * 3 * self.size * self.size
        while len(buffer):
            got = os.preadv(self.fd, [buffer], offset)
            if got == 0:
                raise DataError(
                    f"the image cache {printable(str(self.path))} is truncated; fix: delete it "
                    "and run again"
                )
            buffer, offset = buffer[got:], offset + got


class DiskImages:
    """(N, C, size, size) uint8 images, rows of a cache file read when indexed.

    Indexing as a tensor is indexed (an int, a slice, an integer tensor of any shape, a
    list of ints or a (N,) bool mask) returns an in-memory uint8 tensor; :meth:`take`
    returns another :class:`DiskImages` (no pixels read). ``C`` is 3, or 1 for a set of grey
    images (the first channel of each row).
    """

    def __init__(self, file: _CacheFile, rows: Tensor, channels: int) -> None:
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        self.file = file
        self.rows = rows.to(torch.int64).contiguous()  # (N,) rows of the file
        self.channels = channels

    @property
    def shape(self) -> torch.Size:
        s = self.file.size
        return torch.Size((len(self), self.channels, s, s))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def _index(self, key: Index) -> Tensor:
        if isinstance(key, slice):
            return self.rows[key]
        if isinstance(key, Tensor) and key.dtype == torch.bool:
            if key.shape != self.rows.shape:
                raise IndexError(f"a mask of shape {tuple(key.shape)} for {len(self)} images")
            return self.rows[key.cpu()]
        if isinstance(key, Tensor):
            return self.rows[key.cpu().to(torch.int64)]
        if isinstance(key, int):
            return self.rows[key : key + 1 if key != -1 else None]
        return self.rows[torch.as_tensor(key, dtype=torch.int64)]

    def take(self, key: Index) -> DiskImages:
        """The images ``key`` picks, still on disk."""
        return DiskImages(self.file, self._index(key), self.channels)

    def with_channels(self, channels: int) -> DiskImages:
        """The same images with 1 (grey: the first channel) or 3 channels."""
        return DiskImages(self.file, self.rows, channels)

    def __getitem__(self, key: Index) -> Tensor:
        if isinstance(key, int) and not -len(self) <= key < len(self):
            raise IndexError(f"image {key} of {len(self)}")
        rows = self._index(key)
        out = self.read(rows.reshape(-1))  # (n, C, S, S)
        if isinstance(key, int):
            return out[0]
        return out.view(*rows.shape, *out.shape[1:])  # an index of any shape, as tensors do

    def __iter__(self) -> Iterator[Tensor]:
        """Each image, (C, size, size), read 256 at a time."""
        for start in range(0, len(self), 256):
            yield from self[start : start + 256]

    def read(self, rows: Tensor) -> Tensor:
        """The file's ``rows`` ((n,) int64) as (n, C, size, size) uint8; runs of consecutive
        rows are read in one call when all three channels are wanted."""
        s, c = self.file.size, self.channels
        out = np.empty((rows.shape[0], c, s, s), dtype=np.uint8)
        flat = memoryview(out.reshape(-1))  # type: ignore[arg-type]
        per = c * s * s
        r = rows.numpy()
        i = 0
        while i < len(r):
            j = i + 1
            if c == 3:
                while j < len(r) and r[j] == r[j - 1] + 1:
                    j += 1
            self.file.read(flat[i * per : j * per], int(r[i]))
            i = j
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"DiskImages({tuple(self.shape)}, {printable(str(self.file.path))})"


def _read_header(fd: int) -> tuple[dict[str, Any], int] | None:
    """The header of an open cache file and the offset of its rows, or None if it is not a
    cache file of this version."""
    try:
        start = os.pread(fd, len(MAGIC) + _LENGTH.size, 0)
        if len(start) < len(MAGIC) + _LENGTH.size or start[: len(MAGIC)] != MAGIC:
            return None
        (length,) = _LENGTH.unpack(start[len(MAGIC) :])
        if length > 1 << 34:
            return None
        raw = os.pread(fd, length, len(MAGIC) + _LENGTH.size)
        header = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("version") != CACHE_VERSION:
        return None
    offset = -(-(len(MAGIC) + _LENGTH.size + length) // HEADER_ALIGN) * HEADER_ALIGN
    return header, offset


@dataclass
class _Existing:
    """A valid cache file's entries ``{path: (bytes, mtime_ns, row, colour)}``."""

    file: _CacheFile | None = None
    entries: dict[str, tuple[int, int, int, bool]] = field(default_factory=dict)


def _open_existing(path: Path, size: int) -> _Existing:
    """The cache at ``path`` if it is a whole cache of ``size`` of this version; an empty one
    (with a warning when a file is there but unusable) otherwise."""
    if not path.is_file():
        return _Existing()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return _Existing()
    try:
        found = _read_header(fd)
        length = os.fstat(fd).st_size
    finally:
        os.close(fd)
    try:
        if found is None:
            raise ValueError("not a cache file of this version")
        header, offset = found
        rows = int(header["rows"])
        if int(header["size"]) != size or length != offset + rows * 3 * size * size:
            raise ValueError("another size, or truncated")
        entries = {str(p): (int(b), int(t), int(r), bool(c)) for p, b, t, r, c in header["entries"]}
        if not all(-1 <= e[2] < rows for e in entries.values()):
            raise ValueError("a row out of range")
        file = _CacheFile(path, offset, size, rows, str(header["build"]))
    except (KeyError, TypeError, ValueError, OSError):
        warnings.warn(
            f"the image cache {printable(str(path))} is corrupt or was written by another "
            "version of tripletlab; decoding the images again",
            stacklevel=5,
        )
        return _Existing()
    return _Existing(file, entries)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_row(job: tuple[str, int]) -> tuple[npt.NDArray[np.uint8] | None, bool]:
    """One file as a (3, size, size) row and whether it is colour; (None, False) if
    unreadable. Runs in the worker processes."""
    path, size = job
    array = decode_image(Path(path), size)
    if array is None:
        return None, False
    if array.ndim == 2:
        return np.broadcast_to(array, (3, size, size)).copy(), False
    return np.ascontiguousarray(array.transpose(2, 0, 1)), True  # (3, size, size)


def _decoded(
    paths: Sequence[str], size: int, settings: CacheSettings, what: str
) -> Iterator[tuple[npt.NDArray[np.uint8] | None, bool]]:
    """:func:`_decode_row` of each path, in order, by ``settings.workers`` processes when
    there are at least :data:`PARALLEL_FROM`; progress reported as ``decoding <what>``."""
    desc = f"decoding {what} into the image cache"
    progress = settings.progress
    if progress is not None:
        progress(desc, 0, len(paths))
    jobs = [(p, size) for p in paths]
    step = max(1, len(paths) // 100)
    if settings.workers > 1 and len(paths) >= PARALLEL_FROM:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ProcessPoolExecutor(
            settings.workers, mp_context=context, initializer=_ignore_interrupts
        )
        try:
            chunk = max(1, min(64, len(jobs) // (4 * settings.workers)))
            results: Iterator[tuple[npt.NDArray[np.uint8] | None, bool]] = pool.map(
                _decode_row, jobs, chunksize=chunk
            )
            for done, result in enumerate(results, 1):
                if progress is not None and (done == len(jobs) or done % step == 0):
                    progress(desc, done, len(jobs))
                yield result
        finally:  # Ctrl-C or a failed write: drop the work not started
            pool.shutdown(wait=True, cancel_futures=True)
        return
    for done, job in enumerate(jobs, 1):
        result = _decode_row(job)
        if progress is not None and (done == len(jobs) or done % step == 0):
            progress(desc, done, len(jobs))
        yield result


def cache_path(folder: Path, root: Path, size: int) -> Path:
    """The cache file of the images under ``root`` at ``size``, in the cache ``folder``."""
    key = hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()
    return Path(folder) / f"{key[:24]}-{size}px{SUFFIX}"


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _write_cache(
    path: Path,
    size: int,
    old: _Existing,
    keys: dict[str, tuple[int, int]],
    decoded: Iterator[tuple[npt.NDArray[np.uint8] | None, bool]],
    todo: Sequence[str],
) -> None:
    """Write the cache at ``path``: the old file's rows still current, then those of ``todo``
    (decoded in order by ``decoded``). The header goes first, so rows of unreadable files
    are known only at the end: the rows are written to the final offsets of a file whose
    header is padded to fit the longest possible one."""
    entries: dict[str, tuple[int, int, int, bool]] = {}
    for p, (b, t, r, c) in old.entries.items():
        if p not in keys or keys[p] == (b, t):  # unchanged, or not asked about now
            entries[p] = (b, t, r, c)
    reused = sorted({e[2] for e in entries.values() if e[2] >= 0})
    renumber = {r: i for i, r in enumerate(reused)}
    entries = {p: (b, t, renumber.get(r, -1), c) for p, (b, t, r, c) in entries.items()}
    row_bytes = 3 * size * size
    build = os.urandom(8).hex()

    def header(rows: int) -> bytes:
        listed = [[p, b, t, r, int(c)] for p, (b, t, r, c) in entries.items()]
        h = {"version": CACHE_VERSION, "size": size, "rows": rows, "build": build}
        return json.dumps(h | {"entries": listed}, separators=(",", ":")).encode()

    # room for the header once every file of todo has its row: the longest it can grow
    for p in todo:
        entries[p] = (*keys[p], 10**12, True)
    room = len(MAGIC) + _LENGTH.size + len(header(10**12))
    offset = -(-room // HEADER_ALIGN) * HEADER_ALIGN
    with atomic_file(path) as f, write_errors(path):
        f.seek(offset)
        _copy_rows(old.file, reused, f, row_bytes)
        rows = len(reused)
        for p, (row, colour) in zip(todo, decoded, strict=True):
            if row is None:
                entries[p] = (*keys[p], -1, False)
                continue
            f.write(memoryview(row.reshape(-1)))  # type: ignore[arg-type]
            entries[p] = (*keys[p], rows, colour)
            rows += 1
        raw = header(rows).ljust(offset - len(MAGIC) - _LENGTH.size)  # JSON ends in spaces
        f.seek(0)
        f.write(MAGIC + _LENGTH.pack(len(raw)) + raw)
        f.seek(offset + rows * row_bytes)
        f.truncate()


def _copy_rows(file: _CacheFile | None, rows: list[int], out: BinaryIO, row_bytes: int) -> None:
    """Append ``rows`` of ``file`` to ``out``, a few megabytes at a time."""
    if file is None or not rows:
        return
    buffer = bytearray(max(row_bytes, 1 << 22) // row_bytes * row_bytes)
    view = memoryview(buffer)
    per = len(buffer) // row_bytes
    i = 0
    while i < len(rows):
        j = i + 1
        while j < len(rows) and j - i < per and rows[j] == rows[j - 1] + 1:
            j += 1
        part = view[: (j - i) * row_bytes]
        file.read(part, rows[i])
        out.write(part)
        i = j


def decode_files(
    root: Path, paths: Sequence[Path], size: int, settings: CacheSettings, what: str = "images"
) -> tuple[Tensor | DiskImages, list[bool | None]]:
    """Decode ``paths`` (files under ``root``, at ``size``) through the cache.

    Args:
        root: the folder whose cache file holds them (see the module).
        paths: the image files, existing ones.
        size: the side of the square images.
        settings: the cache folder (``None``: decode into memory), workers and progress.
        what: names the images in the progress description.

    Returns:
        The readable files' images, in order, (R, 3, size, size) uint8 (a
        :class:`DiskImages`, or an in-memory tensor when there is no cache folder or it
        cannot be written); and for each of ``paths`` whether it is colour, or None if it
        could not be read.
    """
    if settings.folder is None:
        return _in_memory([str(p) for p in paths], size, settings, what)
    names = [os.path.abspath(p) for p in paths]
    keys = {n: _stat(n) or (-1, -1) for n in names}
    target = cache_path(settings.folder, root, size)
    old = _open_existing(target, size)
    todo = list(dict.fromkeys(n for n in names if old.entries.get(n, (-2, -2))[:2] != keys[n]))
    if todo or old.file is None:
        try:
            _write_cache(target, size, old, keys, _decoded(todo, size, settings, what), todo)
        except WriteError as err:
            warnings.warn(
                f"{err}; decoding the images into memory instead (--cache-dir chooses the folder)",
                stacklevel=3,
            )
            return _in_memory(names, size, settings, what)
        del old
        old = _open_existing(target, size)
        if old.file is None:
            raise DataError(f"the image cache {printable(str(target))} could not be read back")
    status = [None if old.entries[n][2] < 0 else old.entries[n][3] for n in names]
    rows = torch.tensor([old.entries[n][2] for n in names if old.entries[n][2] >= 0])
    return DiskImages(old.file, rows.to(torch.int64), 3), status


def _in_memory(
    paths: Sequence[str], size: int, settings: CacheSettings, what: str
) -> tuple[Tensor, list[bool | None]]:
    rows: list[npt.NDArray[np.uint8]] = []
    status: list[bool | None] = []
    for row, colour in _decoded(paths, size, settings, what):
        status.append(None if row is None else colour)
        if row is not None:
            rows.append(row)
    out = np.stack(rows) if rows else np.empty((0, 3, size, size), dtype=np.uint8)
    return torch.from_numpy(out), status
