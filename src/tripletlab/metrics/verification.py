"""Verification over all pairs ``i < j``, from chunked distance blocks.

The torchvision similarity reference's best-threshold pair accuracy, the same with the
threshold fitted on held-out pairs, and ROC AUC and TAR at fixed FAR from per-chunk
histograms of the pair distances.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tripletlab.distances import Distance, check_distance
from tripletlab.metrics.blocks import _block, _chunks, _prepare, _rows_per_chunk
from tripletlab.metrics.checks import _check_gallery, _check_labeled


def _pair_histograms(
    embeddings: Tensor,
    labels: Tensor,
    bucket: Callable[[Tensor], Tensor],
    buckets: int,
    distance: Distance,
    chunk: int | None,
) -> tuple[Tensor, Tensor]:
    """Histograms of the different-class and same-class pairs ``i < j`` over ``buckets``.

    ``bucket`` maps a (C, M) block of distances to bucket ids in ``[0, buckets)``. Row i of
    a chunk is compared with the items after it only, so each pair is seen once.
    """
    n = embeddings.shape[0]
    hist = torch.zeros(2 * buckets, dtype=torch.long, device=embeddings.device)
    prepared = _prepare(embeddings, distance)
    for s in _chunks(max(n - 1, 0), _rows_per_chunk(n, chunk)):
        later = slice(s.start + 1, n)
        d = _block(embeddings[s], prepared, start=s.start + 1)  # (C, M)
        rows = torch.arange(d.shape[0], device=d.device)[:, None]  # (C, 1)
        upper = torch.arange(d.shape[1], device=d.device)[None, :] >= rows  # (C, M): j > i
        same = labels[s][:, None] == labels[later][None, :]  # (C, M)
        key = bucket(d).add_(same, alpha=buckets)  # (C, M)
        hist += torch.bincount(key[upper], minlength=2 * buckets)
    return hist[:buckets], hist[buckets:]


def _threshold_grid(thresholds: Tensor | None, device: torch.device) -> Tensor:
    t = torch.arange(151, dtype=torch.float64) / 100 if thresholds is None else thresholds
    t = t.to(device, torch.float64)
    if t.dim() != 1 or t.numel() == 0 or bool((t[1:] <= t[:-1]).any()):
        raise ValueError("thresholds must be a non-empty 1-D tensor of increasing distances")
    return t


def _threshold_accuracies(
    embeddings: Tensor, labels: Tensor, t: Tensor, distance: Distance, chunk: int | None
) -> tuple[Tensor, int, int]:
    """(T,) accuracy at each threshold, #same pairs, #different pairs."""

    def first_threshold_at_or_above(d: Tensor) -> Tensor:
        # The pair is "same" for that threshold and every later one; T means for none.
        return torch.searchsorted(t, d.double().contiguous())

    diff, same = _pair_histograms(
        embeddings, labels, first_threshold_at_or_above, t.shape[0] + 1, distance, chunk
    )
    n_same, n_diff = int(same.sum()), int(diff.sum())
    same_le = same.cumsum(0)[:-1]  # (T,) same pairs with d <= t
    diff_gt = n_diff - diff.cumsum(0)[:-1]  # (T,) different pairs with d > t
    return (same_le + diff_gt).double() / max(n_same + n_diff, 1), n_same, n_diff


@dataclass(frozen=True)
class PairAccuracy:
    """torchvision's pair accuracy: the best threshold's accuracy over all pairs ``i < j``.

    Attributes:
        accuracy: fraction of pairs classified right at ``threshold``.
        threshold: the distance threshold (pairs with distance <= threshold are "same").
        floor: the accuracy of answering "different" for every pair.
        num_pairs: N (N - 1) / 2.
    """

    accuracy: float
    threshold: float
    floor: float
    num_pairs: int


def pair_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    *,
    thresholds: Tensor | None = None,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> PairAccuracy:
    """Best-threshold verification accuracy over all pairs, as the torchvision reference.

    Every pair ``i < j`` is called "same" when ``d(i, j) <= t``; the accuracy is computed for
    each ``t`` in ``thresholds`` (default 0.00, 0.01, ..., 1.50) and the best is reported with
    its threshold (the smallest such ``t`` on ties). Note that the threshold is tuned on the
    pairs it is scored on (:func:`held_out_pair_accuracy` does not), and that the "always
    different" floor is high when there are many classes (90% with 10 balanced classes).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        thresholds: (T,) increasing thresholds.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory is O(chunk * N).

    Example:
        >>> r = pair_accuracy(torch.tensor([[0.0], [0.25], [1.0]]), torch.tensor([0, 0, 1]))
        >>> r.accuracy, r.threshold, round(r.floor, 4)
        (1.0, 0.25, 0.6667)
    """
    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    t = _threshold_grid(thresholds, embeddings.device)
    acc, n_same, n_diff = _threshold_accuracies(
        embeddings.detach(), labels.to(embeddings.device), t, distance, chunk
    )
    best = int(acc.argmax())
    total = max(n_same + n_diff, 1)
    return PairAccuracy(float(acc[best]), float(t[best]), n_diff / total, n_same + n_diff)


