"""The ``tripletlab`` program (:mod:`tripletlab.cli.app`): its help and its entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tripletlab.cli import main


def test_help_and_module_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tripletlab", "train", "-h"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    for flag in ("--labels-per-batch", "--samples-per-label", "--mining", "--resume", "--device"):
        assert flag in proc.stdout


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-h"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "evaluate", "plot"):
        assert command in text
    with pytest.raises(SystemExit):
        main(["evaluate", "-h"])
    text = capsys.readouterr().out
    for flag in ("--split", "--metrics", "--out", "--k", "--dataset"):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["train", "-h"])
    assert "--no-report" in capsys.readouterr().out


def test_no_command_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tripletlab"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stdout == ""
    for command in ("train", "evaluate", "plot", "embed", "export", "index", "search"):
        assert f"\n    {command} " in proc.stderr or f"\n    {command}\n" in proc.stderr, command
    assert proc.stderr.rstrip().endswith(
        "tripletlab: error: choose a command (tripletlab COMMAND -h)"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["train", "--compile", "maybe"], "tripletlab train: error: argument --compile"),
        (["trian"], "tripletlab: error: argument COMMAND: invalid choice: 'trian'"),
        (["index"], "tripletlab index: error: the following arguments are required: ACTION"),
        (["evaluate", "run", "--no-such-flag"], "tripletlab evaluate: error: unrecognized arg"),
        (["--no-such-flag"], "tripletlab: error: unrecognized arguments: --no-such-flag"),
        (["index", "build", "--embeddings", "e", "--out", "o", "-z"], "tripletlab index build:"),
        # a flag only as written, not any start of one; what a misspelt one stands for
        (
            ["train", "--epoch", "1", "--unseen-classe", "3"],
            "tripletlab train: error: unrecognized arguments: --epoch 1 --unseen-classe 3 (did "
            "you mean --epochs, --unseen-classes?)",
        ),
        (
            ["index", "build", "--embedings", "e", "--out", "o"],
            "tripletlab index build: error: the following arguments are required: --embeddings; "
            "unrecognized: --embedings (did you mean --embeddings?)",
        ),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], start: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(start) and err.count("\n") == 1, err
    assert err.rstrip().endswith(f"{start.split(':')[0]} -h for the options)")
