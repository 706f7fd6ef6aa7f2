"""A whole run (:mod:`tripletlab.training.run`): Ctrl-C and resume, NaN, metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_helpers import StopAt, digits_config

from tripletlab.training import Interrupted, NonFiniteLoss, ObjectiveFn, fit


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
