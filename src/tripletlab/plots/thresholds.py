"""Pictures of a match threshold on distances: :func:`plot_distance_histogram` (distances of
sampled positive and negative pairs, a threshold marked) and :func:`plot_calibration`
(precision, recall and F1 of an index's match threshold against the threshold, the stored
thresholds marked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tripletlab.calibration import Calibration
from tripletlab.data import pair_indices
from tripletlab.distances import Distance, check_distance, paired_distances
from tripletlab.plots._common import _check_set, _new_figure, _save


def plot_distance_histogram(
    embeddings: Tensor,
    labels: Tensor,
    path: Path,
    *,
    threshold: float | None = None,
    num_pairs: int = 20_000,
    distance: Distance = "euclidean",
    bins: int = 60,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Histograms of the distances of positive and negative pairs, threshold marked.

    About ``min(num_pairs, N (N - 1) / 2)`` random pairs, half positive and half negative,
    are sampled with :func:`tripletlab.data.pair_indices` (with replacement; never the N x N
    matrix). Both histograms are normalised to unit area. With a threshold, the legend gives
    the balanced accuracy of "same class iff distance <= threshold" on the sampled pairs.

    Args:
        embeddings: (N, D), finite.
        labels: (N,) class ids; at least 2 classes and one class with 2 items.
        path: the PNG to write.
        threshold: a distance to mark, e.g. ``metrics["pair_threshold"]``.
        num_pairs: pairs to sample.
        distance: as in :func:`tripletlab.distances.pairwise_distances`.
        bins: histogram bins.
        seed: pair sampling seed.
        title: defaults to the number of pairs.

    Returns:
        ``path``.
    """
    check_distance(distance)
    _check_set("histogram", embeddings, labels)
    counts = torch.bincount(labels.cpu() - labels.min().cpu())
    if int((counts > 0).sum()) < 2 or int(counts.max()) < 2:
        raise ValueError(
            "distance histograms need at least 2 classes and a class with 2 items; pass a "
            "larger set"
        )
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be >= 2, got {num_pairs}")
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    num_pairs = min(num_pairs, n * (n - 1) // 2)  # no more pairs than there are
    i, j, same = pair_indices(labels.cpu(), num_pairs, generator=g)  # (P,) each
    dev = embeddings.device
    d = paired_distances(embeddings[i.to(dev)], embeddings[j.to(dev)], distance).double().cpu()
    pos, neg = d[same].numpy(), d[~same].numpy()
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(d.numpy(), bins=bins).tolist()
    ax.hist(
        pos,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:green",
        label=f"same class ({len(pos):,})",
    )
    ax.hist(
        neg,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:red",
        label=f"different classes ({len(neg):,})",
    )
    if threshold is not None:
        tpr = float((pos <= threshold).mean()) if len(pos) else 0.0
        tnr = float((neg > threshold).mean()) if len(neg) else 0.0
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {threshold:.3g} (balanced accuracy {(tpr + tnr) / 2:.1%})",
        )
    ax.set_xlabel(f"{distance} distance")
    ax.set_ylabel("density")
    ax.set_title(title or f"distances of {len(d):,} random pairs")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_calibration(
    calibration: Calibration,
    path: Path,
    *,
    distance: str = "euclidean",
    title: str | None = None,
) -> Path:
    """Precision, recall and F1 of "match when the nearest distance <= t" against ``t``,
    with the stored thresholds marked (see :mod:`tripletlab.calibration`).

    Args:
        calibration: from :meth:`tripletlab.search.EmbeddingIndex.calibrate`.
        path: the PNG to write.
        distance: the index's distance, for the axis label.
        title: defaults to the query counts.

    Returns:
        ``path``.

    Corner cases:
        An infinite candidate threshold (a query with no neighbour) is left out of the x
        axis; an unreachable target precision is listed in the legend without a line.
    """
    c = calibration.curve
    finite = torch.isfinite(c.thresholds)
    t = c.thresholds[finite].numpy()
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for values, name, color in (
        (c.precision, "precision", "tab:blue"),
        (c.recall, "recall", "tab:orange"),
        (c.f1, "F1", "tab:green"),
    ):
        ax.plot(t, values[finite].numpy(), color=color, label=name, drawstyle="steps-post")
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    for n, p in enumerate(calibration.points):
        if p.threshold is None:
            ax.plot([], [], " ", label=f"{p.name}: not reachable")
            continue
        ax.axvline(
            p.threshold,
            color="black",
            linestyle=styles[n % len(styles)],
            linewidth=1.0,
            label=f"{p.name}: t={p.threshold:.3g} (P {p.precision:.3f}, R {p.recall:.3f})",
        )
    ax.set_xlabel(f"threshold on the nearest {distance} distance")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(
        title or f"calibration on {c.num_queries:,} queries ({c.num_known:,} of indexed classes)"
    )
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)
