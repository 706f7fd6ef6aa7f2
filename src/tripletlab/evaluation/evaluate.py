"""Scoring a run: the sets it is scored on (:func:`eval_groups`), :func:`evaluate_run`,
and the ``evaluate`` command (:class:`EvalConfig`, :func:`run_evaluate`), which writes the
metrics as JSON (:func:`tripletlab.scores.to_json`).

Seen and unseen classes: a run trained on a class subset (``train_classes``,
``test_classes`` or ``unseen_classes`` in its config) is reported twice, ``{"seen": {...},
"unseen": {...}}``: seen = the test-split images of the training classes, unseen = every
image of the held-out classes (from the dataset's train and test splits, see
:func:`tripletlab.data.class_split`), each scored against itself for retrieval; the k-NN
gallery of the seen classes is the training set, that of the unseen ones is leave-one-out.
A run without a class split is scored so on request (``split="unseen"``), its dataset's test
split divided by class: a ``train/`` and ``test/`` folder of other classes is all unseen.
The pair threshold is fitted on the validation images (class-disjoint ones by default,
``--val-classes``) in both cases.

Query and gallery: a dataset with a query/gallery split (In-Shop,
:attr:`tripletlab.data.Splits.gallery`) scores each query (its test set) against the gallery
alone, for retrieval and k-NN (``retrieval_gallery`` and ``knn_gallery`` say ``"gallery"``),
as at the end of training.

Baselines: each group gets the ``baselines`` of ``metrics.json`` (raw pixels, and the run's
network at the initial weights of its seed: :func:`tripletlab.scores.baseline_scores`), under
the group's protocol and with the same figures as ``fit`` wrote; they are retrieval scores,
so they come with the ``retrieval`` group, and ``baselines=False`` (``--no-baselines``) leaves
them out (they cost one more embedding of the test set and two retrieval passes, one of them
over raw pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from tripletlab.checks import check_choice, check_not_an_input, counted
from tripletlab.data import ImageSet, Splits
from tripletlab.embedding import Progress
from tripletlab.evaluation.common import DEVICES
from tripletlab.evaluation.runs import LoadedRun, load_run, run_data
from tripletlab.io import atomic_write_text
from tripletlab.scores import METRIC_GROUPS, baseline_scores, evaluate_images, to_json
from tripletlab.training import TrainConfig, has_class_split, seen_test_set

Split = Literal["test", "seen", "unseen"]
SPLITS: tuple[str, ...] = get_args(Split)

EVALUATION_NAME = "evaluation.json"


@dataclass(frozen=True)
class EvalGroup:
    """One set of test images to score, the training set it may use as k-NN gallery, and
    the gallery of a query/gallery split (``test`` then holds its queries)."""

    test: ImageSet
    gallery: ImageSet | None
    query_gallery: ImageSet | None = None


def eval_groups(
    config: TrainConfig, splits: Splits, split: str | None
) -> tuple[str, dict[str, EvalGroup]]:
    """The sets to score for ``split`` (see the module): ``(resolved split, {name: group})``.

    ``None`` is ``"unseen"`` for a run trained on a class subset, else ``"test"``. ``"test"``
    is one group, the run's test split (the held-out classes of a class split), scored as at
    the end of training. ``"unseen"`` gives ``"seen"`` and ``"unseen"`` groups, ``"seen"``
    the first alone. Without a class split, the dataset's test split is divided by class:
    seen = its images of classes the run trained on, unseen = the others (a ``train/`` and
    ``test/`` folder of other classes has only unseen ones); a group of fewer than 2 classes,
    where every neighbour is right, is left out of ``"unseen"``.

    Raises:
        ValueError: an unknown split; ``"unseen"`` or ``"seen"`` when the group it asks for
            would hold fewer than 2 classes.
    """
    if split is not None:
        check_choice("split", split, SPLITS)
    resolved = split or ("unseen" if has_class_split(config) else "test")
    if resolved == "test":
        return resolved, {"test": EvalGroup(splits.test, splits.train, splits.gallery)}
    groups: dict[str, EvalGroup] = {}
    if has_class_split(config):  # (a class split keeps no query/gallery split)
        groups["seen"] = EvalGroup(seen_test_set(config, splits), splits.train)
        if resolved == "unseen":
            groups["unseen"] = EvalGroup(splits.test, None, splits.gallery)
        return resolved, groups
    trained = torch.isin(splits.test.labels, torch.unique(splits.train.labels))  # (N,)
    seen_classes = torch.unique(splits.test.labels[trained]).numel()
    unseen_classes = torch.unique(splits.test.labels[~trained]).numel()
    where = f"the test split of {config.data.dataset}"
    if resolved == "unseen" and unseen_classes < 2:
        raise ValueError(
            f"{where} holds {counted(unseen_classes, 'class')} the run never trained on, and "
            "scoring unseen classes takes at least 2 (with one, every neighbour is right); "
            "use --split test, or train with --unseen-classes N (or --train-classes)"
        )
    if resolved == "seen" and seen_classes < 2:
        raise ValueError(
            f"{where} holds {counted(seen_classes, 'class')} the run trained on, and scoring "
            "seen classes takes at least 2 (with one, every neighbour is right); use --split "
            "unseen (or test)"
        )
    if seen_classes >= 2:
        seen = splits.test if bool(trained.all()) else splits.test.subset(trained)
        groups["seen"] = EvalGroup(seen, splits.train, splits.gallery)
    if resolved == "unseen":
        groups["unseen"] = EvalGroup(splits.test.subset(~trained), None, splits.gallery)
    return resolved, groups


def evaluate_run(
    run: LoadedRun,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    k: int = 1,
    metrics: Sequence[str] = METRIC_GROUPS,
    batch_size: int | None = None,
    baselines: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score a loaded run on ``dataset`` (default: its own) and ``split`` (see the module).

    Returns:
        ``{"checkpoint", "epoch", "dataset", "split", **metrics}`` for ``split="test"``, or
        the metrics of each group under its name (``{"seen": {...}, "unseen": {...}}``);
        with ``baselines`` and the ``retrieval`` group, each set's metrics hold its
        ``baselines`` (see the module).

    Raises:
        ValueError, tripletlab.data.DataError: bad split, metric group or ``k``; unusable
            data (see :func:`run_data`); NaN embeddings.
    """
    for name in metrics:
        check_choice("metric group", name, METRIC_GROUPS)
    if split is not None:
        check_choice("split", split, SPLITS)
    config, splits, val = run_data(run, dataset=dataset, data_dir=data_dir, progress=progress)
    resolved, groups = eval_groups(config, splits, split)
    mode = run.embed_mode(batch_size)
    untrained = run.untrained() if baselines and "retrieval" in metrics else None
    out: dict[str, Any] = {
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
        "dataset": config.data.dataset,
        "split": resolved,
    }
    for name, group in groups.items():
        scores: dict[str, Any] = dict(
            evaluate_images(
                run.model,
                group.test,
                (splits.mean, splits.std),
                run.device,
                gallery=group.gallery,
                query_gallery=group.query_gallery,
                held_out=val,
                distance=config.objective.distance,
                k=k,
                metrics=metrics,
                mode=mode,
                seed=config.run.seed,
                progress=progress,
                what=name,
                source=f"the checkpoint {run.checkpoint}",
            )
        )
        if untrained is not None:
            scores["baselines"] = baseline_scores(
                group.test,
                untrained,
                (splits.mean, splits.std),
                run.device,
                gallery=group.query_gallery,
                distance=config.objective.distance,
                mode=mode,
                seed=config.run.seed,
            )
        if resolved == "test":
            out.update(scores)
        else:
            out[name] = scores
    return out


