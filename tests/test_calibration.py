"""Calibration curves and thresholds against brute-force counting and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
import torch
from sklearn.metrics import precision_recall_curve

from tripletlab.calibration import (
    MAX_F1,
    Calibration,
    OperatingPoint,
    calibrate_matches,
    calibration_curve,
    calibration_from_state,
    calibration_state,
    format_calibration,
    format_open_set,
    open_set_rates,
    operating_points,
    precision_name,
)


def random_case(q: int, seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Nearest distances, correct flags (denser near 0) and K >= #correct."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(q, generator=g, dtype=torch.float64)
    if ties:
        d = (d * 5).round() / 5  # few distinct values
    correct = torch.rand(q, generator=g, dtype=torch.float64) > d * 0.8
    known = int(correct.sum()) + int(torch.randint(0, 4, (), generator=g))
    return d, correct, max(known, 1)


@pytest.mark.parametrize("q", [1, 2, 7, 50, 301])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_curve_matches_brute_force(q: int, seed: int, ties: bool) -> None:
    d, correct, known = random_case(q, seed, ties)
    curve = calibration_curve(d, correct, known)
    expected = reference.calibration_curve(d.tolist(), correct.tolist(), known)
    assert curve.thresholds.tolist() == [r[0] for r in expected]
    assert curve.true_positives.tolist() == [r[1] for r in expected]
    assert curve.matched.tolist() == [r[2] for r in expected]
    for got, col in ((curve.precision, 3), (curve.recall, 4), (curve.f1, 5)):
        np.testing.assert_allclose(got.numpy(), [r[col] for r in expected], rtol=1e-12)
    assert curve.num_queries == q and curve.num_known == known


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_operating_points_match_brute_force(seed: int) -> None:
    d, correct, known = random_case(200, seed, ties=True)
    curve = calibration_curve(d, correct, known)
    rows = reference.calibration_curve(d.tolist(), correct.tolist(), known)
    targets = (0.5, 0.8, 0.9, 1.0)
    points = operating_points(curve, targets)
    best = max(r[5] for r in rows)
    first_best = next(r for r in rows if r[5] == best)  # the smallest threshold among ties
    assert points[0].name == MAX_F1 and points[0].threshold == first_best[0]
    assert points[0].f1 == pytest.approx(best, rel=1e-12)
    for point, target in zip(points[1:], targets, strict=True):
        reaching = [r for r in rows if r[3] >= target - 1e-12]
        assert point.name == precision_name(target) and point.target == target
        if reaching:
            assert point.threshold == reaching[-1][0]  # the largest: the best recall
            assert point.precision is not None and point.precision >= target - 1e-12
        else:
            assert point.threshold is None and not point.reachable


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_and_recall_agree_with_scikit_learn(seed: int) -> None:
    # scikit-learn: positives = queries whose nearest label is right, score = -distance.
    # Its precision is ours; its recall divides by #correct instead of K (TF Similarity's).
    d, correct, known = random_case(400, seed, ties=seed == 2)
    curve = calibration_curve(d, correct, known)
    p, r, t = precision_recall_curve(correct.numpy(), -d.numpy(), drop_intermediate=False)
    # scikit-learn's thresholds ascend in score, i.e. descend in distance; drop its end point
    # (recall 0, precision 1) and reverse.
    np.testing.assert_allclose(-t[::-1], curve.thresholds.numpy())
    np.testing.assert_allclose(p[:-1][::-1], curve.precision.numpy(), rtol=1e-12)
    scale = int(correct.sum()) / known
    np.testing.assert_allclose(r[:-1][::-1] * scale, curve.recall.numpy(), rtol=1e-12)


def test_recall_equals_scikit_learn_when_every_known_query_is_right() -> None:
    d = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    known = torch.tensor([True, True, False, True, False, False])
    correct = known.clone()  # every known query's neighbour is right; unseen ones are wrong
    curve = calibration_curve(d, correct, int(known.sum()))
    _, r, _ = precision_recall_curve(correct.numpy(), -d.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(r[:-1][::-1], curve.recall.numpy())


def test_hand_computed_example() -> None:
    # Five queries: two right (0.1, 0.4), two wrong (0.2, 0.9) and one right at 0.4 (a tie
    # with the first); K = 4 (one known query's neighbour is wrong).
    d = torch.tensor([0.1, 0.2, 0.4, 0.4, 0.9])
    correct = torch.tensor([True, False, True, True, False])
    curve = calibration_curve(d, correct, 4)
    assert curve.thresholds.tolist() == pytest.approx([0.1, 0.2, 0.4, 0.9])
    assert curve.matched.tolist() == [1, 2, 4, 5]
    assert curve.true_positives.tolist() == [1, 1, 3, 3]
    assert curve.precision.tolist() == pytest.approx([1.0, 0.5, 0.75, 0.6])
    assert curve.recall.tolist() == pytest.approx([0.25, 0.25, 0.75, 0.75])
    assert curve.f1.tolist() == pytest.approx([0.4, 1 / 3, 0.75, 6 / 9])
    best, p90, p70 = operating_points(curve, (0.9, 0.7))
    assert best.threshold == pytest.approx(0.4) and best.f1 == pytest.approx(0.75)
    assert p90.threshold == pytest.approx(0.1) and p90.recall == pytest.approx(0.25)
    assert p70.threshold == pytest.approx(0.4)
    assert operating_points(curve, (1.0,))[1].threshold == pytest.approx(0.1)


def test_unreachable_target_and_tables() -> None:
    curve = calibration_curve(torch.tensor([0.1, 0.2]), torch.tensor([False, True]), 1)
    assert curve.precision.tolist() == [0.0, 0.5]
    assert operating_points(curve, (0.99,))[1].threshold is None
    assert operating_points(curve, (0.5,))[1].threshold == pytest.approx(0.2)
    cal = calibrate_matches(
        torch.tensor([0.1, 0.2]),
        torch.tensor([1, 0]),
        torch.tensor([0, 1]),
        torch.tensor([True, False]),
        (0.99,),
    )
    assert cal.points[1].threshold is None
    assert "not reachable" in format_calibration(cal)
    assert cal.point(MAX_F1).f1 == 0.0
    with pytest.raises(ValueError, match="no threshold called 'f2' is stored; choose one of"):
        cal.point("f2")
    for name in ("precision_0", "precision_1.5", "precision_x"):
        with pytest.raises(ValueError, match="or precision_P for another target precision P"):
            cal.point(name)
    # a target not calibrated for is read off the stored curve, as calibrating for it would
    stored = Calibration(curve, operating_points(curve, (0.99,)))
    assert stored.point("precision_0.5") == operating_points(curve, (0.5,))[1]
    assert stored.point("precision_0.5").threshold == pytest.approx(0.2)
    assert stored.point("precision_0.75").threshold is None  # not reachable


def test_calibrate_matches_counts_known_and_unseen() -> None:
    dist = torch.tensor([0.1, 0.2, 0.3, 0.5])
    neighbor = torch.tensor([0, 1, 2, 0])
    query = torch.tensor([0, 2, 2, 7])  # label 7 is not in the index
    known = torch.tensor([True, True, True, False])
    cal = calibrate_matches(dist, neighbor, query, known, (0.9,))
    assert cal.curve.num_known == 3 and cal.curve.num_queries == 4
    assert cal.curve.true_positives.tolist() == [1, 1, 2, 2]
    assert cal.curve.recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("single", "the calibration set has a single class (label 3); calibrate with queries"),
        ("unknown", "none of the 2 calibration labels occurs in the index"),
        ("unlabelled", "1 of 2 calibration queries have no label (-1)"),
        ("empty", "the calibration set is empty"),
        ("precision", "target precisions must lie in (0, 1], got 1.5"),
        ("zero", "target precisions must lie in (0, 1], got 0.0"),
    ],
)
def test_bad_calibration_sets(case: str, message: str) -> None:
    d, n = torch.tensor([0.1, 0.2]), torch.tensor([3, 3])
    y = {"single": [3, 3], "unlabelled": [3, -1], "empty": []}.get(case, [3, 4])
    known = torch.tensor([case != "unknown"] * len(y), dtype=torch.bool)
    precisions = {"precision": (1.5,), "zero": (0.0,)}.get(case, (0.9,))
    if case == "empty":
        d, n = d[:0], n[:0]
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        calibrate_matches(d, n, torch.tensor(y, dtype=torch.long), known, precisions)


def test_open_set_rates_by_hand() -> None:
    dist = torch.tensor([0.1, 0.3, 0.2, 0.6, 0.05])
    neighbor = torch.tensor([0, 1, 0, 1, 1])
    query = torch.tensor([0, 0, 5, 6, 1])  # 5 and 6 unseen
    known = torch.tensor([True, True, False, False, True])
    points = [
        OperatingPoint("max_f1", None, 0.25, 1.0, 1.0, 1.0),
        OperatingPoint("precision_0.99", 0.99, None, None, None, None),
    ]
    closed, at, unreachable = open_set_rates(dist, neighbor, query, known, points)
    assert closed.threshold == math.inf and closed.unseen_rejected == 0.0
    assert closed.known_accepted == 1.0 and closed.known_correct == pytest.approx(2 / 3)
    assert at.unseen_rejected == 0.5  # 0.6 rejected, 0.2 accepted
    assert at.known_accepted == pytest.approx(2 / 3)  # 0.1, 0.05 accepted; 0.3 rejected
    assert at.known_correct == pytest.approx(2 / 3)
    assert at.accuracy == pytest.approx(3 / 5)
    assert unreachable.threshold is None and math.isnan(unreachable.accuracy)
    table = format_open_set([closed, at, unreachable])
    assert "| closed_set | none |" in table and "not reachable" in table


def test_state_round_trip() -> None:
    d, correct, _ = random_case(40, 0, ties=True)
    query = torch.ones(40, dtype=torch.long)
    query[0] = 2
    known = torch.ones(40, dtype=torch.bool)
    cal = calibrate_matches(d, torch.where(correct, 1, 0), query, known, (0.9, 0.95))
    arrays, info = calibration_state(cal)
    back = calibration_from_state(arrays, info)
    assert back.points == cal.points
    for name in ("thresholds", "precision", "recall", "f1", "matched", "true_positives"):
        assert torch.equal(getattr(back.curve, name), getattr(cal.curve, name))
