"""tripletlab.metrics.verification: pair accuracy, held-out pair accuracy, ROC AUC and TAR
at FAR against brute force and scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference
import torch
from metrics_data import data
from sklearn.metrics import roc_auc_score

from tripletlab.metrics import held_out_pair_accuracy, pair_accuracy, verification_scores


def brute_pair_accuracy(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    pairs = [
        (float(np.linalg.norm(x[i] - x[j])), y[i] == y[j])
        for i in range(len(y))
        for j in range(i + 1, len(y))
    ]
    best, best_t = -1.0, 0.0
    for k in range(151):
        t = k / 100
        acc = sum((d <= t) == same for d, same in pairs) / len(pairs)
        if acc > best:
            best, best_t = acc, t
    return best, best_t, sum(not s for _, s in pairs) / len(pairs)


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_accuracy_matches_brute_force(seed: int) -> None:
    x, y = data(40, 4, seed, dim=2)
    x = torch.nn.functional.normalize(x, dim=1)  # distances within [0, 2] like real use
    got = pair_accuracy(x, y, chunk=9)
    acc, t, floor = brute_pair_accuracy(x.numpy(), y.numpy())
    assert got.accuracy == pytest.approx(acc)
    assert got.threshold == pytest.approx(t)
    assert got.floor == pytest.approx(floor)
    assert got.num_pairs == 40 * 39 // 2


@pytest.mark.parametrize(
    ("n", "classes", "seed", "bins", "distance"),
    [(40, 3, 0, 2**20, "euclidean"), (50, 4, 1, 16, "euclidean"), (35, 2, 2, 64, "cosine"),
     (30, 5, 3, 2**12, "sqeuclidean")],
)  # fmt: skip
def test_verification_within_its_stated_error(
    n: int, classes: int, seed: int, bins: int, distance: Any
) -> None:
    x, y = data(n, classes, seed)
    fars = (0.0, 1e-2, 0.1, 0.5)
    got = verification_scores(x, y, fars=fars, bins=bins, distance=distance, chunk=6)
    same, diff = reference.pair_lists(reference.distances(x.numpy(), distance), y.tolist())
    assert (got.num_positive_pairs, got.num_negative_pairs) == (len(same), len(diff))
    exact = reference.roc_auc(same, diff)
    assert abs(got.roc_auc - exact) <= got.roc_auc_error + 1e-12
    scores = np.array([-v for v in same + diff])
    truth = np.array([1] * len(same) + [0] * len(diff))
    assert abs(got.roc_auc - roc_auc_score(truth, scores)) <= got.roc_auc_error + 1e-12
    if bins >= 2**12:
        assert got.roc_auc_error < 1e-3
    for f in fars:
        tar = reference.tar_at_far(same, diff, f)
        assert got.tar_at_far[f] <= tar + 1e-12 <= got.tar_at_far[f] + got.tar_error[f] + 2e-12
        accepted = sum(1 for v in diff if v <= got.threshold_at_far[f])
        assert accepted <= f * len(diff)


def test_verification_corner_cases() -> None:
    one_class = verification_scores(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))
    assert np.isnan(one_class.roc_auc) and one_class.num_negative_pairs == 0
    collapsed = verification_scores(torch.zeros(6, 2), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert collapsed.roc_auc == 0.5 and collapsed.roc_auc_error == 0.0  # exact ties at 0
    assert collapsed.tar_at_far[1e-3] == 0.0 and collapsed.threshold_at_far[1e-3] == -np.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_pair_accuracy_matches_brute_force(seed: int) -> None:
    fit_x, fit_y = data(30, 3, seed, dim=2)
    x, y = data(36, 3, seed + 50, dim=2)
    fit_x, x = (torch.nn.functional.normalize(v, dim=1) for v in (fit_x, x))
    got = held_out_pair_accuracy(fit_x, fit_y, x, y, chunk=5)
    grid = [k / 100 for k in range(151)]
    fit_acc = reference.pair_accuracies(
        reference.distances(fit_x.numpy(), "euclidean"), fit_y.tolist(), grid
    )
    best = max(range(len(grid)), key=lambda i: (fit_acc[i], -i))
    acc = reference.pair_accuracies(reference.distances(x.numpy(), "euclidean"), y.tolist(), grid)
    assert got.threshold == pytest.approx(grid[best])
    assert got.fit_accuracy == pytest.approx(fit_acc[best])
    assert got.accuracy == pytest.approx(acc[best])
    assert (got.num_pairs, got.num_fit_pairs) == (36 * 35 // 2, 30 * 29 // 2)
    same_set = pair_accuracy(x, y)
    assert got.accuracy <= same_set.accuracy  # tuning on the scored pairs can only flatter
