"""Inference with a trained run: embed a dataset and write an embeddings file.

:func:`embed_run` embeds the images of a dataset (the run's own by default) with the run's
model exactly as ``tripletlab evaluate`` does (:func:`tripletlab.embedding.embed`): the
run's normalisation, and its embedding mode
(:meth:`tripletlab.evaluation.LoadedRun.embed_mode`: flip test-time augmentation for runs
trained with flips, bfloat16 autocast where the run trained with it); :func:`run_embed`
writes the result as an :class:`~tripletlab.embeddingfile.EmbeddingFile` for
``tripletlab embed``.

What is embedded is the dataset as :func:`tripletlab.data.load_dataset` gives it, with every
class and its own train/test split (``--split train|test|all``), not the run's class subset
or validation hold-out: an embeddings file is a gallery or a set of queries, not an
evaluation. The normalisation is the run's, stored in its checkpoint
(:class:`tripletlab.training.InferenceSpec`): the per-channel mean and std of its training
split, whatever the dataset embedded.

Item ids: the image file path relative to the folder for ``imagefolder:PATH``
(``"cat/1.png"``, ``"train/cat/1.png"`` in a ``train/``/``test/`` layout; ``meta["dataset"]``
names the folder by its absolute path, where ``tripletlab search --grid`` reads them), else
``"<split>/<index>"`` with the index into the dataset's own split (``"test/123"`` is the
124th image of the Fashion-MNIST test file; for ``digits`` the index into its seeded split).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

from tripletlab.checks import check_choice, check_not_an_input
from tripletlab.data import ImageSet, Splits
from tripletlab.embedding import Progress, Stats, check_finite, embed
from tripletlab.embeddingfile import EmbeddingFile, save_embeddings
from tripletlab.evaluation import DEVICES, LoadedRun, check_image_shape, load_run, run_config
from tripletlab.training import TrainConfig, load_config_dataset

__all__ = [
    "EMBED_SPLITS",
    "EmbedConfig",
    "EmbedResult",
    "EmbedSplit",
    "RunDataset",
    "check_output_path",
    "embed_run",
    "item_ids",
    "load_run_dataset",
    "run_embed",
]

EmbedSplit = Literal["train", "test", "all"]
EMBED_SPLITS: tuple[str, ...] = get_args(EmbedSplit)
# Which parts of the dataset each split embeds, in this order.
_PARTS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "test": ("test",),
    "all": ("train", "test"),
}


def check_output_path(path: Path, flag: str) -> Path:
    """Fail early, with one line naming ``flag``, if ``path`` cannot be written as a file.

    The nearest existing folder above ``path`` must be a writable folder (the missing ones
    are created when the file is written); nothing is created here.

    Raises:
        ValueError: ``path`` is a folder, or lies under a file or an unwritable folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path} ({parent} is not a folder); choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path} (permission denied); choose another {flag}")
    return path


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class RunDataset:
    """A dataset loaded for a run's model.

    Attributes:
        config: the run's config with ``dataset``, ``data_dir`` and ``image_size`` replaced.
        splits: the dataset as :func:`tripletlab.data.load_dataset` gives it (every class).
        stats: the run's normalisation (the checkpoint's, whatever the dataset).
    """

    config: TrainConfig
    splits: Splits
    stats: Stats


