"""``tripletlab train`` end to end (:mod:`tripletlab.cli.train`), on scikit-learn's digits
(seconds per run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST, KEYS, run
from PIL import Image
from training_helpers import no_compiler_env

from tripletlab.cli import build_config, build_parser, resolve_config
from tripletlab.training import CONFIG_FIELDS, ConfigField, TrainConfig


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
    assert config["data"]["dataset"] == "digits"
    assert config["objective"]["labels_per_batch"] == 10  # P: all 10 classes
    assert (out / "command.txt").read_text().startswith("tripletlab train --dataset digits")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in log} == {"step", "epoch"}
    assert sum(r["kind"] == "epoch" for r in log) == 2
    # throughput without each epoch's first 5 steps, the same in the log and metrics.json
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert all(r["warmup_steps"] == 5 and r["steps"] > 5 for r in epochs)
    assert all(r["samples_per_second"] == r["timed_samples"] / r["timed_seconds"] for r in epochs)
    assert all(r["timed_samples"] == r["samples"] - 5 * 160 for r in epochs)  # P x K = 160
    timed = sum(r["timed_samples"] for r in epochs) / sum(r["timed_seconds"] for r in epochs)
    assert metrics["samples_per_second"] == pytest.approx(timed)
    assert config["data"]["image_size"] == 8  # digits, as trained
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


@pytest.mark.parametrize("objective", ["triplet", "contrastive"])
def test_cross_batch_memory_trains(
    objective: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / objective
    argv = ["train", *FAST, "--epochs", "1", "--objective", objective, "--out", str(out)]
    argv += ["--memory-size", "300", "--memory-warmup-steps", "1"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert (config["objective"]["memory_size"], config["objective"]["memory_warmup_steps"]) == (
        300,
        1,
    )
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["knn_accuracy"] <= 1.0


def test_resume_extends_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (That a resumed run equals an uninterrupted one is tested in test_training_run.py.)
    out = tmp_path / "r"
    assert run(["train", *FAST, "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    resume = ["train", "--resume", str(out), "--quiet", "--no-report"]
    assert run([*resume, "--epochs", "2"], capsys)[0] == 0
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert json.loads((out / "config.json").read_text())["optim"]["epochs"] == 2

    # Without --epochs a resume keeps the run's own settings (here: nothing left to train),
    # and a finished run is neither loaded nor evaluated again.
    # Nothing in the folder is written again (no report drawn over the one there): every
    # file's time is kept but command.txt's, whose text is kept.
    def stamps() -> dict[str, int]:
        files = (p for p in out.rglob("*") if p.is_file() and p.name != "command.txt")
        return {str(p): p.stat().st_mtime_ns for p in files}

    before, command = stamps(), (out / "command.txt").read_text()
    code, stdout, stderr = run(["train", "--resume", str(out)], capsys)
    assert code == 0 and f"{out} is finished (2 of 2 epochs); nothing to do" in stdout + stderr
    assert stamps() == before and (out / "command.txt").read_text() == command
    assert "writing pictures" not in stderr and "report:" not in stdout
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["optim"]["epochs"] == 2
    code, _, err = run(["train", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "already holds a run; use --resume" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "cifar"], "unknown dataset"),
        (["--model", "vgg"], "unknown model 'vgg'; choose one of"),
        (["--objective", "magnet"], "unknown objective 'magnet'"),
        (["--mining", "hardest"], "unknown mining 'hardest'"),
        (["--augment", "true"], "unknown augment 'true'; choose one of: none, digits, photos"),
        (["--jitter", "3"], "--jitter must be in [0, 2], got 3"),
        (["-p", "11"], "p=11"),
        (["--lr", "-1"], "--lr must be"),
        (["-p", "1"], "--labels-per-batch 1 gives batches of one class, without negatives"),
        (["-k", "1"], "--samples-per-label 1 gives batches without positive pairs"),
        (["--objective", "contrastive", "-k", "1"], "so contrastive has nothing to mine"),
        (["--val-size", "-1"], "--val-size must be >= 0, got -1"),
        (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0, got -1"),
        (["--weight-decay", "-0.1"], "--weight-decay must be >= 0, got -0.1"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1, got 0"),
        (["--unseen-classes", "0"], "--unseen-classes must be >= 2"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--margin", "nan"], "--margin must be a finite number, got nan"),
        (["--warmup-epochs", "nan"], "--warmup-epochs must be a finite number, got nan"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
        (["--dist-timeout", "nan"], "--dist-timeout must be a positive number of seconds"),
        (["--image-size", "64"], "--image-size 64: digits images are 8x8"),
        # found only when the data is loaded, after the run folder was created
        (["--unseen-classes", "9"], "unseen_classes (--unseen-classes) must be between 2 and 8"),
        (["--unseen-classes", "4", "--val-classes", "5"], "--val-classes 5 asks for 5"),
        (["--val-classes", "2"], "--val-classes 2 needs classes held out of training"),
        (["--dataset", "imagefolder:/no/such/folder"], "/no/such/folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "r"
    code, _, err = run(["train", *FAST, "--amp", "off", "--out", str(out), *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tripletlab: error:") and message in lines[0]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder (nor runs/) left behind


def test_a_failed_start_leaves_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the command created goes; what was there before stays, every byte of it."""
    monkeypatch.chdir(tmp_path)
    bad = ["--unseen-classes", "9"]  # a DataError once the data is loaded
    code, _, err = run(["train", *FAST, *bad], capsys)  # default --out: runs/<date>-...
    assert code == 2 and "unseen_classes" in err
    assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "a.txt").write_text("keep me")
    (mine / "b.txt").write_text("and me")
    code, _, _ = run(["train", *FAST, *bad, "--out", str(mine)], capsys)
    assert code == 2
    assert sorted(p.name for p in mine.iterdir()) == ["b.txt", "notes"]
    assert (mine / "notes" / "a.txt").read_text() == "keep me"
    code, _, err = run(["train", "--resume", str(mine)], capsys)
    assert code == 2 and "no checkpoint" in err
    assert sorted(p.name for p in mine.iterdir()) == ["b.txt", "notes"]