# ------------------------------------------------------------------------------ commands


@dataclass
class EvalConfig:
    """What ``tripletlab evaluate`` does.

    Attributes:
        run: a run folder or a ``.pt`` checkpoint.
        dataset: the dataset to score (default: the run's), any spec of
            :func:`tripletlab.data.load_dataset`.
        data_dir: where its IDX files are (default: the run's).
        split: ``test``, ``seen`` or ``unseen`` (see :func:`eval_groups`); ``None``: seen and
            unseen for a run trained on a class subset, else test.
        out: the JSON file to write (default: ``evaluation.json`` in the run folder, or
            ``<checkpoint>.evaluation.json`` beside a checkpoint outside one; the training's
            ``metrics.json`` is never overwritten).
        device: ``auto``, ``cpu`` or ``cuda``.
        k: neighbours of the k-NN vote.
        metrics: groups of :data:`METRIC_GROUPS` (default all).
        batch_size: images per forward pass (default: the run's ``eval_batch_size``).
        baselines: score the raw-pixel and untrained baselines too (see the module).
    """

    run: str
    dataset: str | None = None
    data_dir: str | None = None
    split: str | None = None
    out: str | None = None
    device: str = "auto"
    k: int = 1
    metrics: list[str] | None = None
    batch_size: int | None = None
    baselines: bool = True

    def check(self) -> None:
        """Raise a one-line ``ValueError`` for a bad setting, before anything is loaded."""
        if self.split is not None:
            check_choice("split", self.split, SPLITS)
        check_choice("device", self.device, DEVICES)
        for name in self.metrics or []:
            check_choice("metric group", name, METRIC_GROUPS)
        if isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"--k must be a positive number of neighbours, got {self.k}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def evaluation_path(run: LoadedRun, out: str | None) -> Path:
    """Where :func:`run_evaluate` writes (see :attr:`EvalConfig.out`).

    Raises:
        ValueError: ``out`` is the checkpoint or one of the run's records (the training's
            ``metrics.json``, a checkpoint, ``config.json``: :meth:`LoadedRun.files`).
    """
    if out is not None:
        path = Path(out)
    elif run.run_dir is not None:
        stem = "" if run.checkpoint.name == "best.pt" else f"-{run.checkpoint.stem}"
        path = run.run_dir / f"evaluation{stem}.json"
    else:
        path = run.checkpoint.with_name(f"{run.checkpoint.stem}.{EVALUATION_NAME}")
    check_not_an_input(path, "--out", run.files())
    return path


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, Any]
    path: Path


def run_evaluate(config: EvalConfig, progress: Progress | None = None) -> EvalResult:
    """``tripletlab evaluate``: load the run, score it, write the JSON atomically."""
    config.check()
    run = load_run(Path(config.run), config.device)
    path = evaluation_path(run, config.out)
    metrics = evaluate_run(
        run,
        dataset=config.dataset,
        data_dir=config.data_dir,
        split=config.split,
        k=config.k,
        metrics=config.metrics or METRIC_GROUPS,
        batch_size=config.batch_size,
        baselines=config.baselines,
        progress=progress,
    )
    atomic_write_text(path, to_json(metrics))
    return EvalResult(metrics, path)
