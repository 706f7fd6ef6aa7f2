"""The frozen-backbone fast path (:mod:`tripletlab.training.frozen`): the head on the cached
features of view 0 is the whole network on the image; augmented views differ and are drawn
from the generator; the features are computed once and read back; a damaged or mismatched
file is computed again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from tripletlab.data import normalize
from tripletlab.models import EmbeddingModel, build_model
from tripletlab.training.frozen import (
    FeatureBank,
    backbone_features,
    cached_features,
    features_key,
    head_model,
)

STATS = ((0.5,), (0.25,))


def _prepare(x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is not None:  # a stand-in augmentation: random flips
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return normalize(x, *STATS)


def _model_and_images() -> tuple[EmbeddingModel, Tensor]:
    torch.manual_seed(0)
    model = build_model("small", in_channels=1, image_size=12, width=4, embedding_dim=8)
    g = torch.Generator().manual_seed(1)
    return model, torch.randint(0, 256, (10, 1, 12, 12), dtype=torch.uint8, generator=g)


def test_the_head_on_view_zero_is_the_whole_network() -> None:
    model, images = _model_and_images()
    feats = backbone_features(
        model.backbone,
        images,
        views=3,
        prepare=_prepare,
        generator=torch.Generator().manual_seed(2),
        batch_size=4,
    )
    assert feats.shape == (3, 10, model.feature_dim) and feats.dtype == torch.float16
    model.eval()
    head = head_model(model)
    with torch.no_grad():
        whole = model.project(normalize(images, *STATS))  # (10, D), before normalising
        from_features = head.project(feats[0].float())
        # the features are rounded to float16 (relative error <= 2^-11) before the head, so
        # each output moves by at most max|f| 2^-11 times the largest row sum of |W|; twice
        # that leaves room for float32 rounding, far below it
        scale = feats[0].float().abs().amax() * model.projection.weight.abs().sum(1).amax()
    assert torch.allclose(from_features, whole, atol=float(scale) * 2**-10, rtol=0)
    norms = head(feats[0].float()).detach().norm(dim=1)  # (10,)
    assert torch.allclose(norms, torch.ones(10))  # normalising as the model does
    assert head.projection is model.projection  # the same parameters train
    assert not torch.equal(feats[1], feats[0]) and not torch.equal(feats[1], feats[2])


def test_features_are_computed_once_and_read_back(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> Tensor:
        calls.append(1)
        return torch.randn(2, 5, 3).half()

    key = features_key({"dataset": "x", "views": 2})
    first = cached_features(tmp_path, key, (2, 5), compute)
    second = cached_features(tmp_path, key, (2, 5), compute)
    assert calls == [1] and torch.equal(first, second)
    assert key != features_key({"dataset": "x", "views": 3})
    # another shape (the data changed) or a damaged file: computed again
    with pytest.warns(UserWarning, match="corrupt or of other data"):
        cached_features(tmp_path, key, (2, 6), lambda: torch.zeros(2, 6, 3).half())
    (tmp_path / "features" / f"{key}.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="corrupt or of other data"):
        again = cached_features(tmp_path, key, (2, 5), compute)
    assert len(calls) == 2 and again.shape == (2, 5, 3)
    assert cached_features(None, key, (2, 5), compute).shape == (2, 5, 3)  # no folder


def test_the_bank_draws_a_view_per_row() -> None:
    features = torch.arange(3 * 4 * 2, dtype=torch.float16).view(3, 4, 2)  # (V, N, F)
    bank = FeatureBank(features, torch.Generator().manual_seed(0))
    rows = torch.tensor([0, 1, 2, 3] * 50)
    out = bank[rows]  # (200, 2)
    assert out.dtype == torch.float32 and out.shape == (200, 2) and len(bank) == 4
    views = (out[:, 0] - 2 * rows) / 8  # row i of view v holds 8 v + 2 i
    assert set(views.long().tolist()) == {0, 1, 2}
    again = FeatureBank(features, torch.Generator().manual_seed(0))[rows]
    assert torch.equal(out, again)  # the generator decides
    with pytest.raises(ValueError, match=r"\(V, N, F\)"):
        FeatureBank(features[0], torch.Generator())
