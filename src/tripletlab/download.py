"""Downloading a file from mirrors tried in order, verified by SHA-256: :func:`download_file`,
whose failures are one-line :class:`DownloadError` messages.

Each download goes to a temporary file in the destination's folder and only a verified one
replaces the destination (:func:`tripletlab.io.atomic_file`, then ``os.replace``), so nothing
already there is damaged by a failure and no file of the wrong bytes is ever left under the
destination's name. The data sets (:mod:`tripletlab.data`) and the pretrained weights
(:mod:`tripletlab.models`) download through it.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tripletlab.io import WriteError, atomic_file, write_errors

__all__ = ["MIN_PREFIX", "DownloadError", "download_file", "sha256_file"]

_DOWNLOAD_TIMEOUT_S = 60.0
#: The fewest hex digits a digest prefix may have (torch.hub's file names carry 8).
MIN_PREFIX = 8
_HEX = re.compile(r"[0-9a-f]+")


class DownloadError(ValueError):
    """A download that gave no verified file: one line naming each URL tried and why it
    failed (or the folder that cannot be written)."""


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest (lower case) of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Mismatch(Exception):
    """A mirror served bytes of another digest (what is written is discarded)."""


def download_file(urls: Sequence[str], dest: Path, sha256: str) -> Path:
    """Download ``dest`` from the first mirror that serves bytes with the given SHA-256.

    Each URL is streamed to a temporary file in ``dest``'s folder while hashing; only a file
    whose digest matches replaces ``dest`` (:func:`tripletlab.io.atomic_file`). A mirror that
    fails or serves other bytes is reported and the next one tried. ``file://`` URLs work
    too.

    Args:
        urls: mirrors, tried in order.
        dest: where the file goes; its folder is created. An existing ``dest`` that already
            has the expected digest is kept and nothing is fetched; any other existing ``dest``
            is left untouched unless a verified download replaces it.
        sha256: the expected hex digest (case-insensitive), or its first hex digits (at least
            :data:`MIN_PREFIX`): a file matches when its digest starts with them. The prefix
            form is torch.hub's check for the files whose names carry a digest's first
            digits (``resnet18-f37072fd.pth``), where the full digest is not published.

    Returns:
        ``dest``.

    Raises:
        DownloadError: if no URL gives the expected bytes (each failure named) or the folder
            cannot be written; no partial file is left behind.
        ValueError: ``sha256`` is not hex or shorter than :data:`MIN_PREFIX` digits.
    """
    dest = Path(dest)
    expected = sha256.lower()
    if not (_HEX.fullmatch(expected) and MIN_PREFIX <= len(expected) <= 64):
        raise ValueError(
            f"sha256 must be {MIN_PREFIX} to 64 hex digits (a digest or its start), got {sha256!r}"
        )
    if dest.is_file() and sha256_file(dest).startswith(expected):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create {dest.parent} ({err.strerror}); fix: choose a writable folder"
        ) from err
    failures: list[str] = []
    for url in urls:
        try:
            with atomic_file(dest) as out:  # replaces dest only when the digest matches
                digest = hashlib.sha256()
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        with write_errors(dest):  # a full disk is no mirror's fault
                            out.write(block)
                with write_errors(dest):
                    out.flush()
                    os.fsync(out.fileno())
                actual = digest.hexdigest()
                if not actual.startswith(expected):
                    raise _Mismatch(f"{url}: SHA-256 {actual}, expected {expected}")
            return dest
        except _Mismatch as err:
            failures.append(str(err))
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code}")
        except urllib.error.URLError as err:
            failures.append(f"{url}: {err.reason}")
        except WriteError as err:  # the same on every mirror: stop here
            raise DownloadError(str(err)) from err
        except (OSError, ValueError) as err:
            failures.append(f"{url}: {err}")
    if not urls:
        failures.append("no URL given")
    raise DownloadError(f"could not download {dest.name}: {'; '.join(failures)}")
