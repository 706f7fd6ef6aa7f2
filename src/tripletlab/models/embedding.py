"""The wrapper every model is, :class:`EmbeddingModel` (backbone, linear projection to the
embedding, L2 normalisation as in FaceNet, Schroff, Kalenichenko & Philbin 2015, and an
optional classifier for the softmax baseline), :class:`Forward` (a chosen forward pass of a
model as a module of its own), and :func:`fuse_batchnorm`, an inference copy with each
BatchNorm (Ioffe & Szegedy 2015) folded into the convolution before it."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tripletlab.models.checks import _check_int

M = TypeVar("M", bound=nn.Module)


class Forward(nn.Module):
    """``forward(model, x)`` as a module sharing ``model``'s parameters and buffers: what a
    wrapper that takes a module (DDP, ``torch.compile``) needs to see one forward pass of a
    model with several (embeddings, or logits).

    Args:
        model: the module whose parameters the pass uses (registered as ``.model``).
        forward: ``forward(model, x)``, e.g. ``lambda m, x: m.logits(x)``.
    """

    def __init__(self, model: nn.Module, forward: Callable[[Any, Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.call = forward

    def forward(self, x: Tensor) -> Tensor:
        return self.call(self.model, x)


class EmbeddingModel(nn.Module):
    """``backbone -> Linear(feature_dim, embedding_dim) -> optional L2 normalisation``.

    With ``num_classes`` it also holds a classifier ``Linear(embedding_dim, num_classes)`` on
    the unnormalised projection, for the softmax baseline: :meth:`logits` and :meth:`forward`
    share the whole network, so the embedding of a softmax-trained model is the feature just
    before the classifier's linear layer (the penultimate layer).

    Args:
        backbone: module mapping (B, C, H, W) images to (B, feature_dim) features.
        feature_dim: width of the backbone's output, >= 1.
        embedding_dim: width of the embedding, >= 1.
        normalize: L2-normalise the output of :meth:`forward` (see :mod:`tripletlab.models`
            for why this is the default).
        num_classes: size of the classification head; ``None`` for no head.

    Shapes:
        forward: (B, C, H, W) float -> (B, embedding_dim), unit rows when ``normalize``.
        logits: (B, C, H, W) float -> (B, num_classes).

    Raises:
        ValueError: at construction if ``feature_dim``, ``embedding_dim`` or ``num_classes``
            is not an integer >= 1.

    Corner cases:
        - A zero projection row gives a zero embedding even with ``normalize``
          (``F.normalize`` divides by ``max(norm, 1e-12)``), so the norm is 1 only for
          nonzero projections.
        - With ``embedding_dim == 1`` and ``normalize`` every embedding is +1 or -1.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        embedding_dim: int,
        *,
        normalize: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.feature_dim = _check_int("feature_dim", feature_dim, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        if num_classes is not None:
            _check_int("num_classes", num_classes, 1)
        self.normalize = bool(normalize)
        self.num_classes = num_classes
        self.backbone = backbone
        self.projection = nn.Linear(feature_dim, embedding_dim)
        self.classifier = None if num_classes is None else nn.Linear(embedding_dim, num_classes)

    def project(self, x: Tensor) -> Tensor:
        """The unnormalised embedding: (B, C, H, W) float -> (B, embedding_dim)."""
        return self.projection(self.backbone(x))  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings (B, embedding_dim) of images (B, C, H, W); unit rows when normalising."""
        z = self.project(x)  # (B, embedding_dim)
        return F.normalize(z, dim=1) if self.normalize else z

    def logits(self, x: Tensor) -> Tensor:
        """Class scores (B, num_classes) from the classifier on the unnormalised embedding.

        Raises:
            RuntimeError: if the model was built without ``num_classes``.
        """
        if self.classifier is None:
            raise RuntimeError(
                "this model has no classification head; build it with num_classes=<number of "
                "classes> to use logits()"
            )
        return self.classifier(self.project(x))  # type: ignore[no-any-return]


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution, in ``conv``'s memory format."""
    out = fuse_conv_bn_eval(conv, bn)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):
        out.weight.data = out.weight.data.contiguous(memory_format=torch.channels_last)
    return out


def fuse_batchnorm(model: M) -> M:
    """An inference copy of ``model`` with every ``Conv2d`` followed by a ``BatchNorm2d`` in
    an ``nn.Sequential`` folded into one convolution (``W' = W * g / s``, ``b' = (b - mu) * g
    / s + beta`` with ``s = sqrt(var + eps)``, the BatchNorm's running statistics).

    The outputs equal the eval-mode model's up to float rounding; on a CPU the default
    ``small`` net embeds about 1.5x faster (BatchNorm was a quarter of its inference time).
    Channels-last weights stay channels-last.

    Pairs that are attributes rather than neighbours (a :class:`ResNet`'s stem and blocks,
    named as in torchvision: ``conv1``/``bn1``...) are folded where the module's class lists
    them in ``CONV_BN``; the BatchNorm becomes an ``nn.Identity``.

    Returns:
        ``model`` itself when there is nothing to fold (e.g. :class:`EmbeddingNet`), else a
        folded deep copy in eval mode; ``model`` is never changed.

    Raises:
        RuntimeError: if ``model`` is in training mode (running statistics are not what a
            training-mode BatchNorm uses).
    """
    if model.training:
        raise RuntimeError("fuse_batchnorm needs a model in eval mode; call model.eval() first")

    def pairs(seq: nn.Sequential) -> bool:
        kids = list(seq)
        return any(
            isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
            for a, b in itertools.pairwise(kids)
        )

    def named(m: nn.Module) -> list[tuple[str, str]]:
        return [
            (c, b)
            for c, b in getattr(type(m), "CONV_BN", ())
            if isinstance(getattr(m, c), nn.Conv2d) and isinstance(getattr(m, b), nn.BatchNorm2d)
        ]

    if not any((isinstance(m, nn.Sequential) and pairs(m)) or named(m) for m in model.modules()):
        return model
    fused = copy.deepcopy(model)
    for m in list(fused.modules()):
        for conv_name, bn_name in named(m):
            setattr(m, conv_name, _folded(getattr(m, conv_name), getattr(m, bn_name)))
            setattr(m, bn_name, nn.Identity())
    for seq in [m for m in fused.modules() if isinstance(m, nn.Sequential) and pairs(m)]:
        kids: list[nn.Module] = list(seq)
        out: list[nn.Module] = []
        i = 0
        while i < len(kids):
            a = kids[i]
            b = kids[i + 1] if i + 1 < len(kids) else None
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                out.append(_folded(a, b))
                i += 2
            else:
                out.append(a)
                i += 1
        for name in list(seq._modules):
            del seq._modules[name]
        for j, m in enumerate(out):
            seq.add_module(str(j), m)
    return fused
