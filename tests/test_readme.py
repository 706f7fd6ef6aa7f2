"""The README's Python examples run as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import ExportedModel

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(*, onnx: bool) -> list[str]:
    """The README's ```python blocks: those that run an ONNX file (``onnx``), or the others."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if ("onnxruntime" in b) == onnx]


def test_readme_python_blocks_run() -> None:
    blocks = python_blocks(onnx=False)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert "loss" in namespace and "stats" in namespace


def test_readme_onnx_block_runs(
    small_onnx: ExportedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX Runtime example, on an exported file named as in the README."""
    (block,) = python_blocks(onnx=True)
    shutil.copy(small_onnx.path, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert namespace["embeddings"].shape == (8, 64)  # type: ignore[attr-defined]
    assert namespace["distances"].shape == (8, 8)  # type: ignore[attr-defined]
