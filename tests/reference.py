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


# --------------------------------------------------------------------------- metrics


def cross_distances(xq: np.ndarray, xg: np.ndarray, distance: str) -> np.ndarray:
    """(Q, N) float64 distances between two sets by explicit differences."""
    xq, xg = np.asarray(xq, dtype=np.float64), np.asarray(xg, dtype=np.float64)
    out = np.zeros((xq.shape[0], xg.shape[0]))
    for i in range(xq.shape[0]):
        for j in range(xg.shape[0]):
            if distance == "cosine":
                ni, nj = np.linalg.norm(xq[i]), np.linalg.norm(xg[j])
                cos = 0.0 if ni == 0 or nj == 0 else float(xq[i] @ xg[j]) / (ni * nj)
                out[i, j] = min(max(1.0 - cos, 0.0), 2.0)
            else:
                sq = float(((xq[i] - xg[j]) ** 2).sum())
                out[i, j] = math.sqrt(sq) if distance == "euclidean" else sq
    return out


def retrieval_per_query(
    d: np.ndarray, yq: list[int], yg: list[int], same_set: bool, ks: list[int]
) -> list[dict[str, float] | None]:
    """Per query (None when it has no relevant item): every retrieval metric, by definition.

    The i-th nearest relevant item has rank i + #(irrelevant items at distance <= its own):
    ties resolved against the query.
    """
    out: list[dict[str, float] | None] = []
    for q in range(len(yq)):
        cand = [j for j in range(len(yg)) if not (same_set and j == q)]
        rel_d = sorted(float(d[q][j]) for j in cand if yg[j] == yq[q])
        irr_d = [float(d[q][j]) for j in cand if yg[j] != yq[q]]
        r = len(rel_d)
        if r == 0:
            out.append(None)
            continue
        ranks = [i + sum(1 for e in irr_d if e <= v) for i, v in enumerate(rel_d, 1)]
        v = {
            "precision_at_1": float(ranks[0] == 1),
            "r_precision": sum(1 for rk in ranks if rk <= r) / r,
            "map_at_r": sum(i / rk for i, rk in enumerate(ranks, 1) if rk <= r) / r,
            "map": sum(i / rk for i, rk in enumerate(ranks, 1)) / r,
            "mrr": 1.0 / ranks[0],
        }
        for k in ks:
            v[f"recall@{k}"] = float(ranks[0] <= k)
        out.append(v)
    return out


def mean_scores(
    per_query: list[dict[str, float] | None], yq: list[int]
) -> tuple[dict[str, float], dict[int, dict[str, float]], int]:
    """(means over scored queries, per query class means, #scored); 0 for nothing scored."""

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        keys = rows[0].keys() if rows else []
        return {k: sum(r[k] for r in rows) / len(rows) for k in keys}

    scored = [v for v in per_query if v is not None]
    per_class = {}
    for c in sorted(set(yq)):
        rows = [v for v, y in zip(per_query, yq, strict=True) if y == c and v is not None]
        per_class[c] = mean(rows)
    return mean(scored), per_class, len(scored)


def pair_lists(d: np.ndarray, y: list[int]) -> tuple[list[float], list[float]]:
    """(same-class, different-class) distances of all pairs i < j."""
    same: list[float] = []
    diff: list[float] = []
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            (same if y[i] == y[j] else diff).append(float(d[i][j]))
    return same, diff


def roc_auc(same: list[float], diff: list[float]) -> float:
    """P(d_same < d_diff) + P(tie) / 2 over every (same, different) pair of pairs."""
    wins = sum(1.0 if s < t else 0.5 if s == t else 0.0 for s in same for t in diff)
    return wins / (len(same) * len(diff))


def tar_at_far(same: list[float], diff: list[float], far: float) -> float:
    """The best fraction of same pairs with d <= t over real t with FAR(t) <= far."""
    neg = sorted(diff)
    allowed = math.floor(far * len(neg))  # different pairs that may be accepted
    if allowed >= len(neg):
        return 1.0
    # Any t just below the (allowed + 1)-th smallest different-pair distance.
    return sum(1 for s in same if s < neg[allowed]) / len(same)


