"""A whole run (:mod:`tripletlab.training.run`): Ctrl-C and resume, NaN, metrics.json."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from training_helpers import StopAt, digits_config

from tripletlab.cli import main
from tripletlab.training import (
    Interrupted,
    NonFiniteLoss,
    NonFiniteWeights,
    ObjectiveFn,
    SilentReporter,
    StepInfo,
    TrainingError,
    fit,
)
from tripletlab.training import run as run_module
from tripletlab.training.checkpoints import nonfinite_tensors
from tripletlab.training.config import config_from_dict


def test_ctrl_c_saves_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    straight = fit(digits_config(), tmp_path / "a")
    with pytest.raises(Interrupted) as info:
        fit(digits_config(), tmp_path / "b", reporter=StopAt(13))  # mid second epoch
    ckpt = torch.load(info.value.checkpoint, weights_only=True)
    steps_per_epoch = straight.history[0]["steps"]
    assert steps_per_epoch < 13 < 2 * steps_per_epoch
    assert (ckpt["epoch"], ckpt["step"]) == (1, 13 - steps_per_epoch)
    resumed = fit(digits_config(), tmp_path / "b", resume=True)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert resumed.metrics["knn_accuracy"] == pytest.approx(straight.metrics["knn_accuracy"])


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit(digits_config(epochs=1), tmp_path / "r")
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    real = ObjectiveFn.loss
    calls = {"n": 0}

    def poisoned(self, out, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss, *rest = real(self, out, batch)
        return (loss * float("nan") if calls["n"] == 3 else loss, *rest)

    monkeypatch.setattr(ObjectiveFn, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"at step 2 of this epoch; lower the learning rate"):
        fit(digits_config(), tmp_path / "r", resume=True, epochs=2)
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before


def test_metrics_json_is_written_atomically(tmp_path: Path) -> None:
    result = fit(digits_config(epochs=1), tmp_path / "r")
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk == result.metrics
    assert not list((tmp_path / "r").glob(".*.tmp"))


class Steps(SilentReporter):
    """Records every step's (epoch, step, lr)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, float]] = []

    def step(self, epoch: int, info: StepInfo) -> None:
        self.seen.append((epoch, info.step, info.lr))


