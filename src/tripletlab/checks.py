"""Input checks shared by the whole package (miners, losses, configs, plots): one-line
``ValueError`` messages that name the shapes or values at fault and what to pass instead,
:func:`nonfinite_rows`, the one count of NaN/Inf rows behind every "not finite" message (each
caller words its own advice), :func:`printable`, how a message shows a name it did not
choose, :func:`counted` and :func:`is_number`, how messages count and what they take as a
score, and :func:`check_not_an_input`, which keeps a command from writing its output over
one of its inputs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard, TypeVar

import torch
from torch import Tensor

C = TypeVar("C", bound=str)


def check_choice(
    name: str, value: object, valid: tuple[C, ...], *, error: type[ValueError] = ValueError
) -> C:
    """``value`` as the member of ``valid`` it equals (typed as their ``Literal``), else
    ``error`` (a ``ValueError`` or a subclass of it) naming ``name`` and the valid choices.

    Example:
        >>> check_choice("distance", "cosine", ("euclidean", "cosine"))
        'cosine'
        >>> check_choice("distance", "manhattan", ("euclidean", "cosine"))
        Traceback (most recent call last):
        ValueError: unknown distance 'manhattan'; choose one of: euclidean, cosine
    """
    for choice in valid:
        if choice == value:
            return choice
    raise error(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")


def check_labels(labels: Tensor, n: int | None = None) -> None:
    """Labels must be a 1-D integer tensor, of length ``n`` when given."""
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} and dtype "
            f"{labels.dtype}; pass class ids as torch.long of shape (B,)"
        )
    if labels.dtype == torch.bool:
        raise ValueError("labels must be integer class ids, got a bool tensor; pass torch.long")
    if n is not None and labels.shape[0] != n:
        raise ValueError(
            f"labels have length {labels.shape[0]} but there are {n} embeddings; "
            "pass one label per embedding row"
        )


def nonfinite_rows(x: Tensor, block: int = 65536) -> int:
    """How many rows of ``x`` (N, ...) hold a NaN or an Inf (0 for an empty tensor).

    A block's sum is NaN or Inf when one of its values is (or when the sum overflows; the
    rows are then counted exactly), so a finite tensor costs one reduction per block of
    ``block`` rows and no (N, D) boolean temporary. One device sync per block.

    >>> nonfinite_rows(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [0.0, float("inf")]]))
    2
    """
    bad = 0
    for s in range(0, x.shape[0] if x.dim() else 0, block):
        part = x[s : s + block]
        if not bool(torch.isfinite(part.sum())):
            bad += int((~torch.isfinite(part.reshape(part.shape[0], -1))).any(1).sum())
    return bad


def check_embeddings(embeddings: Tensor, *, finite: bool = True) -> None:
    """Embeddings must be a 2-D floating tensor; with ``finite`` also free of NaN and Inf.

    The finiteness check reads one boolean back from the device (a sync on CUDA).
    """
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}; "
            "flatten or pool the network output first"
        )
    if not embeddings.dtype.is_floating_point:
        raise ValueError(f"embeddings must be floating point, got dtype {embeddings.dtype}")
    bad = nonfinite_rows(embeddings) if finite else 0
    if bad:
        raise ValueError(
            f"embeddings contain NaN or Inf in {bad} of {embeddings.shape[0]} rows; "
            "check the network and lower the learning rate"
        )


def check_margin(margin: float, name: str = "margin") -> None:
    """A margin must be a finite number >= 0."""
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {margin!r}")


def check_distance_matrix(dist: Tensor, labels: Tensor) -> None:
    """A distance matrix must be (B, N) with N >= B (square, or B anchors against N candidates
    whose first B are the anchors) and one integer label per column."""
    if dist.dim() != 2 or dist.shape[0] > dist.shape[1]:
        raise ValueError(
            "expected a square (B, B) distance matrix or (B, N) anchors against N >= B "
            f"candidates, got {tuple(dist.shape)}"
        )
    if dist.shape[0] != dist.shape[1] and labels.dim() == 1 and labels.shape[0] != dist.shape[1]:
        raise ValueError(
            f"a (B, N) distance matrix that is not square needs N = {dist.shape[1]} labels "
            f"(one per candidate), got {labels.shape[0]}"
        )
    check_labels(labels, dist.shape[1])


def printable(text: str) -> str:
    """``text`` as it is when every character prints, else its ``repr`` (quoted, with
    newlines, tabs and other control characters escaped): how messages and printed tables
    show names that come from the user (class folders, file names, ids).

    >>> printable("cat")
    'cat'
    >>> print(printable("two\\nlines"))
    'two\\nlines'
    """
    return text if text.isprintable() else repr(text)


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1.

    Example:
        >>> counted(1, "epoch"), counted(1200, "step"), counted(3, "other class")
        ('1 epoch', '1,200 steps', '3 other classes')
    """
    return f"{n:,} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"


def is_number(value: object) -> TypeGuard[float]:
    """Whether a value read from JSON is a number (an int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same path once resolved (symbolic
    links followed, ``..`` removed; neither needs to exist), or, when both exist, the same
    file on disk (hard links, a case-insensitive file system). ``False`` when either cannot
    be examined."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def check_not_an_input(path: Path, flag: str, inputs: Mapping[str, Path | None]) -> None:
    """Refuse an output ``path`` (given as ``flag``) that is one of the command's inputs.

    Args:
        path: the file the command is about to write.
        flag: the command-line flag that named it (``--out``), for the message.
        inputs: what each input is (``"the --embeddings file"``) -> its path; ``None``
            values are skipped.

    Raises:
        ValueError: ``path`` is one of ``inputs`` (:func:`same_file`); the one-line message
            names both and asks for another ``flag``.

    Example:
        >>> check_not_an_input(Path("a.npz"), "--out", {"the input": Path("a.npz")})
        Traceback (most recent call last):
        ValueError: --out a.npz is the input, which must not be overwritten; choose another --out
    """
    for what, source in inputs.items():
        if source is not None and same_file(path, source):
            raise ValueError(
                f"{flag} {path} is {what}, which must not be overwritten; choose another {flag}"
            )
