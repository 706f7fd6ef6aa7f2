"""Learning curves: :func:`plot_learning_curves` draws loss, fraction of active triplets, mean
distances and evaluation metrics per epoch, from :func:`tripletlab.training.fit`'s history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tripletlab.checks import is_number
from tripletlab.plots._common import _new_figure, _save

#: History keys that are not curves (counters and timings).
_BOOKKEEPING = {"epoch", "steps", "samples", "seconds", "loss_seconds", "samples_per_second", "lr"}
_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("training loss", ("loss",)),
    ("fraction of active triplets (pairs)", ("fraction_active",)),
    ("mean distance in the batch", ("pos_distance", "neg_distance")),
)


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], path: Path, *, title: str | None = None
) -> Path:
    """One panel each for loss, fraction of active triplets, mean positive/negative distance,
    and evaluation metrics, per epoch, from :func:`tripletlab.training.fit`'s history.

    Every other numeric key of the records (e.g. ``val_knn_accuracy``) is drawn in the
    evaluation panel, except counters and timings (``steps``, ``samples``, ``seconds``,
    ``loss_seconds``, ``samples_per_second``, ``lr``). A key missing from some epochs, or a
    NaN, leaves a gap. Panels with no data are left out. For the softmax objective,
    ``fraction_active`` is the batch error rate.

    Args:
        history: one dict per epoch, with ``epoch`` (1-based; else the position is used).
        path: the PNG to write.
        title: a title above the panels.

    Returns:
        ``path``.
    """
    if len(history) == 0:
        raise ValueError("the history is empty; train for at least one epoch first")
    for r in history:
        if not isinstance(r, Mapping):
            raise ValueError(f"history records must be dicts, got {type(r).__name__}")
    x = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(history)])

    def series(key: str) -> npt.NDArray[np.float64]:
        return np.array([float(r[key]) if is_number(r.get(key)) else np.nan for r in history])

    known = {k for _, keys in _PANELS for k in keys} | _BOOKKEEPING
    in_order = dict.fromkeys(k for r in history for k in r)  # keys in order of appearance
    numeric = [k for k in in_order if k not in known and any(is_number(r.get(k)) for r in history)]
    panels = [(name, keys) for name, keys in _PANELS if any(k in r for r in history for k in keys)]
    if numeric:
        panels.append(("evaluation", tuple(numeric)))
    if not panels:
        raise ValueError(
            "the history has no curve to draw (no loss, fraction_active or metric keys); pass "
            "the history of training.fit"
        )
    fig = _new_figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(x, series(key), marker="o", markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1 or name == "evaluation":
            ax.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
