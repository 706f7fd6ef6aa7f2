"""Distance thresholds for "is this a known item, and which?", chosen on a labelled set.

A search index answers "what is nearest"; calibration answers "how near is near enough". On a
labelled calibration set searched against the index, every query is reduced to its nearest
neighbour: its distance ``d`` and whether its label is the query's (``correct``). A threshold
``t`` then makes a binary decision per query, with the semantics of TensorFlow Similarity's
``calibrate`` (``ClassificationMatch`` with ``match_nearest``):

- the query **matches** when ``d <= t`` (it is accepted, with its nearest neighbour's label);
- a match is a **true positive** (TP) when ``correct``, else a **false positive** (FP);
- ``precision(t) = TP / (TP + FP)``: among the accepted queries, the fraction labelled right;
- ``recall(t) = TP / K``, where ``K`` is the number of *known* queries: those whose label
  occurs among the index's labels. This is the fraction of the queries that could be
  identified which are accepted and labelled right, so a known query whose nearest
  neighbour has another label counts as missed at every threshold.

  TensorFlow Similarity divides by ``TP + FN`` instead, with ``FN`` the queries whose nearest
  neighbour is right but too far, i.e. by ``#{correct}``: its recall reaches 1 at a large
  enough threshold even when the 1-NN classifier is wrong on many queries. Both recalls are
  proportional (ours is theirs times ``#{correct} / K``), so the precision targets pick the
  same thresholds; the max-F1 threshold can differ. Ours is the one an open-set user wants:
  "of the queries I could have recognised, how many did I".
- ``F1(t) = 2 P R / (P + R) = 2 TP / (M + K)`` with ``M = TP + FP`` the matched queries.

Queries whose class is absent from the index ("unseen" classes) can only be false positives:
rejecting them is what a threshold is for. The candidate thresholds are the distinct nearest
distances, ascending; at each, ``M >= 1`` so precision is always defined. The curve costs one
sort and two cumulative sums: O(Q log Q).

Stored operating points: the threshold of maximal F1 (the smallest such threshold on ties)
and, per target precision ``p``, the largest threshold whose precision is at least ``p`` (the
one with the highest recall reaching it), or "not reachable".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Target precisions stored by default.
DEFAULT_PRECISIONS = (0.9, 0.99)
MAX_F1 = "max_f1"


def precision_name(target: float) -> str:
    """The name of the operating point for a target precision: ``precision_0.9``."""
    return f"precision_{target:g}"


def precision_target(name: str) -> float | None:
    """The target of a name :func:`precision_name` would write, the number written as any
    float (``precision_.90``), else ``None``; the range is not checked.

    >>> precision_target("precision_.90"), precision_target("max_f1")
    (0.9, None)
    """
    rest = name.removeprefix("precision_")
    if rest == name:
        return None
    try:
        return float(rest)
    except ValueError:
        return None


@dataclass(frozen=True)
class CalibrationCurve:
    """Precision, recall and F1 of "match when ``d <= t``" at every candidate threshold.

    Attributes:
        thresholds: (T,) float64, the distinct nearest-neighbour distances, ascending.
        true_positives: (T,) int64, matched queries whose nearest label is theirs.
        matched: (T,) int64, queries with ``d <= t`` (``M``).
        precision: (T,) float64, ``TP / M``.
        recall: (T,) float64, ``TP / K``.
        f1: (T,) float64, ``2 TP / (M + K)``.
        num_queries: Q, the calibration queries.
        num_known: K, the queries whose label occurs in the index.
    """

    thresholds: Tensor
    true_positives: Tensor
    matched: Tensor
    precision: Tensor
    recall: Tensor
    f1: Tensor
    num_queries: int
    num_known: int


@dataclass(frozen=True)
class OperatingPoint:
    """One stored threshold and its scores on the calibration set.

    Attributes:
        name: ``"max_f1"`` or ``"precision_<target>"``.
        target: the target precision, ``None`` for max F1.
        threshold: the distance threshold, ``None`` when the target is not reachable.
        precision, recall, f1: the scores there, ``None`` when not reachable.
    """

    name: str
    target: float | None
    threshold: float | None
    precision: float | None
    recall: float | None
    f1: float | None

    @property
    def reachable(self) -> bool:
        return self.threshold is not None


@dataclass(frozen=True)
class Calibration:
    """A calibration curve and the operating points chosen on it (max F1 first)."""

    curve: CalibrationCurve
    points: tuple[OperatingPoint, ...]

    def point(self, name: str) -> OperatingPoint:
        """The operating point called ``name``: a stored one, or ``precision_<p>`` for any
        target ``p`` in (0, 1], read off the stored curve as :func:`operating_points` would
        have stored it (calibrating for one target keeps every other one available).

        Raises:
            ValueError: any other name, naming the choices.
        """
        for p in self.points:
            if p.name == name:
                return p
        target = precision_target(name)
        if target is not None and 0.0 < target <= 1.0:
            return operating_points(self.curve, [target])[1]
        names = ", ".join(p.name for p in self.points)
        raise ValueError(
            f"no threshold called {name!r} is stored; choose one of: {names}, or precision_P "
            "for another target precision P in (0, 1]"
        )


def calibration_curve(distances: Tensor, correct: Tensor, num_known: int) -> CalibrationCurve:
    """Precision, recall and F1 at every distinct nearest distance (see the module).

    Args:
        distances: (Q,) nearest-neighbour distance of each query (smaller is closer).
        correct: (Q,) bool, whether that neighbour's label is the query's.
        num_known: K >= 1, the queries whose label occurs in the index (``correct`` implies
            known, so ``K >= correct.sum()``).

    Returns:
        The curve, one entry per distinct distance.

    Corner cases:
        Tied distances are one candidate (the decision cannot separate them). An infinite
        distance (no neighbour found) is a candidate like any other.

    Example:
        >>> d, right = torch.tensor([0.25, 0.75, 0.5]), torch.tensor([True, False, True])
        >>> c = calibration_curve(d, right, num_known=4)
        >>> c.thresholds.tolist(), c.true_positives.tolist(), c.matched.tolist()
        ([0.25, 0.5, 0.75], [1, 2, 2], [1, 2, 3])
        >>> [round(v, 4) for v in c.precision.tolist() + c.recall.tolist() + c.f1.tolist()]
        [1.0, 1.0, 0.6667, 0.25, 0.5, 0.5, 0.4, 0.6667, 0.5714]
    """
    if distances.dim() != 1 or correct.shape != distances.shape or correct.dtype != torch.bool:
        raise ValueError(
            f"calibration_curve expects (Q,) distances and (Q,) bool correct flags, got "
            f"{tuple(distances.shape)} and {correct.dtype} {tuple(correct.shape)}"
        )
    if distances.numel() == 0:
        raise ValueError("the calibration set is empty; pass at least one labelled query")
    n_correct = int(correct.sum())
    if num_known < max(1, n_correct):
        raise ValueError(
            f"num_known={num_known} must be >= 1 and >= the {n_correct} correct queries"
        )
    d = distances.detach().cpu().to(torch.float64)
    order = torch.sort(d, stable=True).indices
    d_sorted = d[order]  # (Q,)
    tp = torch.cumsum(correct.cpu()[order].long(), 0)  # (Q,) TP with the first i+1 matched
    last = torch.ones_like(d_sorted, dtype=torch.bool)
    last[:-1] = d_sorted[1:] != d_sorted[:-1]  # last entry of each run of tied distances
    thresholds = d_sorted[last]  # (T,)
    tp = tp[last]
    matched = torch.arange(1, d.numel() + 1)[last]  # (T,)
    tp64, m64 = tp.double(), matched.double()
    precision = tp64 / m64
    recall = tp64 / num_known
    f1 = 2.0 * tp64 / (m64 + num_known)
    return CalibrationCurve(
        thresholds=thresholds,
        true_positives=tp,
        matched=matched,
        precision=precision,
        recall=recall,
        f1=f1,
        num_queries=int(d.numel()),
        num_known=num_known,
    )


def _point(
    curve: CalibrationCurve, i: int | None, name: str, target: float | None
) -> OperatingPoint:
    if i is None:
        return OperatingPoint(name, target, None, None, None, None)
    return OperatingPoint(
        name=name,
        target=target,
        threshold=float(curve.thresholds[i]),
        precision=float(curve.precision[i]),
        recall=float(curve.recall[i]),
        f1=float(curve.f1[i]),
    )


def check_precisions(precisions: Sequence[float]) -> None:
    """``ValueError`` unless every target precision lies in (0, 1]."""
    for p in precisions:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise ValueError(f"target precisions must lie in (0, 1], got {p!r}; e.g. 0.9 0.99")


def operating_points(
    curve: CalibrationCurve, precisions: Sequence[float] = DEFAULT_PRECISIONS
) -> tuple[OperatingPoint, ...]:
    """Max F1 (smallest threshold among ties), then per target precision the largest
    threshold reaching it, or an unreachable point (see the module)."""
    check_precisions(precisions)
    best = int(torch.argmax(curve.f1))  # the first maximum: the smallest threshold
    points = [_point(curve, best, MAX_F1, None)]
    for p in precisions:
        # float64 division can leave 9/10 a hair below 0.9: compare with a tolerance.
        ok = torch.nonzero(curve.precision >= p - 1e-12).flatten()
        i = int(ok[-1]) if ok.numel() else None
        points.append(_point(curve, i, precision_name(p), float(p)))
    return tuple(points)


def calibrate_matches(
    distances: Tensor,
    neighbor_labels: Tensor,
    query_labels: Tensor,
    known: Tensor,
    precisions: Sequence[float] = DEFAULT_PRECISIONS,
) -> Calibration:
    """Calibrate from each query's nearest neighbour.

    Args:
        distances: (Q,) nearest-neighbour distances.
        neighbor_labels: (Q,) int64 labels of those neighbours (-1: none or unlabelled).
        query_labels: (Q,) int64 labels of the queries, each >= 0.
        known: (Q,) bool, whether the query's label occurs among the index's labels.
        precisions: target precisions, each in (0, 1].

    Returns:
        The curve and its operating points.

    Raises:
        ValueError: an unlabelled query (label < 0); a single class; no known query.

    Corner cases:
        Unseen-class queries stay in the set (they are what the threshold must reject); a
        neighbour with label -1 never counts as correct.
    """
    check_precisions(precisions)
    q = query_labels.shape[0]
    if q == 0:
        raise ValueError("the calibration set is empty; pass at least one labelled query")
    if int((query_labels < 0).sum()):
        bad = int((query_labels < 0).sum())
        raise ValueError(
            f"{bad} of {q} calibration queries have no label (-1); calibrate with labelled "
            "embeddings only"
        )
    classes = torch.unique(query_labels)
    if classes.numel() < 2:
        raise ValueError(
            f"the calibration set has a single class (label {int(classes[0])}); calibrate "
            "with queries of at least two classes, so that wrong matches can be counted"
        )
    num_known = int(known.sum())
    if num_known == 0:
        raise ValueError(
            f"none of the {q} calibration labels occurs in the index; calibrate with "
            "labelled items of the indexed classes (same class names), or, for classes never "
            "trained on, index those items and calibrate on the same file (leave-one-out)"
        )
    correct = (neighbor_labels == query_labels) & known
    curve = calibration_curve(distances, correct, num_known)
    return Calibration(curve, operating_points(curve, precisions))


# ------------------------------------------------------------------------------ open set


@dataclass(frozen=True)
class OpenSetRates:
    """What one threshold does to known-class and unseen-class queries.

    Attributes:
        name: the operating point (``"closed_set"`` for no threshold: accept everything).
        threshold: the distance threshold (``inf`` for closed set), ``None`` if unreachable.
        unseen_rejected: fraction of unseen-class queries with ``d > t``.
        known_accepted: fraction of known-class queries with ``d <= t``.
        known_correct: fraction of known-class queries with ``d <= t`` and the right label.
        accuracy: (known accepted with the right label + unseen rejected) / all queries.
        num_known, num_unseen: the query counts.

    A fraction over zero queries is NaN.
    """

    name: str
    threshold: float | None
    unseen_rejected: float
    known_accepted: float
    known_correct: float
    accuracy: float
    num_known: int
    num_unseen: int


def _fraction(count: int, total: int) -> float:
    return count / total if total else math.nan


def open_set_rates(
    distances: Tensor,
    neighbor_labels: Tensor,
    query_labels: Tensor,
    known: Tensor,
    points: Sequence[OperatingPoint],
) -> tuple[OpenSetRates, ...]:
    """Acceptance and rejection rates at each operating point, after a closed-set row.

    Args:
        distances: (Q,) nearest-neighbour distances.
        neighbor_labels: (Q,) their labels.
        query_labels: (Q,) the queries' labels.
        known: (Q,) bool, query's class present in the index (else: unseen class).
        points: the operating points to score; an unreachable one gives NaN rates.

    Returns:
        ``closed_set`` (threshold ``inf``) then one row per point.
    """
    correct = (neighbor_labels == query_labels) & known
    unseen = ~known
    nk, nu = int(known.sum()), int(unseen.sum())
    q = nk + nu
    rows = []
    named: list[tuple[str, float | None]] = [("closed_set", math.inf)]
    named += [(p.name, p.threshold) for p in points]
    for name, t in named:
        if t is None:
            rows.append(OpenSetRates(name, None, math.nan, math.nan, math.nan, math.nan, nk, nu))
            continue
        accept = distances <= t
        rejected = int((unseen & ~accept).sum())
        right = int((correct & accept).sum())
        rows.append(
            OpenSetRates(
                name=name,
                threshold=t,
                unseen_rejected=_fraction(rejected, nu),
                known_accepted=_fraction(int((known & accept).sum()), nk),
                known_correct=_fraction(right, nk),
                accuracy=_fraction(right + rejected, q),
                num_known=nk,
                num_unseen=nu,
            )
        )
    return tuple(rows)


# ------------------------------------------------------------------------------ storage


_CURVE_KEYS = ("thresholds", "true_positives", "matched", "precision", "recall", "f1")


def calibration_state(cal: Calibration) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, json)``: the curve as numpy arrays (keys ``calibration_<field>``) and the
    counts and operating points as a JSON-serialisable dict."""
    arrays = {f"calibration_{k}": getattr(cal.curve, k).numpy() for k in _CURVE_KEYS}
    info = {
        "num_queries": cal.curve.num_queries,
        "num_known": cal.curve.num_known,
        "points": [vars(p) for p in cal.points],
    }
    return arrays, info