def pair_accuracies(d: np.ndarray, y: list[int], thresholds: list[float]) -> list[float]:
    """Accuracy of "same iff d <= t" over all pairs i < j, for each t."""
    same, diff = pair_lists(d, y)
    total = len(same) + len(diff)
    return [
        (sum(1 for s in same if s <= t) + sum(1 for s in diff if s > t)) / max(total, 1)
        for t in thresholds
    ]


def triplet_accuracy(
    d: np.ndarray, y: list[int], triplets: list[Triplet]
) -> tuple[float, dict[int, float]]:
    """(fraction with d(a, p) < d(a, n), the same per anchor class)."""
    right = [d[a][p] < d[a][n] for a, p, n in triplets]
    per_class = {}
    for c in sorted({y[a] for a, _, _ in triplets}):
        mine = [r for r, (a, _, _) in zip(right, triplets, strict=True) if y[a] == c]
        per_class[c] = sum(mine) / len(mine)
    return sum(right) / len(right), per_class


def fixed_anchor_positive(y: list[int]) -> list[tuple[int, int]]:
    """SpikeKing's (anchor, positive) pairs: consecutive members of each class of >= 2."""
    members = {c: [i for i in range(len(y)) if y[i] == c] for c in sorted(set(y))}
    sizes = [len(m) for m in members.values() if len(m) >= 2]
    if len(members) < 2 or not sizes:
        return []
    m = min(sizes) - 1
    return [(ms[i], ms[i + 1]) for ms in members.values() if len(ms) >= 2 for i in range(m)]


def mutual_information(y: list[int], c: list[int]) -> tuple[float, float, float, float]:
    """(NMI, AMI, MI, E[MI]) of two labelings, arithmetic normalisation, natural log."""
    n = len(y)
    ys, cs = sorted(set(y)), sorted(set(c))
    table = [[sum(1 for k in range(n) if y[k] == a and c[k] == b) for b in cs] for a in ys]
    rows = [sum(r) for r in table]
    cols = [sum(table[i][j] for i in range(len(ys))) for j in range(len(cs))]
    mi = sum(
        nij / n * math.log(n * nij / (rows[i] * cols[j]))
        for i, r in enumerate(table)
        for j, nij in enumerate(r)
        if nij
    )
    h_y = -sum(a / n * math.log(a / n) for a in rows)
    h_c = -sum(b / n * math.log(b / n) for b in cols)
    emi = 0.0
    for a in rows:
        for b in cols:
            for nij in range(max(1, a + b - n), min(a, b) + 1):
                log_p = (
                    math.lgamma(a + 1) + math.lgamma(b + 1) + math.lgamma(n - a + 1)
                    + math.lgamma(n - b + 1) - math.lgamma(n + 1) - math.lgamma(nij + 1)
                    - math.lgamma(a - nij + 1) - math.lgamma(b - nij + 1)
                    - math.lgamma(n - a - b + nij + 1)
                )  # fmt: skip
                emi += nij / n * math.log(n * nij / (a * b)) * math.exp(log_p)
    mean_h = (h_y + h_c) / 2
    if h_y == h_c == 0.0:  # both one cluster: identical labelings
        return 1.0, 1.0, mi, emi
    nmi = mi / mean_h if mean_h > 0 else 0.0
    ami = (mi - emi) / (mean_h - emi)
    return nmi, ami, mi, emi


def knn(xq: np.ndarray, xg: np.ndarray, k: int, distance: str) -> list[list[tuple[float, int]]]:
    """Per query, the min(k, N) nearest gallery items as (distance, index), ordered by
    (distance, index): every item scored, the whole list sorted."""
    d = cross_distances(xq, xg, distance)
    out = []
    for i in range(d.shape[0]):
        scored = sorted((float(d[i, j]), j) for j in range(d.shape[1]))
        out.append(scored[: min(k, d.shape[1])])
    return out


def calibration_curve(
    dist: list[float], correct: list[bool], num_known: int
) -> list[tuple[float, int, int, float, float, float]]:
    """(t, TP, M, precision, recall, F1) for every distinct t, each by counting the queries
    with d <= t: precision TP / M, recall TP / K, F1 their harmonic mean."""
    rows = []
    for t in sorted(set(dist)):
        m = sum(1 for d in dist if d <= t)
        tp = sum(1 for d, c in zip(dist, correct, strict=True) if d <= t and c)
        p, r = tp / m, tp / num_known
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        rows.append((t, tp, m, p, r, f1))
    return rows
