"""What every plot shares (tripletlab.plots._common): a PNG is written atomically, so that a
failed write leaves the old file and no temporary one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tripletlab.io import WriteError
from tripletlab.io import atomic_write_bytes as write_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.png"
    write_atomic(path, b"old")

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(WriteError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
