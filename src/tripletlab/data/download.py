"""Downloading a file from mirrors tried in order, verified by SHA-256: :func:`download_file`.

Each download goes to a temporary file in the destination's folder and only a verified one
replaces the destination (``os.replace``), so nothing already there is damaged by a failure.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tripletlab.data.errors import DataError
from tripletlab.io import WriteError, atomic_file, write_errors

_DOWNLOAD_TIMEOUT_S = 60.0


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
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
        sha256: expected hex digest (case-insensitive).

    Returns:
        ``dest``.

    Raises:
        DataError: if no URL gives the expected bytes (each failure named) or the folder
            cannot be written; no partial file is left behind.
    """
    dest = Path(dest)
    expected = sha256.lower()
    if dest.is_file() and _sha256_file(dest) == expected:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create {dest.parent} ({err.strerror}); fix: choose a writable data folder"
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
                if actual != expected:
                    raise _Mismatch(f"{url}: SHA-256 {actual}, expected {expected}")
            return dest
        except _Mismatch as err:
            failures.append(str(err))
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code}")
        except urllib.error.URLError as err:
            failures.append(f"{url}: {err.reason}")
        except WriteError as err:  # the same on every mirror: stop here
            raise DataError(str(err)) from err
        except (OSError, ValueError) as err:
            failures.append(f"{url}: {err}")
    if not urls:
        failures.append("no URL given")
    raise DataError(f"could not download {dest.name}: {'; '.join(failures)}")
