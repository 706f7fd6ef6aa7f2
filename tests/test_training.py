"""The training loop as a library: Ctrl-C, NaN, schedules, config resolution."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import torch

from tripletlab import training
from tripletlab.training import (
    Interrupted,
    NonFiniteLoss,
    SilentReporter,
    StepInfo,
    TrainConfig,
    fit,
    make_schedule,
)


def digits_config(**kw: object) -> TrainConfig:
    base = {"dataset": "digits", "epochs": 2, "val_size": 150, "seed": 0}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


class StopAt(SilentReporter):
    """Presses Ctrl-C at a given global step."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def step(self, epoch: int, info: StepInfo) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


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
    real = training.ObjectiveFn.loss
    calls = {"n": 0}

    def poisoned(self, out, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss, *rest = real(self, out, batch)
        return (loss * float("nan") if calls["n"] == 3 else loss, *rest)

    monkeypatch.setattr(training.ObjectiveFn, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"at step 2 of this epoch; lower the learning rate"):
        fit(digits_config(), tmp_path / "r", resume=True, epochs=2)
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before


def test_schedule_warmup_and_cosine() -> None:
    config = digits_config(epochs=4, warmup_epochs=1.0).resolved()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(config, opt, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(x >= y for x, y in itertools.pairwise(lrs[10:]))


def test_resolved_defaults_and_errors() -> None:
    with pytest.raises(ValueError, match="--steps-per-epoch must be >= 1"):
        TrainConfig(steps_per_epoch=0).resolved()
    c = TrainConfig(dataset="mnist").resolved()
    assert (c.mining, c.margin, c.hflip, c.crop_padding, c.tta) == (
        "semi_hard",
        0.2,
        False,
        0,
        False,
    )
    c = TrainConfig(objective="contrastive").resolved()
    assert (c.mining, c.margin, c.hflip, c.tta) == ("hard_negative", 1.0, True, True)
    c = TrainConfig(dataset="imagefolder:x", hflip=False, tta=True).resolved()
    assert (c.crop_padding, c.hflip, c.tta) == (2, False, True)
    with pytest.raises(ValueError, match="unknown mining"):
        TrainConfig(objective="contrastive", mining="batch_hard").resolved()
    with pytest.raises(ValueError, match="--margin must be"):
        TrainConfig(margin=-1.0).resolved()


def test_metrics_json_is_written_atomically(tmp_path: Path) -> None:
    result = fit(digits_config(epochs=1), tmp_path / "r")
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk == result.metrics
    assert not list((tmp_path / "r").glob(".*.tmp"))


@pytest.mark.parametrize(
    "objective", ["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
)
def test_steps_per_epoch_matches_the_batches(objective: str) -> None:
    config = TrainConfig(objective=objective, labels_per_batch=4, samples_per_label=8).resolved()
    labels = torch.arange(10).repeat_interleave(50)
    fn = training.ObjectiveFn(config, labels)
    assert fn.steps_per_epoch() == len(fn.batches(0)) == len(fn.batches(1))


@pytest.mark.parametrize(
    "objective", ["triplet", "contrastive", "siamese", "triplet-offline", "softmax"]
)
@pytest.mark.parametrize("steps", [3, 40])  # less than one pass (15 batches), more than two
def test_steps_per_epoch_fixes_the_epoch_length(objective: str, steps: int) -> None:
    config = TrainConfig(
        objective=objective, labels_per_batch=4, samples_per_label=8, steps_per_epoch=steps
    ).resolved()
    labels = torch.arange(10).repeat_interleave(50)
    fn = training.ObjectiveFn(config, labels)
    batches = fn.batches(0)
    assert fn.steps_per_epoch() == len(batches) == steps
    assert all(b.shape[0] == 32 for b in batches)  # full batches throughout
    again = fn.batches(0)
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))  # seeded
    if objective in ("triplet", "contrastive"):  # every P x K batch: 4 labels x 8 each
        for b in batches:
            assert sorted(torch.bincount(labels[b]).tolist())[-4:] == [8] * 4
    if steps > 15:  # the later passes are new draws, not copies of the first
        assert not torch.equal(batches[0], batches[15])


def test_amp_auto_needs_native_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert training.cpu_has_native_bf16("flags\t: fpu avx2 avx512f avx512_bf16 avx512vl")
    assert training.cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile")
    assert not training.cpu_has_native_bf16("flags : fpu avx2 avx512f avx512bw")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.use_amp("auto", cuda) and not training.use_amp("off", cuda)
    assert training.use_amp("on", cpu)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert not training.use_amp("auto", cpu)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.use_amp("auto", cpu)
    with pytest.raises(ValueError, match="unknown amp 'yes'; choose one of: auto, on, off"):
        TrainConfig(amp="yes").resolved()


def test_embed_with_flip_averages_the_mirror_image() -> None:
    from tripletlab.models import build_model

    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8, width=4)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    stats, cpu = ((0.5,), (0.25,)), torch.device("cpu")
    plain = training.embed(model, images, stats, cpu)
    mirror = training.embed(model, images.flip(-1), stats, cpu)
    both = training.embed(model, images, stats, cpu, flip=True)
    torch.testing.assert_close(both, torch.nn.functional.normalize(plain + mirror, dim=1))
    assert not torch.allclose(both, plain)


def test_checkpoints_get_the_same_permissions_as_other_files(tmp_path: Path) -> None:
    training.atomic_torch_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    training.atomic_write_bytes(tmp_path / "b.json", b"{}")
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert mode["a.pt"] == mode["b.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert mode["a.pt"] == 0o666 & ~umask  # not mkstemp's 0o600
    assert torch.load(tmp_path / "a.pt", weights_only=True)["x"].sum() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.json"]  # no temp files
