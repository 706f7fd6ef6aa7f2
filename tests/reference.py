"""Brute-force twins of the vectorised code: plain Python loops in float64.

Slow on purpose and written to read like the definitions in the docstrings, so that a test
comparing them with :mod:`tripletlab` checks the vectorisation, not a shared bug.
"""

from __future__ import annotations

import math

import numpy as np

Triplet = tuple[int, int, int]


def distances(x: np.ndarray, distance: str) -> np.ndarray:
    """(N, N) float64 distances by explicit differences."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if distance == "cosine":
                ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
                cos = 0.0 if ni == 0 or nj == 0 else float(x[i] @ x[j]) / (ni * nj)
                out[i, j] = 0.0 if i == j else min(max(1.0 - cos, 0.0), 2.0)
            else:
                sq = float(((x[i] - x[j]) ** 2).sum())
                out[i, j] = math.sqrt(sq) if distance == "euclidean" else sq
    return out


def all_triplets(y: list[int]) -> list[Triplet]:
    n = len(y)
    return [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        for q in range(n)
        if a != p and y[a] == y[p] and y[q] != y[a]
    ]


def positive_pairs(y: list[int]) -> list[tuple[int, int]]:
    """Ordered positive pairs whose anchor has a negative."""
    n = len(y)
    has_neg = [any(y[q] != y[a] for q in range(n)) for a in range(n)]
    return [(a, p) for a in range(n) for p in range(n) if a != p and y[a] == y[p] and has_neg[a]]


def negatives(y: list[int], a: int) -> list[int]:
    return [q for q in range(len(y)) if y[q] != y[a]]


def batch_all_loss(d: np.ndarray, y: list[int], margin: float) -> tuple[float, int, int]:
    """(mean over active triplets, #active, #valid)."""
    losses = [max(d[a, p] - d[a, q] + margin, 0.0) for a, p, q in all_triplets(y)]
    active = [v for v in losses if v > 0]
    return (sum(active) / len(active) if active else 0.0), len(active), len(losses)


def batch_hard(d: np.ndarray, y: list[int]) -> list[tuple[int, float, float]]:
    """Per anchor with a positive and a negative: (anchor, hardest d_ap, hardest d_an)."""
    out = []
    for a in range(len(y)):
        pos = [d[a, p] for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [d[a, q] for q in negatives(y, a)]
        if pos and neg:
            out.append((a, max(pos), min(neg)))
    return out


def semi_hard(d: np.ndarray, y: list[int]) -> list[tuple[int, int, float]]:
    """TF-Addons semantics: (a, p, d_an) for every positive pair whose anchor has a negative."""
    out = []
    for a, p in positive_pairs(y):
        neg = [d[a, q] for q in negatives(y, a)]
        farther = [v for v in neg if v > d[a, p]]
        out.append((a, p, min(farther) if farther else max(neg)))
    return out


def hardest_negative(d: np.ndarray, y: list[int], margin: float) -> list[tuple[int, int, float]]:
    out = []
    for a, p in positive_pairs(y):
        best = max(negatives(y, a), key=lambda q: d[a, p] - d[a, q] + margin)
        if d[a, p] - d[a, best] + margin > 0:
            out.append((a, p, d[a, best]))
    return out


def random_hard_candidates(
    d: np.ndarray, y: list[int], margin: float
) -> dict[tuple[int, int], set[int]]:
    """Positive pair -> negatives with loss > 0 (pairs without one left out)."""
    out = {}
    for a, p in positive_pairs(y):
        cand = {q for q in negatives(y, a) if d[a, p] - d[a, q] + margin > 0}
        if cand:
            out[(a, p)] = cand
    return out


def semi_hard_candidates(
    d: np.ndarray, y: list[int], margin: float
) -> dict[tuple[int, int], set[int]]:
    """Positive pair -> negatives with d_ap < d_an < d_ap + margin."""
    out = {}
    for a, p in positive_pairs(y):
        cand = {q for q in negatives(y, a) if d[a, p] < d[a, q] < d[a, p] + margin}
        if cand:
            out[(a, p)] = cand
    return out


def hard_negative_pairs(d: np.ndarray, y: list[int]) -> tuple[int, list[float]]:
    """(#positive pairs, sorted distances of the selected negative pairs)."""
    n = len(y)
    pos = [(i, j) for i in range(n) for j in range(i + 1, n) if y[i] == y[j]]
    neg = sorted(d[i, j] for i in range(n) for j in range(i + 1, n) if y[i] != y[j])
    return len(pos), neg[: min(len(pos), len(neg))]


def contrastive_loss(
    d: np.ndarray, pairs: list[tuple[int, int, bool]], pos_margin: float, neg_margin: float
) -> float:
    if not pairs:
        return 0.0
    total = 0.0
    for i, j, same in pairs:
        total += (
            max(d[i, j] - pos_margin, 0.0) ** 2 if same else max(neg_margin - d[i, j], 0.0) ** 2
        )
    return total / len(pairs)


def unordered_pairs(y: list[int]) -> list[tuple[int, int, bool]]:
    n = len(y)
    return [(i, j, y[i] == y[j]) for i in range(n) for j in range(i + 1, n)]


def mean_hinge(d_aps: list[float], d_ans: list[float], margin: float) -> float:
    """Mean of relu(d_ap - d_an + margin) over paired lists; 0 when empty."""
    if not d_aps:
        return 0.0
    return sum(max(p - q + margin, 0.0) for p, q in zip(d_aps, d_ans, strict=True)) / len(d_aps)
