"""Embedding images (:mod:`tripletlab.embedding`): flip TTA, bfloat16 policy, batches,
progress."""

from __future__ import annotations

import pytest
import torch

from tripletlab import embedding
from tripletlab.embedding import EmbedMode, embed
from tripletlab.models import EmbeddingModel, build_model

STATS = ((0.5,), (0.25,))
CPU = torch.device("cpu")


def small_model() -> EmbeddingModel:
    torch.manual_seed(0)
    return build_model("small", in_channels=1, image_size=8, width=4)


def test_embed_with_flip_averages_the_mirror_image() -> None:
    model = small_model()
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    plain = embed(model, images, STATS, CPU)
    mirror = embed(model, images.flip(-1), STATS, CPU)
    both = embed(model, images, STATS, CPU, EmbedMode(flip=True))
    torch.testing.assert_close(both, torch.nn.functional.normalize(plain + mirror, dim=1))
    assert not torch.allclose(both, plain)


def test_batches_and_progress_do_not_change_the_embeddings() -> None:
    model = small_model()
    images = torch.randint(0, 256, (21, 1, 8, 8), dtype=torch.uint8)
    calls: list[tuple[str, int, int]] = []
    whole = embed(model, images, STATS, CPU, EmbedMode(batch_size=64))
    parts = embed(
        model,
        images,
        STATS,
        CPU,
        EmbedMode(batch_size=2),
        progress=lambda d, done, n: calls.append((d, done, n)),
        what="test",
    )
    # Each row is computed alone by the same kernels except for the batch dimension, whose
    # size may change the convolution's blocking: float32 rounding of a D-term sum, far
    # below the unit norm of the rows.
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)
    assert calls[0] == ("embedding test", 0, 21) and calls[-1] == ("embedding test", 21, 21)
    assert [c[1] for c in calls] == [0, 16, 21]  # every 8 batches, and the end
    assert embed(model, images[:0], STATS, CPU).shape == (0, model.embedding_dim)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        EmbedMode(batch_size=0)


BF16_U = 2.0**-8  # bfloat16's unit roundoff: 8 significant bits


def test_embed_in_bfloat16_is_float32_up_to_bfloat16_rounding() -> None:
    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=8)  # 4 convolutions and a linear
    layers = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in model.modules())
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    for flip in (False, True):
        e32 = embed(model, images, STATS, CPU, EmbedMode(flip=flip, amp=False))
        e16 = embed(model, images, STATS, CPU, EmbedMode(flip=flip, amp=True))
        assert e16.dtype == torch.float32 and not torch.equal(e16, e32)  # autocast was on
        # Each layer rounds its inputs, weights and output to bfloat16 (accumulating in
        # float32): at most ~3u of relative error per layer, added over the layers.
        rel = (e16 - e32).norm(dim=1) / e32.norm(dim=1)  # (N,)
        assert float(rel.max()) <= 3 * layers * BF16_U


def test_amp_auto_needs_native_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert embedding.cpu_has_native_bf16("flags\t: fpu avx2 avx512f avx512_bf16 avx512vl")
    assert embedding.cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile")
    assert not embedding.cpu_has_native_bf16("flags : fpu avx2 avx512f avx512bw")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert embedding.use_amp("auto", cuda) and not embedding.use_amp("off", cuda)
    assert embedding.use_amp("on", cpu)
    # use_amp reads cpu_has_native_bf16 from its own module: patch it there
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: False)
    assert not embedding.use_amp("auto", cpu)
    assert EmbedMode.of_run(True, "auto", cpu, 32) == EmbedMode(flip=True, amp=False, batch_size=32)
    monkeypatch.setattr(embedding, "cpu_has_native_bf16", lambda: True)
    assert embedding.use_amp("auto", cpu)
    with pytest.raises(ValueError, match="unknown amp mode 'yes'"):
        embedding.use_amp("yes", cpu)


def test_check_finite_names_the_rows() -> None:
    x = torch.zeros(4, 3)
    embedding.check_finite(x, "test")
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf embeddings for 1 of 4 test images"):
        embedding.check_finite(x, "test")
