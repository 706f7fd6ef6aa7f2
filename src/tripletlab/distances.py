"""Pairwise and paired distances with safe gradients.

One convention everywhere in tripletlab: smaller is closer. Cosine distance is ``1 - cos``.

The Euclidean distance is the square root of the squared distance, and ``sqrt`` has an
infinite derivative at 0 (pytorch#37154): duplicated embeddings, the diagonal of a distance
matrix and collapsed embeddings all hit it. :func:`safe_sqrt` defines that derivative as 0,
which is the subgradient that keeps every loss in tripletlab finite.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from tripletlab.checks import check_choice

Distance = Literal["euclidean", "sqeuclidean", "cosine"]
DISTANCES: tuple[Distance, ...] = get_args(Distance)


def check_distance(distance: str) -> None:
    """Raise ``ValueError`` if ``distance`` is not one of :data:`DISTANCES`."""
    check_choice("distance", distance, DISTANCES)


class _SafeSqrt(torch.autograd.Function):
    """``sqrt`` whose derivative at exactly 0 is 0 instead of ``inf``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        y = x.sqrt()
        # d sqrt(x)/dx = 1 / (2 sqrt(x)); defined as 0 where sqrt(x) == 0. Only called when a
        # gradient is wanted (see safe_sqrt), so the slope is computed here, once.
        ctx.save_for_backward(torch.where(y > 0, 0.5 / y, 0.0))
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (slope,) = ctx.saved_tensors  # type: ignore[attr-defined]
        out: Tensor = grad * slope
        return out


def safe_sqrt(x: Tensor) -> Tensor:
    """Element-wise ``sqrt`` of a non-negative tensor with a zero gradient at 0.

    Args:
        x: any shape, values >= 0.

    Returns:
        ``x.sqrt()``, same shape; its gradient is finite everywhere.
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.sqrt()
    out: Tensor = _SafeSqrt.apply(x)  # type: ignore[no-untyped-call]
    return out


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (bf16, fp16, fp32) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pairwise_distances(
    x: Tensor, y: Tensor | None = None, distance: Distance = "euclidean"
) -> Tensor:
    """All distances between the rows of ``x`` and the rows of ``y``.

    Args:
        x: (N, D) embeddings.
        y: (M, D) embeddings, or ``None`` for ``y = x``.
        distance: ``"euclidean"`` (L2), ``"sqeuclidean"`` (squared L2) or ``"cosine"``
            (``1 - cos``; rows are L2-normalised first, a zero row has cosine 0 with all).

    Returns:
        (N, M) distances, never negative (cosine within [0, 2]). When ``y`` is ``None`` the
        diagonal is exactly 0. float64 input gives float64; float32, float16 and bfloat16
        are computed and returned in float32 (as autocast does for ``cdist``), since the
        Gram-matrix expansion below loses everything in 8 bits of mantissa.

    Corner cases:
        Duplicated rows and all-identical inputs give distance 0 with finite (zero)
        gradients. The Euclidean forms use ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product, as
        ``torch.cdist`` does for large inputs), so two different rows closer than about
        ``sqrt(eps) * |x|`` may read as a few 1e-4 apart in float32; use float64 where that
        matters.
    """
    check_distance(distance)
    if x.dim() != 2 or (y is not None and (y.dim() != 2 or y.shape[1] != x.shape[1])):
        shapes = f"{tuple(x.shape)}" + ("" if y is None else f" and {tuple(y.shape)}")
        raise ValueError(f"pairwise_distances expects (N, D) and (M, D) tensors, got {shapes}")
    dtype = _compute_dtype(x)
    xs = x.to(dtype)
    ys = xs if y is None else y.to(dtype)
    if distance == "cosine":
        xn = F.normalize(xs, dim=1)
        yn = xn if y is None else F.normalize(ys, dim=1)
        d = (1.0 - xn @ yn.T).clamp(0.0, 2.0)  # (N, M)
    else:
        x2 = (xs * xs).sum(1)  # (N,)
        y2 = x2 if y is None else (ys * ys).sum(1)  # (M,)
        d = torch.addmm(x2[:, None] + y2[None, :], xs, ys.T, alpha=-2.0)  # (N, M)
        d = d.clamp_min(0.0)
    if y is None:
        d.diagonal().zero_()  # in place on the clamp's output, which its backward does not need
    if distance == "euclidean":
        d = safe_sqrt(d)
    return d


def paired_distances(x: Tensor, y: Tensor, distance: Distance = "euclidean") -> Tensor:
    """Distances between matching rows: ``d(x[i], y[i])``.

    Args:
        x: (N, D) embeddings.
        y: (N, D) embeddings.
        distance: as in :func:`pairwise_distances`.

    Returns:
        (N,) distances, never negative, exactly 0 for identical rows, with finite gradients.
        Computed from the differences (no cancellation), in the dtype rules of
        :func:`pairwise_distances`.
    """
    check_distance(distance)
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(
            f"paired_distances expects two (N, D) tensors of one shape, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = _compute_dtype(x)
    xs, ys = x.to(dtype), y.to(dtype)
    if distance == "cosine":
        return (1.0 - (F.normalize(xs, dim=1) * F.normalize(ys, dim=1)).sum(1)).clamp(0.0, 2.0)
    d2 = ((xs - ys) ** 2).sum(1)  # (N,)
    return safe_sqrt(d2) if distance == "euclidean" else d2