@dataclass(frozen=True)
class HeldOutPairAccuracy:
    """Pair accuracy at a threshold fitted on other pairs.

    Attributes:
        accuracy: fraction of the test pairs classified right at ``threshold``.
        threshold: the best threshold on the held-out (fit) pairs.
        fit_accuracy: its accuracy on the fit pairs (optimistic, as :func:`pair_accuracy`).
        floor: the accuracy of answering "different" for every test pair.
        num_pairs: test pairs, N (N - 1) / 2.
        num_fit_pairs: fit pairs.
    """

    accuracy: float
    threshold: float
    fit_accuracy: float
    floor: float
    num_pairs: int
    num_fit_pairs: int


def held_out_pair_accuracy(
    fit_embeddings: Tensor,
    fit_labels: Tensor,
    embeddings: Tensor,
    labels: Tensor,
    *,
    thresholds: Tensor | None = None,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> HeldOutPairAccuracy:
    """Pair accuracy on the test pairs at the threshold that is best on held-out pairs.

    The threshold ``t*`` maximises the accuracy of "same iff ``d(i, j) <= t``" over all pairs
    ``i < j`` of the fit set (the smallest such ``t`` on ties, among ``thresholds``, default
    0.00, 0.01, ..., 1.50); the accuracy is then that of ``t*`` on all pairs of the test set,
    an honest estimate where :func:`pair_accuracy` tunes on the pairs it scores.

    Args:
        fit_embeddings: (M, D) held-out embeddings (e.g. a validation split).
        fit_labels: (M,) their classes.
        embeddings: (N, D) test embeddings.
        labels: (N,) their classes.
        thresholds: (T,) increasing thresholds.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory is O(chunk * N).

    Corner cases:
        A set of fewer than two items has no pairs: accuracies 0 and, for the fit set, the
        first threshold.

    Example:
        Fit pairs: 0.25 (same), 1.0 and 0.75 (different): best t = 0.25. Test pairs: 0.5
        (same, now called different), 2.0 and 1.5 (different): 2 of 3 right.

        >>> y = torch.tensor([0, 0, 1])
        >>> r = held_out_pair_accuracy(torch.tensor([[0.0], [0.25], [1.0]]), y,
        ...                            torch.tensor([[0.0], [0.5], [2.0]]), y)
        >>> r.threshold, round(r.accuracy, 4), r.fit_accuracy
        (0.25, 0.6667, 1.0)
    """
    _check_labeled(fit_embeddings, fit_labels, "fit_embeddings", "fit_labels")
    _check_labeled(embeddings, labels, "embeddings", "labels")
    _check_gallery(fit_embeddings, embeddings)
    check_distance(distance)
    t = _threshold_grid(thresholds, embeddings.device)
    fit_acc, fit_same, fit_diff = _threshold_accuracies(
        fit_embeddings.detach().to(embeddings.device),
        fit_labels.to(embeddings.device),
        t,
        distance,
        chunk,
    )
    best = int(fit_acc.argmax())
    acc, n_same, n_diff = _threshold_accuracies(
        embeddings.detach(), labels.to(embeddings.device), t, distance, chunk
    )
    return HeldOutPairAccuracy(
        accuracy=float(acc[best]),
        threshold=float(t[best]),
        fit_accuracy=float(fit_acc[best]),
        floor=n_diff / max(n_same + n_diff, 1),
        num_pairs=n_same + n_diff,
        num_fit_pairs=fit_same + fit_diff,
    )


@dataclass(frozen=True)
class VerificationScores:
    """ROC AUC and TAR at fixed FAR over all pairs ``i < j``, from binned distances.

    Attributes:
        roc_auc: P(d_same < d_diff) + P(d_same = d_diff) / 2, pairs in one bin counting 1/2.
        roc_auc_error: the exact AUC lies within ``roc_auc +- roc_auc_error``.
        tar_at_far: FAR -> TAR (fraction of same-class pairs accepted) at ``threshold_at_far``.
        threshold_at_far: FAR -> the largest grid threshold whose FAR (fraction of
            different-class pairs with distance <= it) is at most that FAR; ``-inf`` when
            even distance 0 accepts too many (then TAR is 0, exactly).
        tar_error: FAR -> how much the exact TAR (the best over every real threshold) may
            exceed ``tar_at_far``: the same-class pairs in the next bin.
        bin_width: the grid step.
        num_positive_pairs: same-class pairs.
        num_negative_pairs: different-class pairs.
    """

    roc_auc: float
    roc_auc_error: float
    tar_at_far: dict[float, float]
    threshold_at_far: dict[float, float]
    tar_error: dict[float, float]
    bin_width: float
    num_positive_pairs: int
    num_negative_pairs: int


def _max_distance(x: Tensor, distance: Distance, chunk: int) -> float:
    """An upper bound on every pair distance: ``|xi - xj| <= |xi - m| + |xj - m|``."""
    if distance == "cosine":
        return 2.0
    if x.shape[0] == 0:
        return 0.0
    mean = x.mean(0, dtype=torch.float64)  # (D,)
    radius = max(float((x[s].double() - mean).norm(dim=1).max()) for s in _chunks(len(x), chunk))
    bound = 2.0 * radius * (1.0 + 1e-6)
    return bound * bound if distance == "sqeuclidean" else bound


def verification_scores(
    embeddings: Tensor,
    labels: Tensor,
    *,
    fars: Sequence[float] = (1e-3, 1e-2),
    bins: int = 2**20,
    distance: Distance = "euclidean",
    chunk: int | None = None,
) -> VerificationScores:
    """Verification ROC AUC and TAR at FAR over all pairs ``i < j``, in O(bins) memory.

    A pair is accepted as "same" when its distance is at most a threshold. Each chunk's
    pair distances are counted into ``bins`` equal bins ``(t_{b-1}, t_b]`` of ``[0, U]``
    (bin 0 holds distance exactly 0; ``U`` bounds every distance: 2 for cosine, else twice
    the largest distance to the mean, squared for ``"sqeuclidean"``), separately for
    same-class and different-class pairs. From the two histograms:

    - ROC AUC ``= sum_b P_b (N_{>b} + N_b / 2) / (P N)`` with ``P_b``, ``N_b`` the same- and
      different-class pairs of bin b: exact for pairs in different bins, 1/2 for pairs
      sharing a bin, so ``|exact - roc_auc| <= sum_{b>0} P_b N_b / (2 P N)`` (reported; about
      1e-6 with the default 2**20 bins unless the distances pile up in a few bins).
    - TAR at FAR f: the largest grid threshold ``t_b`` with ``N_{<=b} <= f N`` and its
      ``P_{<=b} / P``; the best real threshold can add at most ``P_{b+1} / P`` (reported).

    Args:
        embeddings: (N, D).
        labels: (N,) integer classes.
        fars: false accept rates to report TAR at.
        bins: grid resolution; memory is two int64 histograms of ``bins + 1``.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        chunk: rows per chunk (default ``BLOCK // N``); memory O(chunk * N). Time is
            O(N^2 D): 70,000 items are 2.4e9 pairs.

    Corner cases:
        Without same-class or without different-class pairs AUC and TAR are undefined:
        ``nan``, with errors 0.

    Example:
        Pairs: (0, 1) same at 1, (0, 2) different at 3, (1, 2) different at 2: every
        same-class pair is closer than every different-class pair.

        >>> v = verification_scores(torch.tensor([[0.0], [1.0], [3.0]]),
        ...                         torch.tensor([0, 0, 1]), fars=(0.0, 0.5))
        >>> v.roc_auc, v.tar_at_far, v.num_positive_pairs, v.num_negative_pairs
        (1.0, {0.0: 1.0, 0.5: 1.0}, 1, 2)
    """
    _check_labeled(embeddings, labels, "embeddings", "labels")
    check_distance(distance)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    for f in fars:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"every FAR must be within [0, 1], got {f!r}")
    embeddings = embeddings.detach()
    labels = labels.to(embeddings.device)
    rows = _rows_per_chunk(embeddings.shape[0], chunk)
    upper = _max_distance(embeddings, distance, rows)
    width = upper / bins if upper > 0 else 1.0

    def grid_bin(d: Tensor) -> Tensor:
        return d.double().div_(width).ceil_().clamp_(0, bins).long()  # d is not reused

    neg, pos = _pair_histograms(embeddings, labels, grid_bin, bins + 1, distance, chunk)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    nan = float("nan")
    if n_pos == 0 or n_neg == 0:
        return VerificationScores(
            nan, 0.0, dict.fromkeys(fars, nan), dict.fromkeys(fars, nan),
            dict.fromkeys(fars, 0.0), width, n_pos, n_neg,
        )  # fmt: skip
    p, q = pos.double(), neg.double()
    q_above = n_neg - q.cumsum(0)  # (bins + 1,) different-class pairs in later bins
    auc = float((p * (q_above + q / 2)).sum()) / (n_pos * n_neg)
    auc_err = float((p[1:] * q[1:]).sum()) / (2 * n_pos * n_neg)
    neg_le, pos_le = neg.cumsum(0), pos.cumsum(0)  # (bins + 1,)
    tar, thr, err = {}, {}, {}
    for f in fars:
        ok = int((neg_le <= f * n_neg).sum())  # FAR is non-decreasing: bins 0..ok-1 qualify
        if ok == 0:
            tar[f], thr[f], err[f] = 0.0, -math.inf, 0.0
            continue
        b = ok - 1
        tar[f], thr[f] = int(pos_le[b]) / n_pos, b * width
        err[f] = int(pos[b + 1]) / n_pos if b < bins else 0.0
    return VerificationScores(auc, auc_err, tar, thr, err, width, n_pos, n_neg)
