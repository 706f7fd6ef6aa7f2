"""Float error bounds the tests derive their tolerances from, and the checks built on them.

The same float32 computation gives slightly different results on different CPUs: BLAS kernels
(MKL on AMX, AVX-512 or AVX2, OpenBLAS, faiss's own) sum a dot product in different orders.
A test that compares two *different* computations (float32 against a float64 twin, torch
against faiss, one kernel against another) must allow for that, and a ranking compared across
them is only fixed where no two items are closer than the error. The bounds here are worst
cases, so a test that holds on one CPU holds on every CPU; they are still far below what a
wrong formula, index or ordering gives.

A d-term dot product summed in any order is within ``d * eps * sum_i |a_i b_i|`` of the exact
value (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def unit_roundoff(dtype: torch.dtype) -> float:
    """eps of the dtype distances are computed in: float64 stays float64, the rest float32."""
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def gram_error(*xs: Tensor, distance: str = "sqeuclidean") -> float:
    """How far two computations of one squared Euclidean distance ``|q|^2 + |g|^2 - 2 q.g``
    between rows of ``xs`` (or of one cosine distance ``1 - cos``) may differ.

    Each term is a d-term sum of products of values up to ``m`` in magnitude (``m = 1`` for
    the unit rows of cosine), and two more roundings combine the terms; a kernel's summation
    order moves the result by about ``(d + 2) * m^2 * eps`` (a few units in the last place of
    the largest squared norm), and four times that covers two kernels. For the Euclidean
    distance itself use :func:`assert_distances_close`, which compares squares (``sqrt`` near
    0 turns this error into its square root).
    """
    d = xs[0].shape[1]
    m = 1.0 if distance == "cosine" else max(float(x.abs().max()) for x in xs if x.numel())
    return 4 * (d + 2) * m * m * unit_roundoff(xs[0].dtype)


def assert_distances_close(got: Tensor, want: Tensor, distance: str, error: float) -> None:
    """``got`` and ``want`` distances computed two ways agree within ``error`` (a bound on the
    squared-Euclidean or cosine distance, e.g. :func:`gram_error`): Euclidean distances are
    compared squared, so that the test stays as tight near 0 as elsewhere."""
    g, w = got.double(), want.double()
    if distance == "euclidean":
        g, w = g.square(), w.square()
    torch.testing.assert_close(g, w, rtol=4 * unit_roundoff(got.dtype), atol=error)


def order_keys(q: Tensor, g: Tensor | None = None, distance: str = "euclidean") -> Tensor:
    """(Q, N) float64 keys that order the gallery as ``distance`` does, computed from the
    differences (no cancellation): squared Euclidean for both Euclidean forms, ``1 - cos`` for
    cosine. With ``g`` None the gallery is ``q`` and a query's own row is ``inf``."""
    a = q.double()
    b = a if g is None else g.double()
    if distance == "cosine":
        keys = 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # (Q, N)
    else:
        keys = (a[:, None, :] - b[None, :, :]).square().sum(2)  # (Q, N)
    if g is None:
        keys.fill_diagonal_(float("inf"))
    return keys


def assert_same_neighbours(got: Tensor, want: Tensor, keys: Tensor, error: float) -> None:
    """(Q, k) neighbour rows found by two computations agree up to near-ties: at each rank the
    two rows have the same exact key (:func:`order_keys`) within ``error``, and no row is
    listed twice. Where the keys are further apart than ``error`` the rows must be equal."""
    assert got.shape == want.shape
    assert all(len(set(row)) == len(row) for row in got.tolist())
    torch.testing.assert_close(keys.gather(1, got), keys.gather(1, want), rtol=0, atol=error)


def relevance_margin(keys: Tensor, relevant: Tensor) -> float:
    """The smallest key gap between a relevant and an irrelevant item of one query (``inf``
    keys left out): where it exceeds the error of two computations, both rank every relevant
    item on the same side of every irrelevant one, so rank-based metrics agree exactly."""
    finite = torch.isfinite(keys)
    gaps = (keys[:, :, None] - keys[:, None, :]).abs()  # (Q, N, N)
    pairs = (relevant & finite)[:, :, None] & (~relevant & finite)[:, None, :]
    return float(gaps[pairs].min()) if bool(pairs.any()) else float("inf")


#: Two float32 forward passes of one of the tests' networks through different kernels (batch
#: size, memory layout, fused BatchNorm, another CPU's oneDNN convolutions) differ by rounding
#: only: measured <= 1e-6 on outputs up to 0.5 for every model here with AVX-512, AVX2 and
#: SSE4.1 oneDNN kernels, as far as either is from the float64 forward. atol + rtol * |out|
#: leaves 20x and more for CPUs not tried; a wrong layer, a train-mode BatchNorm or a wrong
#: input normalisation moves the outputs by more than 1e-2.
FORWARD_ATOL, FORWARD_RTOL = 1e-5, 1e-4
