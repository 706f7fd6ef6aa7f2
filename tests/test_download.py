"""Tests for tripletlab.download: mirrors tried in order, SHA-256 checks (whole digests and
torch.hub's digest prefixes), nothing half-written left behind.

Everything runs offline on files the tests write: ``file://`` URLs stand in for the mirrors,
and a server on 127.0.0.1 (``http_helpers.serve_folder``) for real HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import one_line_error, sha256
from http_helpers import serve_folder

from tripletlab.download import DownloadError, download_file


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
    with pytest.raises(DownloadError) as excinfo:
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
    with pytest.raises(DownloadError, match=r"could not download f\.gz"):
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
    with pytest.raises(DownloadError, match="no URL"):
        download_file([], tmp_path / "f.gz", sha256(b""))


def test_download_over_http_from_127_0_0_1(tmp_path: Path) -> None:
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "f.bin").write_bytes(b"over http")
    dest = tmp_path / "out" / "f.bin"
    with serve_folder(tmp_path / "served") as base:
        with pytest.raises(DownloadError, match=r"missing\.bin: HTTP 404"):
            download_file([base + "missing.bin"], dest, sha256(b"over http"))
        assert not dest.exists()
        urls = [base + "missing.bin", base + "f.bin"]
        assert download_file(urls, dest, sha256(b"over http")) == dest
    assert dest.read_bytes() == b"over http"


def test_download_checks_a_digest_prefix_as_torch_hub_does(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights")
    dest = tmp_path / "out" / "w.bin"
    assert download_file([src.as_uri()], dest, sha256(b"weights")[:8].upper()) == dest
    other = tmp_path / "out" / "v.bin"
    with pytest.raises(DownloadError) as excinfo:
        download_file([src.as_uri()], other, sha256(b"other")[:8])
    assert sha256(b"weights") in one_line_error(excinfo)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.bin"]  # nothing else kept


@pytest.mark.parametrize("digest", ["", "abc1234", "xyz12345", "0" * 65])
def test_download_refuses_a_digest_too_short_or_not_hex(tmp_path: Path, digest: str) -> None:
    with pytest.raises(ValueError, match="hex digits"):
        download_file([(tmp_path / "f").as_uri()], tmp_path / "f.gz", digest)