def calibration_from_state(arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Calibration:
    """The inverse of :func:`calibration_state`; ``KeyError``/``TypeError``/``ValueError``
    on malformed input (the caller names the file)."""
    tensors = {k: torch.from_numpy(np.array(arrays[f"calibration_{k}"])) for k in _CURVE_KEYS}
    lengths = {t.shape for t in tensors.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError("calibration arrays of different shapes")
    curve = CalibrationCurve(
        **tensors, num_queries=int(info["num_queries"]), num_known=int(info["num_known"])
    )
    points = tuple(
        OperatingPoint(
            name=str(p["name"]),
            target=None if p["target"] is None else float(p["target"]),
            threshold=None if p["threshold"] is None else float(p["threshold"]),
            precision=None if p["precision"] is None else float(p["precision"]),
            recall=None if p["recall"] is None else float(p["recall"]),
            f1=None if p["f1"] is None else float(p["f1"]),
        )
        for p in info["points"]
    )
    return Calibration(curve, points)


# ------------------------------------------------------------------------------ tables


def _cell(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "not reachable"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def format_calibration(cal: Calibration) -> str:
    """The operating points as a markdown table (threshold, precision, recall, F1)."""
    c = cal.curve
    lines = [
        f"calibrated on {c.num_queries:,} queries, {c.num_known:,} of indexed classes",
        "",
        "| threshold | distance | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in cal.points:
        if p.threshold is None:
            lines.append(f"| {p.name} | not reachable | | | |")
            continue
        lines.append(
            f"| {p.name} | {p.threshold:.6g} | {_cell(p.precision)} | {_cell(p.recall)} | "
            f"{_cell(p.f1)} |"
        )
    return "\n".join(lines)


def format_open_set(rows: Sequence[OpenSetRates]) -> str:
    """Open-set rates as a markdown table, one row per threshold."""
    lines = [
        "| threshold | distance | unseen rejected | known accepted | known accepted and "
        "right | open-set accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r.threshold is None:
            lines.append(f"| {r.name} | not reachable | | | | |")
            continue
        t = "none" if math.isinf(r.threshold) else f"{r.threshold:.6g}"
        lines.append(
            f"| {r.name} | {t} | {_cell(r.unseen_rejected)} | {_cell(r.known_accepted)} | "
            f"{_cell(r.known_correct)} | {_cell(r.accuracy)} |"
        )
    return "\n".join(lines)
