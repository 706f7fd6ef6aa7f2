"""Input checks shared by the metrics: one-line ``ValueError`` messages that name the
argument, the shape or value at fault and what to pass instead."""

from __future__ import annotations

import torch
from torch import Tensor

from tripletlab.checks import nonfinite_rows


def _check_embeddings(x: Tensor, name: str) -> None:
    if x.dim() != 2 or not x.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a 2-D floating tensor (N, D), got shape {tuple(x.shape)} and "
            f"dtype {x.dtype}; flatten or pool the network output and pass floats"
        )
    bad = nonfinite_rows(x)
    if bad:
        raise ValueError(
            f"{name} contain NaN or Inf in {bad} of {x.shape[0]} rows; metrics need finite "
            "embeddings: fix the model (or drop those rows) before evaluating"
        )


def _check_label_tensor(y: Tensor, label_name: str) -> None:
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"{label_name} must be a 1-D integer tensor of class ids, got shape "
            f"{tuple(y.shape)} and dtype {y.dtype}; pass torch.long of shape (N,)"
        )


def _check_labeled(x: Tensor, y: Tensor, name: str, label_name: str) -> None:
    _check_embeddings(x, name)
    _check_label_tensor(y, label_name)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{label_name} has {y.shape[0]} entries but {name} has {x.shape[0]} rows; "
            "pass one label per embedding"
        )


def _check_gallery(queries: Tensor, gallery: Tensor) -> None:
    if gallery.dim() == 2 and queries.dim() == 2 and gallery.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the gallery has "
            f"{gallery.shape[1]}; embed both with the same model"
        )


def _check_k(k: int, limit: int, what: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive integer, got {k!r}")
    if k > limit:
        raise ValueError(
            f"{what}={k} is larger than the gallery ({limit} items to choose from); "
            f"pass {what} <= {limit}"
        )
