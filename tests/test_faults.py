"""Faults, end to end through the CLI (issue 13, items 6 and 7): a file system that refuses a
write (read-only, full, a file too large, a folder that cannot be created), an output that is
one of the command's own inputs, and damaged inputs (``.npz`` files that are empty or not
archives, checkpoints that lack keys or hold weights of another shape).

Every case: exit status 2, exactly one line on stderr, ``tripletlab: error: ...`` naming the
file and the fix, no traceback, and nothing lost: the old file is unchanged and no temporary
is left beside it. Write faults are simulated by making :mod:`tripletlab.io`'s ``os.open``
(creating the temporary) or ``os.replace`` (renaming it onto the target) raise, since the
tests also run as root, for whom no folder is read-only; one case writes to ``/dev/full``,
where the kernel itself reports a full device.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from cli_helpers import run
from PIL import Image

from tripletlab.cli import main
from tripletlab.embeddingfile import EmbeddingFile, save_embeddings
from tripletlab.io import temporary_path

# A temporary of tripletlab.io: ".<target name>.<16 hex digits>.tmp".
TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{16}\.tmp")


def break_writes(monkeypatch: pytest.MonkeyPatch, code: int, at: str, suffix: str = "") -> None:
    """From now on, the writes of targets whose name ends with ``suffix`` fail with
    ``OSError(code)``: creating their temporary (``at="open"``) or renaming it onto the
    target (``at="replace"``). Every other call goes through."""
    real_open, real_replace = os.open, os.replace

    def broken(path: object) -> bool:
        m = TEMPORARY.fullmatch(Path(str(path)).name)
        return m is not None and m.group(1).endswith(suffix)

    def open_(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if at == "open" and broken(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def replace_(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if at == "replace" and broken(src):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace_)


def one_line(err: str) -> str:
    """The only line of stderr, checked to be an error without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error: ") and "Traceback" not in err
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.fullmatch(p.name)]