def test_a_run_that_fails_after_its_first_checkpoint_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError("the test split cannot be scored")

    monkeypatch.setattr("tripletlab.training.run.evaluate", fail)  # after the last epoch
    out = tmp_path / "r"
    argv = ["train", *FAST, "--epochs", "1", "--amp", "off", "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 2 and "the test split cannot be scored" in err
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "command.txt").is_file()


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


def test_k_larger_than_a_class_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Digits' classes hold ~140 training images: each gives all of them, once (no warning),
    # and the derived P is lowered from 10 until the classes fill P x 200.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        code, _, err = run(
            ["train", *FAST, "--epochs", "1", "-k", "200", "--out", str(tmp_path / "r")], capsys
        )
    assert code == 0, err
    objective = json.loads((tmp_path / "r" / "config.json").read_text())["objective"]
    assert objective["samples_per_label"] == 200 and 1 < objective["labels_per_batch"] < 10


def test_config_file_and_flag_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\nembedding-dim = 16\nepochs = 1\nmodel = "small"\n')
    out = tmp_path / "r"
    argv = ["train", "--config", str(cfg), "--embedding-dim", "8", "--val-size", "100", "--quiet"]
    argv += ["--amp", "off"]
    assert run([*argv, "--out", str(out)], capsys)[0] == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["embedding_dim"] == 8 and saved["optim"]["epochs"] == 1
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


# ------------------------------------------------------------ the flags, from the config

#: The options of ``tripletlab train -h`` when they were written by hand (the generated
#: parser keeps every one, with the same meaning).
FLAGS_BEFORE = [
    "--amp",
    "--augment",
    "--config",
    "--crop-padding",
    "--data-dir",
    "--dataset",
    "--device",
    "--dist-timeout",
    "--distance",
    "--distributed-loss",
    "--embedding-dim",
    "--epochs",
    "--eval-batch-size",
    "--help",
    "--hflip",
    "--image-size",
    "--labels-per-batch",
    "--lr",
    "--margin",
    "--mining",
    "--model",
    "--no-report",
    "--normalize-embeddings",
    "--objective",
    "--optimizer",
    "--out",
    "--quiet",
    "--resume",
    "--samples-per-label",
    "--schedule",
    "--seed",
    "--steps-per-epoch",
    "--strict",
    "--sync-bn",
    "--tensorboard",
    "--test-classes",
    "--threads",
    "--train-classes",
    "--tta",
    "--unseen-classes",
    "--val-size",
    "--warmup-epochs",
    "--weight-decay",
    "--width",
    "-h",
    "-k",
    "-p",
]
#: The options that are not config fields.
HAND_WRITTEN = {"--help", "-h", "--resume", "--config", "--no-report", "--quiet", "--dist-timeout"}


