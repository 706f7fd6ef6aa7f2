"""What every plot shares: the checks of its inputs (one-line ``ValueError`` naming the problem
and the fix), a fresh ``Figure`` on the Agg canvas and its atomic PNG write, class colours and
names, and seeded subsampling.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from torch import Tensor

from tripletlab.checks import nonfinite_rows
from tripletlab.data import Images
from tripletlab.io import atomic_write_bytes as write_atomic

# ---------------------------------------------------------------------------------- checks


def _check_set(what: str, embeddings: Tensor, labels: Tensor) -> None:
    """One-line ``ValueError`` for an unusable (N, D) embedding set with (N,) labels."""
    if embeddings.dim() != 2:
        raise ValueError(
            f"{what} embeddings must be a (N, D) tensor, got shape {tuple(embeddings.shape)}; "
            "pass one row per item"
        )
    n = embeddings.shape[0]
    if n == 0:
        raise ValueError(f"the {what} set is empty; pass at least one item (check the split)")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{what}: {n} embeddings but labels of shape {tuple(labels.shape)}; pass one label "
            "per embedding row, in the same order"
        )
    bad = nonfinite_rows(embeddings)
    if bad:
        raise ValueError(
            f"{what} embeddings have {bad} row(s) with NaN or inf; the model diverged: embed "
            "with an earlier checkpoint (checkpoints/best.pt) or retrain with a lower --lr"
        )


def _check_images(what: str, images: Images, n: int) -> None:
    dtype = images.dtype if isinstance(images, Tensor) else torch.uint8
    if len(images.shape) != 4 or dtype != torch.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{what} images must be uint8 of shape (N, 1 or 3, H, W), got {dtype} of "
            f"shape {tuple(images.shape)}; pass ImageSet.images"
        )
    if images.shape[0] != n:
        raise ValueError(
            f"{what}: {images.shape[0]} images but {n} embeddings; pass the images the "
            "embeddings were computed from, in the same order"
        )


# ---------------------------------------------------------------------------------- output


def _new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg, whatever the backend
    return fig


def wrap_text(text: str, width_px: float, fontsize: float, dpi: int = 100) -> list[str]:
    """``text`` in lines no wider than ``width_px`` pixels as Agg draws it at ``fontsize``
    points and ``dpi`` (words kept whole: a word wider than that has a line of its own)."""
    renderer = _new_figure(1, 1, dpi).canvas.get_renderer()  # type: ignore[attr-defined]
    font = FontProperties(size=fontsize)

    def fits(line: str) -> bool:
        width = renderer.get_text_width_height_descent(line, font, ismath=False)[0]
        return float(width) <= width_px

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _save(fig: Figure, path: Path, *, tight: bool = True) -> Path:
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        bbox_inches="tight" if tight else None,
        metadata={"Software": None},  # no version string: same inputs, same bytes
    )
    return write_atomic(path, buf.getvalue())


def _class_colors(num_classes: int) -> npt.NDArray[np.float64]:
    """(num_classes, 4) RGBA: tab10, tab20, or evenly spaced turbo beyond 20 classes."""
    if num_classes <= 20:
        cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
        return np.asarray(cmap(np.arange(num_classes)))  # integers index the listed colours
    return np.asarray(colormaps["turbo"](np.linspace(0.0, 1.0, num_classes)))


def _present_class_colors(
    present: npt.NDArray[np.int64], num_classes: int
) -> npt.NDArray[np.float64]:
    """(len(present), 4) RGBA of the classes ``present`` (sorted ids) in a plot of a set of
    ``num_classes`` classes: each id's colour among all of them, so that two plots of one
    run agree, except for at most 20 of more than 20 classes (a run's unseen classes), which
    get tab10 or tab20 in id order: distinct colours, not neighbours on the turbo scale.

    Example:
        >>> bool((_present_class_colors(np.array([3]), 10) == _class_colors(10)[3]).all())
        True
        >>> few = _present_class_colors(np.array([30, 31]), 40)
        >>> bool((few == _class_colors(2)).all())
        True
    """
    if num_classes > 20 and len(present) <= 20:
        return _class_colors(len(present))
    return _class_colors(num_classes)[present]


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


def _subsample(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values