def sigint_during_step(monkeypatch: pytest.MonkeyPatch, at: int, presses: int = 1) -> None:
    """Ctrl-C arrives in the middle of the ``at``-th step (1-based), after its forward pass
    updated BatchNorm's statistics and before its weights are updated."""
    real = ObjectiveFn.loss
    calls = {"n": 0}

    def loss(self, out, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == at:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return real(self, out, batch)

    monkeypatch.setattr(ObjectiveFn, "loss", loss)


def test_ctrl_c_in_the_middle_of_a_step_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = digits_config(amp="off")
    straight = fit(config, tmp_path / "a")
    steps_per_epoch = straight.history[0]["steps"]
    at = steps_per_epoch + 3  # the 3rd step of the second epoch
    with monkeypatch.context() as m:
        sigint_during_step(m, at)
        with pytest.raises(Interrupted) as info:
            fit(digits_config(amp="off"), tmp_path / "b")
    ckpt = torch.load(info.value.checkpoint, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3)  # the interrupted step finished and counts
    fit(digits_config(amp="off"), tmp_path / "b", resume=True)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    for name in a["model"]:  # identical inputs through identical code: bit-equal
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = digits_config(amp="off", epochs=1)
    fit(config, tmp_path / "r")
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    with monkeypatch.context() as m:
        sigint_during_step(m, 2, presses=2)
        with pytest.raises(Interrupted):
            fit(config, tmp_path / "r", resume=True, epochs=2)
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before
    with monkeypatch.context() as m:  # in the first epoch there is nothing to resume from
        sigint_during_step(m, 2, presses=2)
        with pytest.raises(KeyboardInterrupt):
            fit(config, tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "checkpoints" / "last.pt").exists()


def test_non_finite_weights_are_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit(digits_config(amp="off", epochs=1), tmp_path / "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()}

    models: list[torch.nn.Module] = []
    real = ObjectiveFn.forward

    def forward(self, model, x):  # type: ignore[no-untyped-def]
        models.append(model)
        return real(self, model, x)

    class Poison(SilentReporter):  # after a step: the loss stays finite, a buffer does not
        def step(self, epoch: int, info: StepInfo) -> None:
            bn = next(m for m in models[-1].modules() if isinstance(m, torch.nn.BatchNorm2d))
            assert bn.running_var is not None
            bn.running_var.fill_(float("inf"))

    monkeypatch.setattr(ObjectiveFn, "forward", forward)
    with pytest.raises(NonFiniteWeights, match=r"in epoch 2 the model's .*running_var became NaN"):
        fit(digits_config(amp="off"), tmp_path / "r", resume=True, epochs=2, reporter=Poison())
    after = {p.name: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()}
    assert after == before  # nothing non-finite was written
    with pytest.raises(NonFiniteWeights, match="nothing was saved"):
        fit(digits_config(amp="off", epochs=1), tmp_path / "fresh", reporter=Poison())
    assert not (tmp_path / "fresh" / "checkpoints" / "last.pt").exists()
    assert nonfinite_tensors(torch.nn.BatchNorm1d(2)) == []


def test_resume_applies_what_may_change_and_refuses_the_rest(tmp_path: Path) -> None:
    fit(digits_config(amp="off", epochs=1), tmp_path / "r")
    with pytest.raises(TrainingError, match=r"--margin 0.5 differs from the run's 0.2"):
        fit(digits_config(), tmp_path / "r", resume=True, changes={"margin": 0.5})
    with pytest.raises(TrainingError, match=r"--dataset mnist differs"):
        fit(digits_config(), tmp_path / "r", resume=True, changes={"dataset": "mnist"})
    same = {"dataset": "digits", "margin": 0.2}  # what the run already has is no change
    steps = Steps()
    result = fit(
        digits_config(),
        tmp_path / "r",
        resume=True,
        reporter=steps,
        changes={**same, "epochs": 2, "lr": 0.01, "eval_batch_size": 64},
    )
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["optim"]["lr"] == 0.01 and saved["optim"]["epochs"] == 2
    assert saved["run"]["eval_batch_size"] == 64
    assert result.config is not None and result.config.optim.lr == 0.01
    # the schedule continues at the new learning rate: cosine over the 2 epochs, no warm-up
    s = result.history[0]["steps"]
    straight = Steps()
    fit(digits_config(amp="off", lr=0.01), tmp_path / "straight", reporter=straight)
    want = [lr for epoch, _, lr in straight.seen if epoch == 1]
    got = [lr for epoch, _, lr in steps.seen if epoch == 1]
    assert len(got) == s and got == pytest.approx(want, rel=1e-12)
    assert got[0] < 0.01  # past the warm-up and the peak: it did not start again


def test_log_and_command_after_an_interrupted_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    argv = ["train", "--dataset", "digits", "--epochs", "2", "--val-size", "150", "--amp", "off"]
    argv += ["--quiet", "--no-report", "--out", str(out)]
    with monkeypatch.context() as m:
        sigint_during_step(m, 12)
        assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"tripletlab train --resume {out}" in err[0], err
    with (out / "log.jsonl").open("a") as log:
        log.write('{"kind": "step", "epo')  # a torn line, as kill -9 leaves it
    assert main(["train", "--resume", str(out), "--quiet", "--no-report"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [(r["epoch"], r["step"]) for r in records if r["kind"] == "step"]
    assert len(steps) == len(set(steps))  # no step told twice
    per_epoch = sum(1 for e, _ in steps if e == 1)
    assert steps == [(e, i) for e in (1, 2) for i in range(per_epoch)]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    commands = (out / "command.txt").read_text().splitlines()
    assert len(commands) == 2 and "--resume" in commands[1] and "--resume" not in commands[0]


class Messages(SilentReporter):
    """Keeps the run's messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[float]:
    """Make each epoch's validation return the next of ``scores`` as its MAP@R."""
    left = list(scores)
    monkeypatch.setattr(run_module, "_validate", lambda *a, **k: {"val_map_at_r": left.pop(0)})
    return left


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # best at epoch 2, then 3 validations without a better score (an equal one is not better)
    _scripted_validation(monkeypatch, [0.5, 0.6, 0.55, 0.6, 0.59, 0.9, 0.9, 0.9])
    reporter = Messages()
    result = fit(digits_config(epochs=8, patience=3), tmp_path / "r", reporter=reporter)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert (result.metrics["best_epoch"], result.metrics["epochs_trained"]) == (2, 5)
    assert any("stopping early after epoch 5" in line for line in reporter.lines)
    # a resume with more patience goes on from there; the stop is decided from the history
    _scripted_validation(monkeypatch, [0.95, 0.1, 0.1])
    resumed = fit(digits_config(), tmp_path / "r", resume=True, changes={"patience": 4})
    assert (resumed.metrics["best_epoch"], resumed.metrics["epochs_trained"]) == (6, 8)


def test_without_patience_a_run_trains_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_validation(monkeypatch, [0.9, 0.1, 0.1, 0.1])
    result = fit(digits_config(epochs=4), tmp_path / "r")  # same-class validation: patience 0
    assert result.config is not None and result.config.optim.patience == 0
    assert (result.metrics["best_epoch"], result.metrics["epochs_trained"]) == (1, 4)


def test_the_run_length_follows_the_data_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_validation(monkeypatch, [0.9, 0.1])  # stops after 2 epochs (patience 1)
    config = config_from_dict({**digits_config(unseen_classes=3).flat(), "epochs": None})
    run = fit(config, tmp_path / "r", changes={"patience": 1})
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["optim"]
    # 13 passes of digits' ~11 batches are fewer than 3000 steps: epochs of 100 steps
    assert (saved["epochs"], saved["steps_per_epoch"], saved["patience"]) == (30, 100, 1)
    assert [h["steps"] for h in run.history] == [100, 100]
    assert run.config is not None and run.config.optim.epochs == 30


def test_a_runs_threads_do_not_outlive_it(tmp_path: Path) -> None:
    # --threads is the run's: a caller in the same process (a test after it) keeps its own
    # count, or results computed before and after would differ in their float reductions.
    before = torch.get_num_threads()
    config = digits_config(epochs=1, width=4, threads=before + 1, steps_per_epoch=2)
    fit(config, tmp_path / "run")
    assert torch.get_num_threads() == before