@pytest.fixture
def run_dir(digits_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained digits run, for commands that write into it (or must not)."""
    return Path(shutil.copytree(digits_run, tmp_path / "run"))


@dataclass(frozen=True)
class Files:
    embeddings: Path
    index: Path


@pytest.fixture
def files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Files:
    """An embeddings file of 12 PNG files in 2 classes (a grid can draw them), its index."""
    folder = tmp_path / "images"
    folder.mkdir()
    g = np.random.default_rng(0)
    paths = [str(folder / f"{i}.png") for i in range(12)]
    for p in paths:
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8)).save(p)
    y = torch.arange(12) % 2
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(0)) + 3.0 * y[:, None]
    data = EmbeddingFile(x, y, tuple(paths), ("even", "odd"))
    embeddings = save_embeddings(tmp_path / "e.npz", data)
    index = tmp_path / "i.npz"
    argv = ["index", "build", "--embeddings", str(embeddings), "--out", str(index)]
    assert run(argv, capsys)[0] == 0
    return Files(embeddings, index)


# ------------------------------------------------------------------ writes that fail


class Case(NamedTuple):
    argv: list[str]
    target: Path  # what must be left as it was
    named: Path  # the path the message names (the target, or the folder of its files)


def write_case(command: str, run_dir: Path, files: Files, tmp_path: Path) -> Case:
    """Each command writing one of its files."""
    r, e, i = str(run_dir), str(files.embeddings), str(files.index)
    out = tmp_path / {"calibrate --plot": "pr.png", "search --grid": "grid.png"}.get(command, "out")
    cases = {
        "embed": Case(["embed", r, "--out", str(out), "--split", "test", "--quiet"], out, out),
        "index build": Case(["index", "build", "--embeddings", e, "--out", str(out)], out, out),
        "calibrate": Case(["calibrate", i, "--embeddings", e], files.index, files.index),
        "calibrate --plot": Case(["calibrate", i, "--embeddings", e, "--plot", str(out)], out, out),
        "search --grid": Case(["search", i, "--embeddings", e, "--grid", str(out)], out, out),
        "evaluate --out": Case(
            ["evaluate", r, "--out", str(out), "--quiet", "--metrics", "retrieval"], out, out
        ),
        "export": Case(["export", r, "--onnx", str(out)], out, out),
        "plot": Case(
            ["plot", r, "--quiet", "--projections", "pca", "--train-items", "50"],
            run_dir / "report.html",
            run_dir / "pictures",
        ),
    }
    return cases[command]


@pytest.mark.parametrize(
    ("command", "code", "at", "reason"),
    [
        ("embed", errno.EROFS, "open", "read-only file system; write to a writable folder"),
        ("index build", errno.ENOSPC, "replace", "no space left on the device; free some"),
        ("calibrate", errno.EFBIG, "replace", "file too large for its file system"),
        ("calibrate --plot", errno.ENOSPC, "open", "no space left on the device"),
        ("search --grid", errno.EROFS, "replace", "read-only file system"),
        ("evaluate --out", errno.EDQUOT, "open", "disk quota exceeded; free some space"),
        ("export", errno.EFBIG, "replace", "file too large for its file system"),
        ("plot", errno.EROFS, "open", "read-only file system; write to a writable folder"),
    ],
)
def test_a_write_that_fails_is_one_line_and_loses_nothing(
    command: str,
    code: int,
    at: str,
    reason: str,
    run_dir: Path,
    files: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "export":
        pytest.importorskip("onnxruntime")
    case = write_case(command, run_dir, files, tmp_path)
    if not case.target.exists():
        case.target.write_bytes(b"old")
    before = case.target.read_bytes()
    # --plot and plot: only the PNGs fail (calibrate's index and the report could be written)
    break_writes(monkeypatch, code, at, ".png" if "plot" in command else "")
    status, _, err = run(case.argv, capsys)
    line = one_line(err)
    assert status == 2
    assert f"cannot write {case.named}" in line and reason in line, line
    assert case.target.read_bytes() == before
    assert temporaries(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_really_full_device(
    digits_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The embeddings go to /dev/full (the temporary is created, then written there)."""
    real_open = os.open

    def to_dev_full(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if TEMPORARY.fullmatch(Path(str(path)).name) and not flags & os.O_CREAT:
            return real_open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", to_dev_full)
    out = tmp_path / "e.npz"
    out.write_bytes(b"old")
    argv = ["embed", str(digits_run), "--out", str(out), "--split", "test", "--quiet"]
    status, _, err = run(argv, capsys)
    assert status == 2
    assert f"cannot write {out}: no space left on the device" in one_line(err)
    assert out.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_a_folder_that_cannot_be_created(
    run_dir: Path, files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_dir / "pictures").write_text("a file where plot puts its pictures")
    argv = ["plot", str(run_dir), "--quiet", "--projections", "pca", "--train-items", "50"]
    status, _, err = run(argv, capsys)
    line = one_line(err)
    assert status == 2 and f"cannot create the folder {run_dir / 'pictures'} for" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["index", "build", "--embeddings", str(files.embeddings)]
    status, _, err = run([*argv, "--out", str(blocker / "sub" / "i.npz")], capsys)
    assert status == 2 and f"({blocker} is not a folder); choose another --out" in one_line(err)


def test_temporaries_of_killed_writes_are_removed(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "index.npz"
    left = temporary_path(out)
    left.write_bytes(b"what a killed write left")
    then = time.time() - 600
    os.utime(left, (then, then))
    argv = ["index", "build", "--embeddings", str(files.embeddings), "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    assert not left.exists() and out.is_file()


# ------------------------------------------------------------- outputs that are inputs


def refusal(case: str, run_dir: Path, files: Files, tmp_path: Path) -> tuple[list[str], Path]:
    """``(argv, the input it names as output)``."""
    r, e, i = str(run_dir), str(files.embeddings), str(files.index)
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    if case == "index build --out = --embeddings":
        return ["index", "build", "--embeddings", e, "--out", e], files.embeddings
    if case == "index build --out = a hard link to --embeddings":
        os.link(files.embeddings, tmp_path / "link.npz")
        argv = ["index", "build", "--embeddings", str(tmp_path / "link.npz"), "--out", e]
        return argv, files.embeddings
    if case == "embed --out = the checkpoint":
        return ["embed", r, "--out", str(best), "--quiet"], best
    if case == "embed --out = a symbolic link to another checkpoint":
        (tmp_path / "ln.npz").symlink_to(last)
        return ["embed", r, "--out", str(tmp_path / "ln.npz"), "--quiet"], last
    if case == "export --onnx = a checkpoint":
        return ["export", r, "--onnx", str(last)], last
    if case == "evaluate --out = metrics.json":
        return ["evaluate", r, "--out", str(run_dir / "metrics.json")], run_dir / "metrics.json"
    if case == "evaluate --out = the checkpoint":
        return ["evaluate", str(best), "--out", str(best)], best
    if case == "calibrate --plot = the index":
        return ["calibrate", i, "--embeddings", e, "--plot", i], files.index
    if case == "search --grid = --embeddings":
        return ["search", i, "--embeddings", e, "--grid", e], files.embeddings
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "index build --out = --embeddings",
        "index build --out = a hard link to --embeddings",
        "embed --out = the checkpoint",
        "embed --out = a symbolic link to another checkpoint",
        "export --onnx = a checkpoint",
        "evaluate --out = metrics.json",
        "evaluate --out = the checkpoint",
        "calibrate --plot = the index",
        "search --grid = --embeddings",
    ],
)
def test_an_output_that_is_an_input_is_refused(
    case: str, run_dir: Path, files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.startswith("export"):
        pytest.importorskip("onnxruntime")
    argv, victim = refusal(case, run_dir, files, tmp_path)
    before = victim.read_bytes()
    status, _, err = run(argv, capsys)
    line = one_line(err)
    flag = next(a for a in argv if a in ("--out", "--onnx", "--plot", "--grid"))
    named = f"{flag} {argv[argv.index(flag) + 1]} is "  # the output, as given
    assert status == 2 and named in line, line
    assert f"which must not be overwritten; choose another {flag}" in line
    assert victim.read_bytes() == before and temporaries(tmp_path) == []


# ------------------------------------------------------------------ damaged inputs


def damaged_npz(path: Path, kind: str) -> Path:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("id,label\n0,1\n")
    elif kind == "npy":
        with path.open("wb") as f:
            np.save(f, np.zeros((3, 4), dtype=np.float32))
    elif kind == "objects":
        with path.open("wb") as f:
            np.savez(f, embeddings=np.array([{"x": 1}], dtype=object))
    return path


@pytest.mark.parametrize("kind", ["empty", "text", "npy", "objects"])
@pytest.mark.parametrize(
    "command", ["index build", "search (index)", "search (queries)", "calibrate"]
)
def test_a_damaged_npz_is_one_line(
    command: str, kind: str, files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = damaged_npz(tmp_path / "bad.npz", kind)
    e, i = str(files.embeddings), str(files.index)
    argv = {
        "index build": ["index", "build", "--embeddings", str(bad), "--out", i],
        "search (index)": ["search", str(bad), "--embeddings", e],
        "search (queries)": ["search", i, "--embeddings", str(bad)],
        "calibrate": ["calibrate", i, "--embeddings", str(bad)],
    }[command]
    before = files.index.read_bytes()
    status, _, err = run(argv, capsys)
    line = one_line(err)
    assert status == 2 and f"{bad} is corrupt or not a" in line
    assert "'tripletlab embed'" in line or "'tripletlab index build'" in line  # the fix
    assert "allow_pickle" not in line and "pickle.load" not in line  # never an unsafe load
    assert files.index.read_bytes() == before


def damaged_checkpoint(digits_run: Path, path: Path, kind: str) -> Path:
    good = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    if kind == "keys":
        torch.save({"version": 1}, path)
    elif kind == "shape":  # the embedding layer of a model with 32 outputs, not 64
        weights = {
            k: v[:32] if v.dim() and v.shape[0] == 64 else v for k, v in good["model"].items()
        }
        torch.save({**good, "model": weights}, path)
    elif kind == "config":
        torch.save({**good, "config": {"model": {"name": "transformer"}}}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "objects":  # a pickle that only an unsafe load would read
        path.write_bytes(pickle.dumps({"version": 1, "model": {1, 2}}))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("keys", "lacks config, model, epoch, history (damaged, or not written by tripletlab"),
        ("shape", "do not fit a 'small' model built from its config (size mismatch for "),
        ("config", "holds a config this tripletlab cannot use (unknown model 'transformer'"),
        ("empty", "is unreadable (an empty file); use another checkpoint"),
        ("objects", "is unreadable (it holds Python objects besides tensors"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "embed", "export"])
def test_a_damaged_checkpoint_is_one_line(
    command: str,
    kind: str,
    message: str,
    digits_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recwarn: pytest.WarningsRecorder,
) -> None:
    if command == "export":
        pytest.importorskip("onnxruntime")
    ckpt = damaged_checkpoint(digits_run, tmp_path / "model.pt", kind)
    out = {"evaluate": "--out", "embed": "--out", "export": "--onnx"}[command]
    status, _, err = run([command, str(ckpt), out, str(tmp_path / "out")], capsys)
    line = one_line(err)
    assert status == 2 and str(ckpt) in line and message in line, line
    assert "weights_only" not in line and "=True" not in line and "=False" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # nothing written
    assert [str(w.message) for w in recwarn] == []  # a warning would be a second stderr line


# ------------------------------------------------------------------------------ interrupts
# Ctrl-C (SIGINT, sent to this process from inside each phase) and kill -9 (SIGKILL, in a
# child process) at every phase of `tripletlab train`: one line and exit 130, the last
# finished epoch kept, and `--resume` ends where an uninterrupted run ends, bit for bit.

SWEEP = ["--dataset", "digits", "--epochs", "2", "--val-size", "150", "--seed", "0"]
SWEEP += ["--amp", "off", "--quiet", "--no-report", "--width", "8"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must end as."""
    out = tmp_path_factory.mktemp("sweep") / "straight"
    assert main(["train", *SWEEP, "--out", str(out)]) == 0
    return out


def same_weights(a: Path, b: Path) -> bool:
    wa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def ctrl_c_in(monkeypatch: pytest.MonkeyPatch, target: str, times: int = 1) -> None:
    """Press Ctrl-C the first time ``target`` (``module:name``) is called, then call it."""
    module, name = target.split(":")
    real = getattr(__import__(module, fromlist=[name]), name)
    left = {"n": times}

    def pressed(*args: object, **kwargs: object) -> object:
        if left["n"] > 0:
            left["n"] -= 1
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(target.replace(":", "."), pressed)


@pytest.mark.parametrize(
    ("phase", "target", "resumable"),
    [
        ("start-up", "tripletlab.training.run:prepare_data", False),
        ("validation", "tripletlab.training.run:_validate", True),
        ("checkpoint write", "tripletlab.training.run:atomic_torch_save", True),
        ("final evaluation", "tripletlab.training.run:evaluate", True),
    ],
)
def test_ctrl_c_at_every_phase(
    phase: str,
    target: str,
    resumable: bool,
    straight_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        ctrl_c_in(m, target)
        code, _, err = run(["train", *SWEEP, "--out", str(out)], capsys)
    assert code == 130, (phase, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, (phase, err)
    assert not out.exists() or not list(out.rglob("*.tmp"))
    if not resumable:  # nothing was trained: nothing is left
        assert not out.exists() and "interrupted" in lines[0], (phase, err)
        return
    assert f"tripletlab train --resume {out}" in lines[0], (phase, err)
    code, _, err = run(["train", "--resume", str(out), "--quiet", "--no-report"], capsys)
    assert code == 0, (phase, err)
    assert same_weights(out, straight_run), phase
    assert (out / "metrics.json").is_file()


def test_ctrl_c_while_drawing_the_report_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [a for a in SWEEP if a != "--no-report"] + ["--epochs", "1", "--out", str(out)]
    with monkeypatch.context() as m:
        ctrl_c_in(m, "tripletlab.cli.train:run_plot")
        code, _, err = run(["train", *argv], capsys)
    assert code == 130 and len(err.strip().splitlines()) == 1, err
    assert "the run is complete" in err and (out / "metrics.json").is_file()


KILL_DRIVER = """
import os, signal, sys
import tripletlab.training.run as run
from tripletlab.training.objective import ObjectiveFn
phase, argv = sys.argv[1], sys.argv[2:]
calls = {"n": 0}
def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if phase == "mid-step":  # the 12th step of 18: in the second epoch, after its forward pass
    real = ObjectiveFn.loss
    def loss(self, out, batch):
        calls["n"] += 1
        if calls["n"] == 12:
            kill()
        return real(self, out, batch)
    ObjectiveFn.loss = loss
elif phase == "checkpoint write":  # half a checkpoint in its temporary, then killed
    real_save = run.atomic_torch_save
    def save(obj, path):
        calls["n"] += 1
        if calls["n"] == 3:  # best.pt and last.pt of epoch 1 are whole; then epoch 2's best
            tmp = path.with_name("." + path.name + ".0123456789abcdef.tmp")
            tmp.write_bytes(b"half a checkpoint")
            os.utime(tmp, (0, os.path.getmtime(tmp) - 60))  # the resume comes a minute later
            kill()
        return real_save(obj, path)
    run.atomic_torch_save = save
elif phase == "validation":
    real_validate = run._validate
    def validate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            kill()
        return real_validate(*args, **kwargs)
    run._validate = validate
from tripletlab.cli import main
main(argv)
"""


@pytest.mark.parametrize("phase", ["mid-step", "validation", "checkpoint write"])
def test_kill_9_at_every_phase_then_resume(
    phase: str, straight_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-c", KILL_DRIVER, phase, "train", *SWEEP, "--out", str(out)]
    child = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, (phase, child.stderr[-2000:])
    assert (out / "checkpoints" / "last.pt").is_file()  # epoch 1 finished before the kill
    code, _, err = run(["train", "--resume", str(out), "--quiet", "--no-report"], capsys)
    assert code == 0, (phase, err)
    assert same_weights(out, straight_run), phase
    assert not list(out.rglob("*.tmp")), phase  # the killed write's temporary is gone
