"""The plain loop (:mod:`tripletlab.training.loop`): bfloat16 training steps (every other
test trains in float32, amp off; CPU autocast runs on any x86 CPU, natively with
AVX512-BF16 or AMX and emulated by oneDNN elsewhere)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab.data import CacheSettings, augment, decode_files, photo_augment
from tripletlab.models import build_model
from tripletlab.training import ObjectiveFn, config_from_dict, train_epoch
from tripletlab.training.loop import WARMUP_STEPS, augment_batch, read_ahead


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("augment_setting", [None, "none", "digits", "photos"])
def test_augment_batch_runs_the_chosen_augmentation(
    channels: int, augment_setting: str | None
) -> None:
    settings: dict[str, object] = {"dataset": "imagefolder:x", "augment": augment_setting}
    settings["crop_padding"] = 2
    settings |= {"crop_scale": 0.5, "jitter": 0.4, "grayscale": 0.25}
    data = config_from_dict(settings).resolved().data
    images = torch.randint(0, 256, (6, channels, 10, 10), dtype=torch.uint8)
    got = augment_batch(images, data, torch.Generator().manual_seed(1))
    chosen = augment_setting or "digits"  # a network from scratch, grey or colour
    g = torch.Generator().manual_seed(1)
    want = {
        "none": lambda: images,
        "digits": lambda: augment(images, crop_padding=2, hflip=True, generator=g),
        "photos": lambda: photo_augment(
            images,
            scale=(0.5, 1.0),
            brightness=0.4,
            contrast=0.4,
            saturation=0.4,
            hue=0.1,
            grayscale=0.25,
            generator=g,
        ),
    }[chosen]()
    assert torch.equal(got, want)


def test_bfloat16_steps_train_to_a_finite_model() -> None:
    settings = {"dataset": "digits", "labels_per_batch": 4, "samples_per_label": 4}
    config = config_from_dict({**settings, "augment": False, "amp": "on"}).resolved()
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(8).repeat_interleave(6)
    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8, width=4)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    objective = ObjectiveFn(config, labels)
    batches = objective.batches(0)
    stats = train_epoch(
        model,
        objective,
        batches,
        images,
        optimizer,
        scheduler,
        config=config,
        stats=((0.5,), (0.25,)),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    assert len(batches) >= 2 and seen == [torch.bfloat16] * len(batches)  # under autocast
    assert stats.steps == len(batches) and math.isfinite(stats.loss) and stats.loss > 0
    params = list(model.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert all(p.dtype == torch.float32 for p in params)  # autocast leaves the weights alone
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_the_throughput_leaves_out_the_first_steps() -> None:
    config = config_from_dict({"dataset": "digits", "labels_per_batch": 2, "samples_per_label": 2})
    config = config.resolved()
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(8).repeat_interleave(5)
    model = build_model("small", in_channels=1, image_size=8, width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    objective = ObjectiveFn(config, labels)
    batches = objective.batches(0)
    for start in (0, len(batches) - 3, len(batches) - 1):  # a whole epoch, 3 steps, 1 step
        s = train_epoch(
            model,
            objective,
            batches,
            images,
            optimizer,
            scheduler,
            config=config,
            stats=((0.5,), (0.25,)),
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(0),
            start_step=start,
        )
        assert s.warmup_steps == min(WARMUP_STEPS, s.steps - 1)
        assert s.timed_samples == s.samples - 4 * s.warmup_steps  # P x K = 4
        assert 0 < s.timed_seconds <= s.seconds
        assert s.samples_per_second == s.timed_samples / s.timed_seconds


def test_read_ahead_gives_each_batch_in_order(tmp_path: Path) -> None:
    # From the decoded-image cache (read one batch ahead by a thread) and from memory alike.
    rng = np.random.default_rng(0)
    files = []
    for i in range(10):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(files[-1])
    disk, _ = decode_files(tmp_path, files, 6, CacheSettings(tmp_path / "cache", 1))
    memory = disk[:]
    indices = [torch.tensor([3, 1]), torch.tensor([9, 9, 0]), torch.tensor([5])]
    for images in (disk, memory):
        got = list(read_ahead(images, indices))
        assert len(got) == 3 and all(waited >= 0 for _, waited in got)
        for (x, _), index in zip(got, indices, strict=True):
            assert torch.equal(x, memory[index])
    assert list(read_ahead(disk, [])) == []