def load_run_dataset(
    run: LoadedRun,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> RunDataset:
    """Load ``dataset`` (default: the run's own) at the run's image size and seed.

    Raises:
        tripletlab.data.DataError: unloadable data, images of another shape than the run's,
            a class split that does not fit.
    """
    config = run_config(run, dataset=dataset, data_dir=data_dir)
    splits = load_config_dataset(config, progress)
    check_image_shape(run, config, splits, "use data of that shape")
    return RunDataset(config, splits, run.stats)


def item_ids(images: ImageSet, part: str) -> tuple[str, ...]:
    """One id per item: its path for an image folder, else ``"<part>/<index>"``."""
    if images.paths is not None:
        return images.paths
    return tuple(f"{part}/{i}" for i in range(len(images)))


# ------------------------------------------------------------------------------ embedding


@dataclass(frozen=True)
class EmbedResult:
    """Embeddings and how long computing them took.

    Attributes:
        data: the embeddings, labels, ids, classes and meta.
        seconds: wall time of the forward passes alone (``time.perf_counter``; no loading).
        path: the file :func:`run_embed` wrote; ``None`` from :func:`embed_run`.
    """

    data: EmbeddingFile
    seconds: float
    path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return len(self.data) / max(self.seconds, 1e-9)


def embed_run(
    run: LoadedRun,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "all",
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> EmbedResult:
    """Embed ``split`` of ``dataset`` (default: the run's) with the run's model.

    Args:
        run: from :func:`tripletlab.evaluation.load_run`.
        dataset, data_dir: any spec of :func:`tripletlab.data.load_dataset` and where its
            IDX files are (default: the run's).
        split: ``train``, ``test`` or ``all`` (train then test) of the dataset's own split.
        batch_size: images per forward pass (default: the run's ``eval_batch_size``).
        progress: ``progress("embedding <part>", done, total)`` callbacks.

    Returns:
        (N, D) float32 CPU embeddings in the dataset's order, unit rows when the run
        normalises; labels index the dataset's classes; ``meta`` holds ``run``,
        ``checkpoint``, ``epoch``, ``dataset``, ``split``, ``distance``, ``normalized``,
        ``flip_tta`` and ``bf16`` (the embedding mode used).

    Raises:
        ValueError, tripletlab.data.DataError: an unknown split, unusable data, NaN
            embeddings (a diverged run).

    Corner cases:
        - The bfloat16 mode depends on the device (``--amp auto`` is on for CUDA and CPUs
          with native bfloat16), so the same run can give slightly different embeddings on
          another machine; ``meta["bf16"]`` says which was used.
        - With bfloat16 the model's L2 normalisation runs in bfloat16 too: rows have norm
          1 to about 1e-2 only (``meta["normalized"]`` says the model normalises).
        - An empty split gives a (0, D) file.
    """
    check_choice("split", split, EMBED_SPLITS)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    data = load_run_dataset(run, dataset=dataset, data_dir=data_dir, progress=progress)
    config = data.config
    mode = run.embed_mode(batch_size)
    sets = {"train": data.splits.train, "test": data.splits.test}
    parts, seconds = [], 0.0
    for part in _PARTS[split]:
        t0 = time.perf_counter()
        e = embed(
            run.model, sets[part].images, data.stats, run.device, mode, progress=progress, what=part
        )
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds += time.perf_counter() - t0
        check_finite(e, part, f"the checkpoint {run.checkpoint}")
        parts.append(e.cpu())
    chosen = [sets[p] for p in _PARTS[split]]
    embeddings: Tensor = torch.cat(parts)  # (N, D)
    labels = torch.cat([s.labels for s in chosen])  # (N,)
    ids = tuple(i for p, s in zip(_PARTS[split], chosen, strict=True) for i in item_ids(s, p))
    meta = {
        "run": str(run.run_dir if run.run_dir is not None else run.checkpoint),
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
        "dataset": config.data.dataset,
        "split": split,
        "distance": config.objective.distance,
        "normalized": bool(run.model.normalize),
        "flip_tta": mode.flip,
        "bf16": mode.amp,
    }
    out = EmbeddingFile(embeddings, labels, ids, data.splits.train.classes, meta)
    return EmbedResult(out, seconds)


# ------------------------------------------------------------------------------ command


@dataclass
class EmbedConfig:
    """What ``tripletlab embed`` does.

    Attributes:
        run: a run folder (its ``checkpoints/best.pt``) or a ``.pt`` checkpoint.
        out: the embeddings file to write (``.npz``; see :mod:`tripletlab.embeddingfile`).
        dataset: the dataset to embed (default: the run's), any spec of
            :func:`tripletlab.data.load_dataset`.
        data_dir: where its IDX files are (default: the run's).
        split: ``train``, ``test`` or ``all``.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per forward pass (default: the run's ``eval_batch_size``).
    """

    run: str
    out: str
    dataset: str | None = None
    data_dir: str | None = None
    split: str = "all"
    device: str = "auto"
    batch_size: int | None = None

    def check(self) -> None:
        """Raise a one-line ``ValueError`` for a bad setting, before anything is loaded."""
        check_choice("split", self.split, EMBED_SPLITS)
        check_choice("device", self.device, DEVICES)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        check_output_path(Path(self.out), "--out")


def run_embed(config: EmbedConfig, progress: Progress | None = None) -> EmbedResult:
    """``tripletlab embed``: load the run, embed the split, write the file atomically."""
    config.check()
    run = load_run(Path(config.run), config.device)
    check_not_an_input(Path(config.out), "--out", run.files())
    result = embed_run(
        run,
        dataset=config.dataset,
        data_dir=config.data_dir,
        split=config.split,
        batch_size=config.batch_size,
        progress=progress,
    )
    path = save_embeddings(Path(config.out), result.data)
    return replace(result, path=path)
