"""Drawing a run: :func:`plot_run` embeds its test set and a subsample of its training set
and writes the pictures of :mod:`tripletlab.plots` and the report of
:mod:`tripletlab.report`; :class:`PlotConfig` and :func:`run_plot` make the ``plot`` command
(and the end of ``tripletlab train``)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tripletlab.checks import check_choice
from tripletlab.embedding import Progress, check_finite, embed
from tripletlab.evaluation.common import DEVICES
from tripletlab.evaluation.runs import LoadedRun, load_run, run_data
from tripletlab.plots import PROJECTIONS, write_pictures
from tripletlab.report import write_report
from tripletlab.scores import seeded_subset
from tripletlab.training import load_checkpoint

#: Training items embedded for the pictures (a seeded subsample beyond); the plots subsample
#: again (t-SNE to 3,000 points).
PLOT_TRAIN_ITEMS = 5_000

PICTURES_DIR = "pictures"


def default_projections(dim: int, *, quick: bool = False) -> tuple[str, ...]:
    """``("direct",)`` for a 2-D embedding; else PCA, with ``quick`` alone, otherwise with
    t-SNE (tens of seconds) and UMAP when ``umap-learn`` is installed."""
    if dim == 2:
        return ("direct",)
    if quick:
        return ("pca",)
    has_umap = importlib.util.find_spec("umap") is not None
    return ("pca", "tsne", "umap") if has_umap else ("pca", "tsne")


@dataclass
class PlotConfig:
    """What ``tripletlab plot`` (and the end of ``tripletlab train``) does.

    Attributes:
        run: the run folder (pictures go to ``run/pictures``, the report to
            ``run/report.html``).
        dataset, data_dir: as :class:`EvalConfig`.
        projections: 2-D projections of the embedding plots (default
            :func:`default_projections`).
        quick: default projections without t-SNE and UMAP.
        device: ``auto``, ``cpu`` or ``cuda``.
        train_items: training images embedded and drawn (a seeded subsample beyond).
        batch_size: images per forward pass (default: the run's ``eval_batch_size``).
    """

    run: str
    dataset: str | None = None
    data_dir: str | None = None
    projections: list[str] | None = None
    quick: bool = False
    device: str = "auto"
    train_items: int = PLOT_TRAIN_ITEMS
    batch_size: int | None = None

    def check(self) -> None:
        """Raise a one-line ``ValueError`` for a bad setting, before anything is loaded."""
        for name in self.projections or []:
            check_choice("projection", name, PROJECTIONS)
        check_choice("device", self.device, DEVICES)
        if "umap" in (self.projections or []) and importlib.util.find_spec("umap") is None:
            raise ValueError("the 'umap' projection needs umap-learn: pip install umap-learn")
        if self.train_items < 0:
            raise ValueError(f"--train-items must be >= 0, got {self.train_items}")


@dataclass(frozen=True)
class PlotResult:
    pictures: dict[str, Path]
    report: Path


def plot_run(
    run: LoadedRun,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    projections: Sequence[str] | None = None,
    quick: bool = False,
    train_items: int = PLOT_TRAIN_ITEMS,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> PlotResult:
    """Embed the run's test set and a seeded subsample of its training set, write
    :func:`tripletlab.plots.write_pictures` into ``run_dir/pictures`` and
    :func:`tripletlab.report.write_report` to ``run_dir/report.html``.

    The learning curves come from ``checkpoints/last.pt`` (the whole run; the best
    checkpoint's history stops at its epoch); the threshold on the distance histogram is
    ``pair_threshold`` of ``metrics.json`` (of its ``unseen`` group for a run trained on a
    class subset, whose test split is the held-out classes) when the pictures are of the
    run's own dataset.

    Raises:
        ValueError: a checkpoint outside a run folder, a bad projection (e.g. ``direct`` for
            an embedding that is not 2-D); and as :func:`run_data`.
    """
    if run.run_dir is None:
        raise ValueError(
            f"{run.checkpoint} is not inside a run folder (RUN/checkpoints/*.pt with "
            "RUN/config.json); pass the run folder, where the pictures and report.html go"
        )
    dim = run.model.embedding_dim
    methods = tuple(
        check_choice("projection", name, PROJECTIONS)
        for name in (projections or default_projections(dim, quick=quick))
    )
    if "direct" in methods and dim != 2:
        raise ValueError(f"a direct plot needs a 2-D embedding, got D={dim}; drop 'direct'")
    config, splits, _ = run_data(run, dataset=dataset, data_dir=data_dir, progress=progress)
    stats = (splits.mean, splits.std)
    train = splits.train.subset(seeded_subset(len(splits.train), train_items, config.run.seed))
    source = f"the checkpoint {run.checkpoint}"
    mode = run.embed_mode(batch_size)
    e_train = embed(
        run.model, train.images, stats, run.device, mode, progress=progress, what="train"
    )
    check_finite(e_train, "train", source)
    e_test = embed(
        run.model, splits.test.images, stats, run.device, mode, progress=progress, what="test"
    )
    check_finite(e_test, "test", source)
    history = run.history
    last = run.run_dir / "checkpoints" / "last.pt"
    if last.is_file() and last != run.checkpoint:
        history = list(load_checkpoint(last)["history"])
    threshold = None
    metrics_file = run.run_dir / "metrics.json"
    if config.data.dataset == run.config.data.dataset and metrics_file.is_file():
        try:
            saved = json.loads(metrics_file.read_text())
            # the pictures are of the test split: the held-out classes of a class split
            scores = saved.get("unseen", saved) if isinstance(saved, dict) else {}
            threshold = scores.get("pair_threshold") if isinstance(scores, dict) else None
        except (OSError, ValueError):
            threshold = None  # the report reads it again and says what is wrong
    pictures = write_pictures(
        run.run_dir / PICTURES_DIR,
        test=splits.test,
        test_embeddings=e_test.cpu(),
        train=train if len(train) else None,
        train_embeddings=e_train.cpu() if len(train) else None,
        history=history,
        threshold=threshold if isinstance(threshold, float) else None,
        distance=config.objective.distance,
        projections=methods,
        seed=config.run.seed,
        progress=progress,
    )
    report = write_report(run.run_dir, pictures=pictures)
    return PlotResult(pictures, report)


def run_plot(config: PlotConfig, progress: Progress | None = None) -> PlotResult:
    """``tripletlab plot``: load the run's best checkpoint, write its pictures and report."""
    config.check()
    run = load_run(Path(config.run), config.device)
    return plot_run(
        run,
        dataset=config.dataset,
        data_dir=config.data_dir,
        projections=config.projections,
        quick=config.quick,
        train_items=config.train_items,
        batch_size=config.batch_size,
        progress=progress,
    )
