"""How much pair accuracy a run's 1-NN accuracy allows: torchvision's metric against a collapse.

torchvision's pair accuracy asks, for every test pair i < j, whether the distance falls under
one global threshold. An embedding that put every test image exactly on a point of its 1-NN
class (a perfect collapse onto the classifier the embedding already is) answers "same" iff the
two 1-NN predictions agree. From the confusion matrix ``C`` (true x predicted counts) of the
1-NN classifier, with ``N`` test images, ``choose2(x) = x (x - 1) / 2``::

    both_same = sum_{t,p} choose2(C[t, p])       # same class, same prediction
    same_true = sum_t choose2(C[t, :].sum())     # same class
    same_pred = sum_p choose2(C[:, p].sum())     # same prediction
    accuracy  = (choose2(N) - same_true - same_pred + 2 * both_same) / choose2(N)

Reads the embeddings file that ``tripletlab embed RUN --split all`` writes (ids ``train/i`` and
``test/i``), prints the run's 1-NN accuracy (training images as the gallery), that collapse's
pair accuracy and the embedding's own pair accuracy::

    tripletlab embed runs/final-fmnist5 --split all --out /tmp/all.npz
    python benchmarks/pair_accuracy_bound.py /tmp/all.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tripletlab.embeddingfile import load_embeddings
from tripletlab.metrics import nearest_neighbors, pair_accuracy


def confusion(labels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """(K, K) float64 counts, true class x predicted class, from (N,) labels and predictions."""
    k = int(max(labels.max(), predicted.max())) + 1
    c = torch.zeros(k, k, dtype=torch.float64)
    c.index_put_((labels, predicted), torch.ones(labels.shape[0], dtype=torch.float64), True)
    return c


def collapse_pair_accuracy(c: torch.Tensor) -> float:
    """Pair accuracy of "same iff the predictions agree" over all pairs i < j, from the
    (K, K) confusion counts ``c`` (the formula of the module docstring)."""

    def choose2(x: torch.Tensor) -> torch.Tensor:
        return x * (x - 1) / 2

    n = c.sum()
    total = choose2(n)
    both = choose2(c).sum()
    same_true, same_pred = choose2(c.sum(1)).sum(), choose2(c.sum(0)).sum()
    return float((total - same_true - same_pred + 2 * both) / total)


def shrink_errors(c: torch.Tensor, factor: float) -> torch.Tensor:
    """``c`` with every off-diagonal count times ``factor``, the rest moved to the diagonal."""
    off = c - torch.diag(c.diag())
    return torch.diag(c.diag() + (1 - factor) * off.sum(1)) + factor * off


def needed_accuracy(c: torch.Tensor, target: float) -> float:
    """The 1-NN accuracy at which the collapse reaches ``target`` pair accuracy, when every
    class's errors shrink by the same factor (bisection; the collapse improves monotonically)."""
    lo, hi = 0.0, 1.0  # factors: 0 = no errors, 1 = the run's errors
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if collapse_pair_accuracy(shrink_errors(c, mid)) >= target else (lo, mid)
    shrunk = shrink_errors(c, lo)
    return float(shrunk.diag().sum() / shrunk.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("embeddings", help="file from `tripletlab embed RUN --split all`")
    p.add_argument("--target", type=float, default=0.98, help="pair accuracy to reach")
    args = p.parse_args()
    f = load_embeddings(Path(args.embeddings))
    e, y = f.embeddings.float(), f.labels.long()
    test = torch.tensor([i.startswith("test/") for i in f.ids])
    et, yt, eg, yg = e[test], y[test], e[~test], y[~test]
    predicted = yg[nearest_neighbors(et, eg, 1)[1][:, 0]]  # (N,) the 1-NN's class
    knn = (predicted == yt).float().mean()
    print(f"1-NN accuracy (all training images as gallery): {knn:.4f}")
    c = confusion(yt, predicted)
    print(f"pair accuracy of the collapse onto the 1-NN classes: {collapse_pair_accuracy(c):.4f}")
    print(
        f"1-NN accuracy at which the collapse reaches {args.target}, every class's errors "
        f"shrunk alike: {needed_accuracy(c, args.target):.4f}"
    )
    print(f"pair accuracy of the embedding itself: {pair_accuracy(et, yt).accuracy:.4f}")


if __name__ == "__main__":
    main()