def train_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every option ``tripletlab train -h`` shows."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no flag split at a hyphen
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "-h"])
    shown = capsys.readouterr().out
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", shown))
    return options - {"--nproc-per-node", "-m"}  # torchrun's, in the distributed group's title


def test_the_flags_are_the_config_fields_and_keep_the_old_ones(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    options = train_options(capsys, monkeypatch)
    fields = {f.flag for f in CONFIG_FIELDS} | {f"-{f.short}" for f in CONFIG_FIELDS if f.short}
    negatives = {f"--no-{f.flag[2:]}" for f in CONFIG_FIELDS if f.kind == "bool"}
    assert options == fields | negatives | HAND_WRITTEN
    assert set(FLAGS_BEFORE) <= options
    assert not {f.key for f in CONFIG_FIELDS} & {
        o.lstrip("-").replace("-", "_") for o in HAND_WRITTEN
    }


def flag_value(f: ConfigField) -> tuple[list[str], object]:
    """Arguments for ``f``'s flag and the setting they give."""
    if f.kind == "bool":
        return [], True
    if f.kind == "choice":
        return [f.choices[-1]], f.choices[-1]
    if f.kind == "int":
        return ["3"], 3
    if f.kind == "float":
        return ["0.5"], 0.5
    if f.kind == "int_list":
        return ["0,1"], [0, 1]
    return ["x"], "x"


@pytest.mark.parametrize("field", CONFIG_FIELDS, ids=lambda f: f.key)
def test_every_config_field_has_a_flag(field: ConfigField) -> None:
    args, value = flag_value(field)
    for option in (field.flag, *([f"-{field.short}"] if field.short else [])):
        ns = build_parser().parse_args(["train", option, *args])
        assert getattr(ns, field.key) == value
        assert build_config(ns).flat()[field.key] == value
    assert build_config(build_parser().parse_args(["train"])) == TrainConfig()


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["--hflip"], True),
        (["--hflip", "true"], True),
        (["--hflip", "false"], False),
        (["--hflip", "no"], False),
        (["--no-hflip"], False),
        (["--strict"], True),
        (["--no-strict", "--epochs", "2"], False),
    ],
)
def test_boolean_flags(argv: list[str], value: bool) -> None:
    config = build_config(build_parser().parse_args(["train", *argv]))
    assert config.flat()[argv[0].removeprefix("--no-").removeprefix("--")] is value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-hflip", "true"], "--no-hflip takes no value"),
        (["--hflip", "maybe"], "expected true or false, got 'maybe'"),
    ],
)
def test_bad_boolean_flags_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_flag_overrides_a_bad_value_of_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = nan\nthreads = 0\n")
    ns = build_parser().parse_args(["train", "--config", str(cfg), "--lr", "0.1", "--threads", "1"])
    assert resolve_config(ns).optim.lr == 0.1
    ns = build_parser().parse_args(["train", "--config", str(cfg), "--lr", "0.1", "--threads", "0"])
    with pytest.raises(ValueError, match=r"^--threads must be >= 1, got 0; give a whole number"):
        resolve_config(ns)  # the flag's value is wrong, not the file's


