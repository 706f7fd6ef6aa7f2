"""``tripletlab train`` end to end (:mod:`tripletlab.cli.train`), on scikit-learn's digits
(seconds per run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST, KEYS, run


def test_train_digits_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run(["train", *FAST, "--out", str(out)], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert key in metrics
    for key in ("precision_at_1", "r_precision", "map_at_r", "knn_accuracy", "pair_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["knn_accuracy"] > 0.5  # two short epochs on digits already learn something
    assert metrics["pair_floor"] == pytest.approx(0.9, abs=0.02)  # 10 balanced classes
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["labels_per_batch"] == 10  # P: all 10 classes
    assert (out / "command.txt").read_text().startswith("tripletlab train --dataset digits")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in log} == {"step", "epoch"}
    assert sum(r["kind"] == "epoch" for r in log) == 2
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert (out / "checkpoints" / "best.pt").is_file()
    assert "run folder:" in stdout and "precision_at_1" in stdout


@pytest.mark.parametrize("objective", ["contrastive", "siamese", "triplet-offline", "softmax"])
def test_every_objective_trains(
    objective: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / objective
    argv = ["train", *FAST, "--epochs", "1", "--objective", objective, "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["knn_accuracy"] <= 1.0


def test_resume_extends_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (That a resumed run equals an uninterrupted one is tested in test_training_run.py.)
    out = tmp_path / "r"
    assert run(["train", *FAST, "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    resume = ["train", "--resume", str(out), "--quiet", "--no-report"]
    assert run([*resume, "--epochs", "2"], capsys)[0] == 0
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    # Without --epochs a resume keeps the run's own settings (here: nothing left to train).
    assert run(resume, capsys)[0] == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    code, _, err = run(["train", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "already holds a run; use --resume" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "cifar"], "unknown dataset"),
        (["--model", "vgg"], "unknown model 'vgg'; choose one of"),
        (["--objective", "magnet"], "unknown objective 'magnet'"),
        (["--mining", "hardest"], "unknown mining 'hardest'"),
        (["-p", "11"], "p=11"),
        (["--lr", "-1"], "--lr must be"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["train", *FAST, "--out", str(tmp_path / "r"), *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0]
    assert "Traceback" not in err


def test_unwritable_out_and_bad_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(["train", *FAST, "--out", str(blocker / "run")], capsys)
    assert code == 2 and "choose another --out" in err
    code, _, err = run(["train", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no such run folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["train", "--resume", str(empty)], capsys)
    assert code == 2 and "no checkpoint" in err
    corrupt = tmp_path / "corrupt" / "checkpoints"
    corrupt.mkdir(parents=True)
    (corrupt / "last.pt").write_bytes(b"garbage")
    code, _, err = run(["train", "--resume", str(corrupt.parent)], capsys)
    assert code == 2 and "unreadable" in err
    assert (corrupt / "last.pt").read_bytes() == b"garbage"  # left as it was


def test_k_larger_than_a_class_warns_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(UserWarning, match="fewer than k=200"):
        code, _, _ = run(
            ["train", *FAST, "--epochs", "1", "-k", "200", "--out", str(tmp_path / "r")], capsys
        )
    assert code == 0


def test_config_file_and_flag_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\nembedding-dim = 16\nepochs = 1\nmodel = "small"\n')
    out = tmp_path / "r"
    argv = ["train", "--config", str(cfg), "--embedding-dim", "8", "--val-size", "100", "--quiet"]
    argv += ["--amp", "off"]
    assert run([*argv, "--out", str(out)], capsys)[0] == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["embedding_dim"] == 8 and saved["epochs"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": 1, "colour": "red"}')
    code, _, err = run(["train", "--config", str(bad), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown config key(s) colour" in err


def test_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code, stdout, _ = run(["train", *FAST, "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0 and "report:" not in stdout
    assert not (out / "report.html").exists() and not (out / "pictures").exists()


def test_failed_pictures_warn_but_keep_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise ValueError("k=8 neighbours asked for but the test set has 5 items")

    monkeypatch.setattr("tripletlab.cli.train.run_plot", fail)
    argv = ["train", *FAST[:-1], "--epochs", "1", "--out", str(tmp_path / "r")]
    code, stdout, err = run(argv, capsys)
    assert code == 0 and "run folder:" in stdout
    assert "tripletlab: warning: no pictures or report (k=8 neighbours" in err
