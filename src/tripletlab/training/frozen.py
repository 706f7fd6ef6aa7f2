"""The frozen-backbone fast path (``--frozen-backbone``): the pretrained backbone's features
of every training image, and of a few augmented views of it, are computed once
(:func:`backbone_features`), cached (:func:`cached_features`), and only the embedding head
(the projection, and the classifier of the softmax objective) trains on them, a batch of
feature rows at a time (:class:`FeatureBank`, :func:`head_model`).

The network the run saves is the whole one (backbone and head), so it embeds, evaluates and
exports like any other run: since the backbone is frozen in evaluation mode, the head on the
cached features of an image is the whole network on that image (up to the float16 rounding
of the cached features).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tripletlab.data import Images, Progress
from tripletlab.io import WriteError, atomic_torch_save
from tripletlab.models import EmbeddingModel

#: Bumped whenever the features of the same inputs would change: older files are recomputed.
FEATURES_VERSION = 1

#: ``prepare(x, generator)``: (B, C, H, W) uint8 images -> (B, C, H', W') float, the network's
#: input on its device: augmented with ``generator``, as evaluation sees them with ``None``.
Prepare = Callable[[Tensor, torch.Generator | None], Tensor]


@torch.no_grad()
def backbone_features(
    backbone: nn.Module,
    images: Images,
    *,
    views: int,
    prepare: Prepare,
    generator: torch.Generator,
    batch_size: int,
    amp: bool = False,
    device_type: str = "cpu",
    progress: Progress | None = None,
) -> Tensor:
    """The backbone's features of each image, in evaluation mode: (V, N, F) float16 on the
    CPU.

    View 0 is each image as evaluation sees it (``prepare(x, None)``); views 1..V-1 are
    augmented copies (``prepare(x, generator)``), drawn in order from ``generator``.

    Raises:
        ValueError: ``views`` < 1, or a backbone whose features are not finite.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    backbone.eval()
    n = len(images)
    out: Tensor | None = None
    desc = f"backbone features of {n:,} images x {views} view(s)"
    total = n * views
    if progress is not None:
        progress(desc, 0, total)
    for v in range(views):
        for s in range(0, n, batch_size):
            x = prepare(images[s : s + batch_size], None if v == 0 else generator)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
                f = backbone(x).float()  # (b, F)
            if not bool(torch.isfinite(f).all()):
                raise ValueError("the backbone gave non-finite features; check its weights")
            if out is None:
                out = torch.empty(views, n, f.shape[1], dtype=torch.float16)
            out[v, s : s + f.shape[0]] = f.to(torch.float16).cpu()
            if progress is not None:
                progress(desc, v * n + s + f.shape[0], total)
    if out is None:  # no images
        return torch.zeros(views, 0, 0, dtype=torch.float16)
    return out


def features_key(parts: Mapping[str, Any]) -> str:
    """A file name for the features of ``parts`` (JSON-able: what the features depend on)."""
    text = json.dumps({"version": FEATURES_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_features(
    folder: Path | None, key: str, shape: tuple[int, int], compute: Callable[[], Tensor]
) -> Tensor:
    """The features saved under ``key`` in ``folder``, else ``compute()``, saved there.

    ``shape`` is (V, N): a saved file of another shape, or one that cannot be read, is
    computed again (with one warning). A folder that cannot be written is warned about once;
    the features are then used without being saved.
    """
    if folder is None:
        return compute()
    path = Path(folder) / "features" / f"{key}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            features = saved["features"]
            ok = (
                saved.get("key") == key
                and isinstance(features, Tensor)
                and features.dim() == 3
                and tuple(features.shape[:2]) == shape
                and bool(torch.isfinite(features).all())
            )
        except Exception:  # unreadable: any error of torch.load or the dict
            ok = False
        if ok:
            return features  # type: ignore[no-any-return]
        warnings.warn(
            f"the cached backbone features {path} are corrupt or of other data; computing "
            "them again",
            stacklevel=2,
        )
    features = compute()
    try:
        atomic_torch_save({"key": key, "features": features}, path)
    except WriteError as err:
        warnings.warn(f"{err}; the features are used without being cached", stacklevel=2)
    return features


class FeatureBank:
    """Training inputs from cached features: row ``i`` of a batch is one of image ``i``'s V
    views, drawn uniformly at random from ``generator`` (one draw per row, in order).

    Shapes:
        features: (V, N, F) float16; indexing with a (B,) index gives (B, F) float32.
    """

    def __init__(self, features: Tensor, generator: torch.Generator) -> None:
        if features.dim() != 3:
            raise ValueError(f"features must be (V, N, F), got {tuple(features.shape)}")
        self.features = features
        self.generator = generator

    def __len__(self) -> int:
        return int(self.features.shape[1])

    def __getitem__(self, index: Tensor) -> Tensor:
        views = self.features.shape[0]
        v = torch.randint(0, views, index.shape, generator=self.generator)  # (B,)
        return self.features[v, index.cpu()].float()  # (B, F)


def head_model(model: EmbeddingModel) -> EmbeddingModel:
    """``model`` without its backbone: its projection (and classifier), the same parameters,
    on (B, feature_dim) features; normalising as ``model`` does."""
    head = EmbeddingModel(
        nn.Identity(),
        model.feature_dim,
        model.embedding_dim,
        normalize=model.normalize,
        num_classes=model.num_classes,
    )
    head.projection = model.projection
    head.classifier = model.classifier
    return head
