"""The README's Python examples run as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import ExportedModel

from tripletlab.cli import main
from tripletlab.embeddingfile import load_embeddings

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


@pytest.mark.slow
def test_readme_match_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The digits example of the search section, command by command, as written (training
    pinned to --amp off, as every test that trains)."""
    (block,) = [
        b
        for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
        if "tripletlab match" in b and "tripletlab train" in b
    ]
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in block.strip().splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "tripletlab", line
        argv = argv[1:] + (["--amp", "off", "--quiet"] if argv[1] == "train" else [])
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, (line, err)
        outputs.append(out)
    queries = len(load_embeddings(tmp_path / "queries.npz"))
    lines = block.strip().splitlines()
    matched = [o for o, line in zip(outputs, lines, strict=True) if " match " in line]
    assert len(matched) == 2
    for out in matched:
        rows = out.strip().splitlines()
        assert rows[0].split() == ["query", "answer", "nearest", "distance"]
        assert len(rows) == 1 + queries + 1 and f"of {queries} queries matched" in rows[-1]
    assert (tmp_path / "grid.png").is_file()
