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


#: Beyond 20 classes, class id ``c`` is drawn at ``c`` times this (mod 1) along turbo: any
#: run of consecutive ids (a run's unseen classes are the last ones) lands spread over the
#: whole scale, not on neighbouring shades (the golden ratio's three-gap property).
_COLOR_STEP = (5**0.5 - 1) / 2


def _class_colors(num_classes: int) -> npt.NDArray[np.float64]:
    """(num_classes, 4) RGBA by class id: tab10, tab20, or beyond 20 classes turbo at
    ``id * _COLOR_STEP mod 1``, so that a few consecutive ids of many get distinct colours.

    Example:
        >>> few = _class_colors(40)[30:40, :3]  # ten consecutive ids of 40
        >>> gaps = np.linalg.norm(few[:, None] - few[None], axis=-1) + 9 * np.eye(10)
        >>> bool(gaps.min() > 0.1)  # 0.16; evenly spaced along turbo, the closest two: 0.06
        True
    """
    if num_classes <= 20:
        cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
        return np.asarray(cmap(np.arange(num_classes)))  # integers index the listed colours
    return np.asarray(colormaps["turbo"]((np.arange(num_classes) * _COLOR_STEP) % 1.0))


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


def _subsample(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values
