"""The README's code runs as written: every ```python block, and every command of its
```bash blocks on a fresh clone after the Quickstart's two `make` commands.

Fast: each Python block runs on its own (so each is self-contained), every command's flags
parse, and every run folder or file a command reads is written by an earlier one. Slow: the
commands run one after the other in a scratch folder, on tiny data (:func:`tiny`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
from conftest import ExportedModel
from PIL import Image

from tripletlab.cli import build_parser, main
from tripletlab.embeddingfile import load_embeddings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: What the Quickstart runs first; the other commands assume it (and are tested without it).
SETUP = ("make train", "make test")


def code_blocks(language: str) -> list[str]:
    """The README's ```language blocks, in order."""
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def python_blocks(*, onnx: bool) -> list[str]:
    """The README's ```python blocks: those that run an ONNX file (``onnx``), or the others."""
    return [b for b in code_blocks("python") if ("onnxruntime" in b) == onnx]


def bash_commands() -> list[str]:
    """Every command of the README's ```bash blocks, in order, comments left out, without
    the Quickstart's set-up (:data:`SETUP`)."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and not any(line.startswith(s) for s in SETUP):
                commands.append(shlex.join(words))
    return commands


def tripletlab_args(command: str) -> list[str] | None:
    """The arguments of the ``tripletlab`` program in a command (also under ``torchrun ...
    -m tripletlab``), or None when the command runs another program."""
    words = shlex.split(command)
    if words[0] == ".venv/bin/tripletlab":
        return words[1:]
    if words[0] == ".venv/bin/torchrun":
        at = words.index("-m")
        assert words[at + 1] == "tripletlab", command
        return words[at + 2 :]
    return None


# ------------------------------------------------------------------------------ fast


def test_readme_python_blocks_run_each_on_its_own() -> None:
    blocks = python_blocks(onnx=False)
    assert len(blocks) >= 3
    for block in blocks:
        namespace: dict[str, object] = {}  # nothing carried over from the block before
        exec(compile(block, str(README), "exec"), namespace)
        assert "torch" in namespace


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
        assert argv[0] == ".venv/bin/tripletlab", line
        argv = argv[1:] + (["--amp", "off", "--quiet"] if argv[1] == "train" else [])
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, (line, err)
        outputs.append(out)
    queries = len(load_embeddings(tmp_path / "digits-queries.npz"))
    lines = block.strip().splitlines()
    matched = [o for o, line in zip(outputs, lines, strict=True) if " match " in line]
    assert len(matched) == 2
    for out in matched:
        rows = out.strip().splitlines()
        assert rows[0].split() == ["query", "answer", "nearest", "distance"]
        assert len(rows) == 1 + queries + 1 and f"of {queries} queries matched" in rows[-1]
    assert (tmp_path / "digits-grid.png").is_file()


def test_readme_commands_use_the_venv_and_parse(capsys: pytest.CaptureFixture[str]) -> None:
    commands = bash_commands()
    assert len(commands) >= 15
    for command in commands:
        assert command.startswith(".venv/bin/"), command  # one convention, said once
        args = tripletlab_args(command)
        if args is None:
            continue
        if "-h" in args:
            with pytest.raises(SystemExit) as exit_:
                build_parser().parse_args(args)
            assert exit_.value.code == 0, command
        else:
            assert build_parser().parse_args(args).command, command
    capsys.readouterr()


#: Flags whose value a command writes; the other paths it names must exist before it runs.
WRITES = {"--out", "--onnx", "--grid", "--plot"}
PATHS = re.compile(r"^(runs/[\w.-]+|[\w.-]+\.(npz|onnx|png))$")


def test_readme_commands_read_what_earlier_ones_wrote() -> None:
    written: set[str] = set()
    for command in bash_commands():
        words = shlex.split(command)
        outputs = {v for f, v in itertools.pairwise(words) if f in WRITES}
        for word in words:
            if PATHS.match(word) and word not in outputs:
                assert word in written, f"{command!r} reads {word}, which no command before wrote"
        written |= outputs
    assert "model.onnx" in written  # the ONNX Runtime example's file


def test_readme_queries_are_not_in_the_gallery() -> None:
    """The search example's queries and the index it searches come from different splits,
    so that no query finds itself."""
    split_of: dict[str, str] = {}  # embeddings file -> the split embed wrote into it
    gallery: dict[str, str] = {}  # index file -> the embeddings file it indexes
    pairs = []
    for command in bash_commands():
        args = tripletlab_args(command) or []
        if args[:1] == ["embed"]:
            ns = build_parser().parse_args(args)
            split_of[ns.out] = ns.split if ns.dataset is None else f"{ns.dataset}:{ns.split}"
        elif args[:2] == ["index", "build"]:
            ns = build_parser().parse_args(args)
            gallery[ns.out] = ns.embeddings
        elif args[:1] == ["search"]:
            ns = build_parser().parse_args(args)
            pairs.append((split_of[gallery[ns.index]], split_of[ns.embeddings]))
    assert pairs and set(pairs) == {("train", "test")}


# ------------------------------------------------------------------------------ slow


def tiny(command: str) -> str:
    """``command`` on tiny data: training on digits (``--dataset digits`` for the built-in
    sets, image folders kept) for one epoch with 100 validation images and bfloat16 off;
    other commands on digits where they name another dataset; ``.venv/bin/`` is the bin
    folder of the Python running the tests."""
    words = shlex.split(command)
    words = ["digits" if w in ("fashion-mnist", "mnist") else w for w in words]
    args = tripletlab_args(command)
    if args and args[0] == "train" and "-h" not in args and "--resume" not in args:
        if "--dataset" not in words:
            words += ["--dataset", "digits"]
        words += ["--epochs", "1", "--val-size", "100", "--amp", "off"]
    venv = Path(sys.executable).parent
    words = [
        str(venv / w.removeprefix(".venv/bin/")) if w.startswith(".venv/bin/") else w for w in words
    ]
    return shlex.join(words)  # imagefolder:~/photos: the loader expands ~, not bash


def make_photos(folder: Path) -> None:
    """An image folder as the README's ``~/photos``: 3 classes of 10 small colour images."""
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(10):
            shade = tuple(min(255, v + 5 * i) for v in colour)
            Image.new("RGB", (20, 20), shade).save(folder / f"class{c}" / f"{i}.jpg")


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every README command, in order, from a folder laid out as the repository root (its
    ``benchmarks/``), with ``~`` a scratch home holding ``photos/``; then the ONNX Runtime
    example on the exported ``model.onnx``."""
    pytest.importorskip("faiss", reason="the README's HNSW index needs faiss (the [faiss] extra)")
    pytest.importorskip("onnxruntime", reason="the README's export needs the [onnx] extra")
    bin_dir = Path(sys.executable).parent
    for program in ("tripletlab", "torchrun"):
        if not (bin_dir / program).is_file():
            pytest.skip(f"no {program} beside {sys.executable}; install tripletlab into it")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    home = tmp_path / "home"
    make_photos(home / "photos")
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT / "src"))  # this checkout's
    env["MPLCONFIGDIR"] = matplotlib.get_cachedir()  # its font cache, not a new one per HOME
    for command in bash_commands():
        shell = tiny(command)
        proc = subprocess.run(
            ["bash", "-c", shell],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"{command}\n  ran as: {shell}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
    for out in ("runs/fmnist", "runs/mnist", "runs/unseen"):
        assert (tmp_path / out / "checkpoints" / "best.pt").is_file(), out
    evaluated = json.loads((tmp_path / "runs" / "unseen" / "evaluation.json").read_text())
    assert {"seen", "unseen"} <= set(evaluated)
    (block,) = python_blocks(onnx=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert namespace["embeddings"].shape[0] == 8  # type: ignore[attr-defined]