def test_nested_config_files_under_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'dataset = "digits"\naugment = true\n[optim]\nepochs = 3\nlr = 0.01\n'
        '[model]\nname = "embeddingnet"\nembedding-dim = 16\n'
    )
    ns = build_parser().parse_args(
        ["train", "--config", str(cfg), "--lr", "0.02", "--augment", "none"]
    )
    c = build_config(ns)
    assert (c.data.dataset, c.optim.epochs, c.optim.lr, c.model.name) == (
        "digits",
        3,
        0.02,
        "embeddingnet",
    )
    assert (c.data.augment, c.model.embedding_dim, c.optim.weight_decay) == ("none", 16, 1e-4)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.json", b'{"epochs": "two"}', "config key epochs must be an integer or null, got 'two'"),
        ("c.toml", b'epochs = "two"\n', "config key epochs must be an integer or null, got 'two'"),
        ("c.toml", b"epochs = 2.5\n", "config key epochs must be an integer or null, got 2.5"),
        ("c.toml", b'lr = "0.1"\n', "config key lr must be a number, got '0.1'"),
        ("c.toml", b'augment = "no"\n', "unknown augment 'no'; choose one of: none, digits"),
        ("c.toml", b"[optim]\nlr = nan\n", "lr must be a finite number, got nan"),
        ("c.json", b'{"lr": NaN}', "lr must be a finite number, got nan"),
        ("c.toml", b"samples-per-label = 1\n", "samples_per_label 1 gives batches without"),
        ("c.toml", b"[data]\nval_size = -5\n", "val_size must be >= 0, got -5"),
        ("c.json", b'{"augment": "no"}', "unknown augment 'no'; choose one of: none, digits"),
        (
            "c.toml",
            b"lr = 1e400\nepochs = true\n",
            "config key epochs must be an integer or null, got True",
        ),
        ("c.toml", b'train-classes = "0,1,2"\n', "config key train_classes must be a list of"),
        ("c.toml", b"[optim]\ncolour = 1\n", "unknown config key(s) optim.colour; valid keys in"),
        ("c.toml", b"epochs = 1 # \xe9t\xe9\n", "is not UTF-8 text (invalid continuation byte"),
        ("c.json", b"[1, 2]", "must hold a table of settings"),
    ],
)
def test_config_file_errors_name_the_file(
    name: str, content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / name
    cfg.write_bytes(content)
    code, _, err = run(["train", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"tripletlab: error: config file {cfg}") and message in lines[0]
    assert not (tmp_path / "r").exists()


def test_train_on_many_small_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 60 classes of 1-5 tiny PNGs (a CUB/SOP-like layout): the 12 singletons are left out,
    # and P, K come from the class sizes (median 3 -> K=3, P=ceil(128/3)=43 of 48 classes).
    root = tmp_path / "folder"
    for split, sizes in (("train", [1, 2, 3, 4, 5] * 12), ("test", [2] * 60)):
        for c, n in enumerate(sizes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            for i in range(n):
                shade = (c * 37 + i * 11) % 256
                Image.new("L", (6, 6), shade).save(folder / f"{i}.png")
    out = tmp_path / "run"
    argv = ["train", "--dataset", f"imagefolder:{root}", "--image-size", "8", "--epochs", "2"]
    argv += ["--val-size", "0", "--amp", "off", "--no-report", "--seed", "0", "--out", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    line = "batches: P=43 classes x K=3 images = 129, 1 step an epoch; 12 classes with fewer "
    assert line + "than 2 images left out" in err.splitlines()[:4]  # the run's first lines
    config = json.loads((out / "config.json").read_text())
    objective = config["objective"]
    assert (objective["labels_per_batch"], objective["samples_per_label"]) == (43, 3)
    assert objective["small_classes"] == "fill"
    assert config["data"]["augment"] == "digits"  # grey images, as used
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["objective"]["samples_per_label"] == 3
    assert ckpt["epoch"] == 2
    assert "UserWarning" not in err  # said once, in the run's first lines


def test_data_warnings_print_as_one_line(tmp_path: Path) -> None:
    rng = torch.Generator().manual_seed(0)
    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (12, 12, 3), dtype=torch.uint8, generator=rng)
            Image.fromarray(pixels.numpy()).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    (tmp_path / "imgs" / "c0" / "bad.png").write_text("not an image")
    args = ["train", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--image-size", "8"]
    args += ["--epochs", "1", "--steps-per-epoch", "1", "--out", str(tmp_path / "run")]
    # with the report: its pictures read the data again, and warn once in all
    args += ["--cache-dir", str(tmp_path / "cache"), "--quiet", "--threads", "1"]
    # a process of its own: pytest records warnings instead of printing them
    done = subprocess.run(
        [sys.executable, "-m", "tripletlab", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "tripletlab: warning: imagefolder:" in done.stderr
    assert done.stderr.count("1 unreadable image file") == 1  # not again at the evaluation
    assert "UserWarning" not in done.stderr and ".py:" not in done.stderr


def test_compile_without_a_compiler_trains_with_one_warning(tmp_path: Path) -> None:
    env = no_compiler_env(tmp_path)  # inductor cannot build the network
    args = ["train", "--dataset", "digits", "--compile", "--epochs", "1", "--steps-per-epoch"]
    args += ["2", "--amp", "off", "--out", str(tmp_path / "run"), "--no-report", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "tripletlab", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "--compile" in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tripletlab: warning: --compile: torch.compile cannot run here (")
    assert lines[0].endswith("; training without it")
    assert (tmp_path / "run" / "metrics.json").is_file()
