"""The plain loop (:mod:`tripletlab.training.loop`): embedding with flips, and bfloat16
embedding and training steps."""

from __future__ import annotations

import math

import torch

from tripletlab.training import embed


def test_embed_with_flip_averages_the_mirror_image() -> None:
    from tripletlab.models import build_model

    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8, width=4)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    stats, cpu = ((0.5,), (0.25,)), torch.device("cpu")
    plain = embed(model, images, stats, cpu)
    mirror = embed(model, images.flip(-1), stats, cpu)
    both = embed(model, images, stats, cpu, flip=True)
    torch.testing.assert_close(both, torch.nn.functional.normalize(plain + mirror, dim=1))
    assert not torch.allclose(both, plain)


# bfloat16 (amp on): CPU autocast runs on any x86 CPU, natively with AVX512-BF16 or AMX and
# emulated by oneDNN elsewhere. Every other test trains and embeds in float32 (amp off).
BF16_U = 2.0**-8  # bfloat16's unit roundoff: 8 significant bits


def test_embed_in_bfloat16_is_float32_up_to_bfloat16_rounding() -> None:
    from tripletlab.models import build_model

    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8)  # 4 convolutions and a linear
    layers = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in model.modules())
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    stats, cpu = ((0.5,), (0.25,)), torch.device("cpu")
    for flip in (False, True):
        e32 = embed(model, images, stats, cpu, flip=flip, amp=False)
        e16 = embed(model, images, stats, cpu, flip=flip, amp=True)
        assert e16.dtype == torch.float32 and not torch.equal(e16, e32)  # autocast was on
        # Each layer rounds its inputs, weights and output to bfloat16 (accumulating in
        # float32): at most ~3u of relative error per layer, added over the layers.
        rel = (e16 - e32).norm(dim=1) / e32.norm(dim=1)  # (N,)
        assert float(rel.max()) <= 3 * layers * BF16_U


def test_bfloat16_steps_train_to_a_finite_model() -> None:
    from tripletlab.models import build_model
    from tripletlab.training import ObjectiveFn, TrainConfig, train_epoch

    config = TrainConfig(
        dataset="digits", labels_per_batch=4, samples_per_label=4, augment=False, amp="on"
    ).resolved()
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
