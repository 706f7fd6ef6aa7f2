"""Evaluation of a trained run: load its checkpoint, embed a dataset, score it, draw it.

Three layers, each usable alone:

- :func:`evaluate_embeddings`: every metric of :mod:`tripletlab.metrics` on (N, D)
  embeddings, as one flat dict (the keys of ``metrics.json``); pure, no I/O.
- :func:`evaluate_images`: embed an :class:`~tripletlab.data.ImageSet` (and its k-NN gallery
  and the held-out set of the pair threshold) with a model, then the above. The end of
  :func:`tripletlab.training.fit` calls it, so training and ``tripletlab evaluate`` share
  one implementation.
- :func:`load_run`, :func:`evaluate_run`, :func:`plot_run`: a run folder (or one ``.pt``
  checkpoint) in, metrics or pictures out; :func:`run_evaluate` and :func:`run_plot` take a
  typed config and write the files, for the ``evaluate`` and ``plot`` commands.

The metrics (Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020, for the
retrieval ones), by group (``metrics=`` selects groups):

- ``retrieval``: ``precision_at_1``, ``r_precision``, ``map_at_r``, ``recall_at_{1,2,4,8}``,
  each test item against the rest of the test set (self-match excluded; queries whose class
  has no other member are excluded and counted in ``num_excluded_queries``).
- ``knn``: ``knn_accuracy``, the k-NN accuracy of the test items against the training set
  (``knn_gallery`` says ``"train"``), or leave-one-out within the test set when its classes
  are not in the training set (class-disjoint splits).
- ``pairs``: torchvision's best-threshold ``pair_accuracy`` (with ``pair_threshold`` and the
  "always different" ``pair_floor``), tuned on the test pairs it scores; and the honest
  ``held_out_pair_accuracy``: the threshold is fitted on the validation pairs (or on a seeded
  subsample of the training set when the run kept no validation set) and then applied to the
  test pairs.
- ``verification``: ``roc_auc`` and ``tar_at_far_1e-3``, ``tar_at_far_1e-2`` over the test
  pairs.
- ``clustering``: ``nmi`` and ``ami`` of k-means with as many clusters as classes.

Costs, N test items: retrieval, k-NN and the two pair accuracies are chunked O(N^2 D)
passes (k-NN O(N M D) with M training items); verification and clustering run on at most
:data:`VERIFICATION_MAX_ITEMS` and :data:`CLUSTERING_MAX_ITEMS` test items, a seeded
subsample beyond (``verification_items`` and ``clustering_items`` say how many). At
Fashion-MNIST's size (N = 10,000, M = 50,000, D = 64) on one busy CPU core: retrieval 2.5 s,
k-NN 4 s, pairs 10 s (5 s of them for the held-out accuracy), verification 3 s, clustering
1.4 s. ``metrics=`` leaves groups out.

Seen and unseen classes: a run trained on a class subset (``train_classes``,
``test_classes`` or ``unseen_classes`` in its config) is reported twice, ``{"seen": {...},
"unseen": {...}}``: seen = the test images of the training classes, unseen = the test images
of the held-out classes, each scored against itself for retrieval; the k-NN gallery of the
seen classes is the training set, that of the unseen ones is leave-one-out. The pair
threshold is fitted on validation images of the training classes in both cases.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from tripletlab.data import DataError, ImageSet, Splits, load_dataset
from tripletlab.distances import Distance, check_distance
from tripletlab.metrics import (
    clustering_scores,
    held_out_pair_accuracy,
    nearest_neighbors,
    pair_accuracy,
    retrieval_metrics,
    verification_scores,
)
from tripletlab.models import EmbeddingModel, build_model
from tripletlab.training import (
    DeviceName,
    TrainConfig,
    TrainingError,
    atomic_write_text,
    config_from_dict,
    embed,
    embedding_mode,
    load_checkpoint,
    pick_device,
    prepare_data,
)

MetricGroup = Literal["retrieval", "knn", "pairs", "verification", "clustering"]
METRIC_GROUPS: tuple[str, ...] = get_args(MetricGroup)
Split = Literal["test", "seen", "unseen"]
SPLITS: tuple[str, ...] = get_args(Split)

#: The K of Recall@K; those larger than the test set allows are left out.
RECALL_KS = (1, 2, 4, 8)
#: False accept rates at which the true accept rate is reported.
FARS = (1e-3, 1e-2)
#: Test items given to k-means (a seeded subsample beyond; k-means on 70,000 64-D points
#: takes tens of seconds on one core, on 10,000 about one).
CLUSTERING_MAX_ITEMS = 10_000
#: Test items whose pairs enter ROC AUC and TAR@FAR (2e8 pairs; a seeded subsample beyond).
VERIFICATION_MAX_ITEMS = 20_000
#: Training items whose pairs fit the held-out threshold when the run has no validation set.
THRESHOLD_FIT_MAX_ITEMS = 5_000
#: Training items embedded for the pictures (a seeded subsample beyond); the plots subsample
#: again (t-SNE to 3,000 points).
PLOT_TRAIN_ITEMS = 5_000

#: ``progress(description, done, total)``: a call with ``done == 0`` starts a task, one with
#: ``done == total`` ends it (the CLI draws one progress bar per task). The same callback as
#: :data:`tripletlab.plots.Progress`.
Progress = Callable[[str, int, int], None]
Stats = tuple[tuple[float, ...], tuple[float, ...]]
Metrics = dict[str, float | int | str | None]

DEVICES: tuple[str, ...] = get_args(DeviceName)

EVALUATION_NAME = "evaluation.json"
PICTURES_DIR = "pictures"


def _check_choices(name: str, values: Sequence[str], valid: tuple[str, ...]) -> None:
    for v in values:
        if v not in valid:
            raise ValueError(f"unknown {name} {v!r}; choose from: {', '.join(valid)}")


def _seeded_subset(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def _finite(value: float) -> float | None:
    """``None`` for NaN and Inf (JSON has no such numbers), else the value."""
    return value if math.isfinite(value) else None


def _far_key(far: float) -> str:
    """``1e-3`` -> ``"tar_at_far_1e-3"``."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"tar_at_far_{mantissa}e{int(exponent)}"


# ------------------------------------------------------------------------------ embeddings


def check_finite(embeddings: Tensor, what: str, source: str = "the model") -> None:
    """One-line ``ValueError`` when some (N, D) embedding rows hold NaN or Inf."""
    bad = int((~torch.isfinite(embeddings)).any(1).sum()) if embeddings.numel() else 0
    if bad:
        raise ValueError(
            f"{source} gives NaN or Inf embeddings for {bad} of {embeddings.shape[0]} {what} "
            "images (its weights are not finite: the run diverged); evaluate an earlier "
            "checkpoint or retrain with a lower --lr"
        )


def embed_set(
    model: EmbeddingModel,
    images: Tensor,
    stats: Stats,
    device: torch.device,
    *,
    batch_size: int = 256,
    progress: Progress | None = None,
    what: str = "test",
    flip: bool = False,
    amp: bool | None = None,
) -> Tensor:
    """:func:`tripletlab.training.embed` a block of ``8 * batch_size`` images at a time,
    reporting progress as ``("embedding <what>", images done, N)``; ``flip``, ``amp`` as there.

    Args:
        images: (N, C, H, W) uint8.

    Returns:
        (N, D) float32 on ``device``.
    """
    if progress is None:
        return embed(model, images, stats, device, batch_size, flip=flip, amp=amp)
    n, desc = images.shape[0], f"embedding {what}"
    progress(desc, 0, n)
    parts = []
    for s in range(0, n, 8 * batch_size):
        block = images[s : s + 8 * batch_size]
        parts.append(embed(model, block, stats, device, batch_size, flip=flip, amp=amp))
        progress(desc, min(n, s + 8 * batch_size), n)
    return (
        torch.cat(parts)
        if parts
        else embed(model, images, stats, device, batch_size, flip=flip, amp=amp)
    )


# ------------------------------------------------------------------------------ k-NN


def _majority(votes: Tensor) -> Tensor:
    """(Q, k) neighbour labels, nearest first -> (Q,) the most frequent one; among equals the
    one voted earliest (the rule of :func:`tripletlab.metrics.knn_accuracy`)."""
    k = votes.shape[1]
    if k == 1:
        return votes[:, 0]
    same = votes[:, :, None] == votes[:, None, :]  # (Q, k, k)
    score = same.sum(2) * (k + 1) - same.int().argmax(2)  # (Q, k): more votes, then earlier
    return votes.gather(1, score.argmax(1, keepdim=True))[:, 0]


def _check_k(k: int, limit: int, where: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
        raise ValueError(
            f"k={k} neighbours asked for but {where} has {max(limit, 0)} items; pass "
            f"1 <= k <= {max(limit, 1)} (--k)"
        )


def _knn_hits(
    x: Tensor,
    y: Tensor,
    gallery: tuple[Tensor, Tensor] | None,
    k: int,
    distance: Distance,
    progress: Progress | None,
    desc: str,
) -> int:
    """Queries (N, D) with labels (N,) whose k-NN vote is right: among the ``gallery`` items,
    or leave-one-out among the other rows of ``x``; in chunks of queries for the progress
    bar (``nearest_neighbors`` chunks each again to bound memory)."""
    n = x.shape[0]
    size = max(1024, -(-n // 20))
    hits = 0
    if progress is not None:
        progress(desc, 0, n)
    for s in range(0, n, size):
        q, qy = x[s : s + size], y[s : s + size]
        if gallery is not None:
            _, idx = nearest_neighbors(q, gallery[0], k, distance=distance)  # (C, k)
            votes = gallery[1][idx]  # (C, k)
        else:
            # k + 1 neighbours in the whole set, then the query itself left out (where
            # duplicates at distance 0 pushed it out of the list, the last one instead).
            _, idx = nearest_neighbors(q, x, k + 1, distance=distance)  # (C, k + 1)
            drop = idx == torch.arange(s, s + len(q), device=idx.device)[:, None]
            drop[:, -1] |= ~drop.any(1)
            votes = y[idx[~drop].view(-1, k)]  # (C, k)
        hits += int((_majority(votes) == qy).sum())
        if progress is not None:
            progress(desc, min(n, s + size), n)
    return hits


# ------------------------------------------------------------------------------ metrics


def evaluate_embeddings(
    embeddings: Tensor,
    labels: Tensor,
    *,
    gallery: tuple[Tensor, Tensor] | None = None,
    held_out: tuple[Tensor, Tensor] | None = None,
    held_out_name: str = "validation",
    distance: Distance = "euclidean",
    k: int = 1,
    metrics: Sequence[str] = METRIC_GROUPS,
    seed: int = 0,
    progress: Progress | None = None,
    what: str = "test",
) -> Metrics:
    """Every metric of the selected groups (see the module) of one embedded test set.

    Args:
        embeddings: (N, D) test embeddings, finite.
        labels: (N,) their classes.
        gallery: ``(embeddings (M, D), labels (M,))`` of the k-NN gallery (the training
            set); ``None`` for leave-one-out k-NN within the test set.
        held_out: ``(embeddings (V, D), labels (V,))`` the pair threshold is fitted on;
            ``None`` leaves out ``held_out_pair_*``.
        held_out_name: what ``held_out`` is, stored in ``held_out_pairs_from``.
        distance: the run's distance.
        k: neighbours of the k-NN vote (the gallery needs ``k`` items; ``k + 1`` items without
            a gallery).
        metrics: the groups to compute, from :data:`METRIC_GROUPS`.
        seed: the subsamples of verification and clustering.
        progress: see :data:`Progress`; the k-NN search is one task, the other groups one
            task of ``len(metrics)`` steps.
        what: names the set in progress and error messages.

    Returns:
        A flat dict: floats in [0, 1] (``None`` where undefined, e.g. ROC AUC of a set of one
        class), counts and a few strings; always ``num_test``.

    Raises:
        ValueError: an unknown group, ``k`` larger than the gallery, NaN or Inf embeddings.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
        >>> m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]), metrics=["retrieval"])
        >>> m["precision_at_1"], m["map_at_r"], m["recall_at_2"], m["num_test"]
        (1.0, 1.0, 1.0, 4)
    """
    _check_choices("metric group", metrics, METRIC_GROUPS)
    check_distance(distance)
    x, y = embeddings.detach(), labels.to(embeddings.device)
    n = x.shape[0]
    check_finite(x, what)
    if "knn" in metrics:
        if gallery is not None:
            _check_k(k, gallery[0].shape[0], "the training set")
        else:
            _check_k(k, n - 1, f"the rest of the {what} set")
    out: Metrics = {}

    def retrieval() -> None:
        ks = [r for r in RECALL_KS if r <= n - 1]
        r = retrieval_metrics(x, y, recall_ks=ks, distance=distance)
        out.update(precision_at_1=r.precision_at_1, r_precision=r.r_precision)
        out["map_at_r"] = r.map_at_r
        out.update({f"recall_at_{kk}": v for kk, v in r.recall_at_k.items()})
        out["num_excluded_queries"] = r.num_excluded

    def knn() -> None:
        g = None if gallery is None else (gallery[0].to(x.device), gallery[1].to(x.device))
        hits = _knn_hits(x, y, g, k, distance, progress, f"{k}-NN of the {what} set")
        out["knn_accuracy"] = hits / max(n, 1)
        out["knn_gallery"] = "train" if gallery is not None else f"{what} (leave-one-out)"
        out["knn_k"] = k

    def pairs() -> None:
        pa = pair_accuracy(x, y, distance=distance)
        out.update(pair_accuracy=pa.accuracy, pair_threshold=pa.threshold, pair_floor=pa.floor)
        if held_out is not None:
            fx, fy = held_out[0].to(x.device), held_out[1].to(x.device)
            check_finite(fx, held_out_name)
            h = held_out_pair_accuracy(fx, fy, x, y, distance=distance)
            out["held_out_pair_accuracy"] = h.accuracy
            out["held_out_pair_threshold"] = h.threshold
            out["held_out_pairs_from"] = f"{held_out_name} ({fx.shape[0]} items)"

    def verification() -> None:
        pick = _seeded_subset(n, VERIFICATION_MAX_ITEMS, seed).to(x.device)
        v = verification_scores(x[pick], y[pick], fars=FARS, distance=distance)
        out["roc_auc"] = _finite(v.roc_auc)
        out.update({_far_key(f): _finite(v.tar_at_far[f]) for f in FARS})
        out["verification_items"] = int(pick.numel())

    def clustering() -> None:
        pick = _seeded_subset(n, CLUSTERING_MAX_ITEMS, seed).to(x.device)
        c = clustering_scores(x[pick], y[pick], seed=seed, distance=distance)
        out.update(nmi=c.nmi, ami=c.ami, clustering_items=int(pick.numel()))

    table = {
        "retrieval": retrieval,
        "knn": knn,
        "pairs": pairs,
        "verification": verification,
        "clustering": clustering,
    }
    steps = [(name, fn) for name, fn in table.items() if name in metrics]
    for i, (name, fn) in enumerate(steps):
        if progress is not None and name != "knn":  # the k-NN search has its own bar
            progress(f"{what}: {name}", i, len(steps))
        fn()
    if progress is not None:
        progress(f"{what}: metrics", len(steps), len(steps))
    out["num_test"] = n
    return out


def _labels_within(test: ImageSet, gallery: ImageSet) -> bool:
    """Whether every class of ``test`` has items in ``gallery``."""
    return bool(torch.isin(torch.unique(test.labels), torch.unique(gallery.labels)).all())


def evaluate_images(
    model: EmbeddingModel,
    test: ImageSet,
    stats: Stats,
    device: torch.device,
    *,
    gallery: ImageSet | None = None,
    held_out: ImageSet | None = None,
    distance: Distance = "euclidean",
    k: int = 1,
    metrics: Sequence[str] = METRIC_GROUPS,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
    what: str = "test",
    source: str = "the model",
    flip: bool = False,
    amp: bool | None = None,
) -> Metrics:
    """Embed ``test`` (and what it is compared with) and compute :func:`evaluate_embeddings`.

    Args:
        model: the embedding network.
        test: the images to score.
        stats: the training set's per-channel ``(mean, std)``, as the model was trained with.
        device: where to embed and compute.
        gallery: the training set. It is the k-NN gallery when it holds every class of
            ``test``; otherwise (class-disjoint splits) k-NN is leave-one-out within
            ``test``. With no ``held_out`` set, a seeded subsample of it
            (:data:`THRESHOLD_FIT_MAX_ITEMS`) fits the held-out pair threshold.
        held_out: the validation set: the held-out pair threshold is fitted on its pairs.
        distance, k, metrics, seed, progress, what: as :func:`evaluate_embeddings`.
        batch_size: images per forward pass.
        source: names the model in the error for NaN embeddings (e.g. the checkpoint).
        flip: average every embedding with its mirror image's (test-time augmentation;
            :func:`tripletlab.training.embed`), as runs trained with flips are evaluated.
        amp: embed under bfloat16 autocast (:func:`tripletlab.training.embed`; None: on
            CUDA only), as runs trained with it are evaluated.

    Raises:
        ValueError: as :func:`evaluate_embeddings`; checked before the slow steps where
            possible (an unknown group, ``k`` too large).
    """
    _check_choices("metric group", metrics, METRIC_GROUPS)
    knn_gallery = gallery if gallery is not None and _labels_within(test, gallery) else None
    if "knn" in metrics:  # fail before embedding anything
        if knn_gallery is not None:
            _check_k(k, len(knn_gallery), "the training set")
        else:
            _check_k(k, len(test) - 1, f"the rest of the {what} set")
    e_test = embed_set(
        model,
        test.images,
        stats,
        device,
        batch_size=batch_size,
        progress=progress,
        what=what,
        flip=flip,
        amp=amp,
    )
    check_finite(e_test, what, source)
    g = None
    if "knn" in metrics and knn_gallery is not None:
        e_gal = embed_set(
            model,
            knn_gallery.images,
            stats,
            device,
            batch_size=batch_size,
            progress=progress,
            what="training set",
            flip=flip,
            amp=amp,
        )
        check_finite(e_gal, "training", source)
        g = (e_gal, knn_gallery.labels.to(device))
    fit, fit_name = held_out, "validation"
    if fit is None and gallery is not None:
        fit = gallery.subset(_seeded_subset(len(gallery), THRESHOLD_FIT_MAX_ITEMS, seed + 5))
        fit_name = "train"
    h = None
    if "pairs" in metrics and fit is not None:
        e_fit = embed(model, fit.images, stats, device, batch_size, flip=flip, amp=amp)
        check_finite(e_fit, fit_name, source)
        h = (e_fit, fit.labels.to(device))
    return evaluate_embeddings(
        e_test,
        test.labels.to(device),
        gallery=g,
        held_out=h,
        held_out_name=fit_name,
        distance=distance,
        k=k,
        metrics=metrics,
        seed=seed,
        progress=progress,
        what=what,
    )


# ------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class LoadedRun:
    """A trained model with what it was trained on.

    Attributes:
        model: the network in eval mode on ``device``, the checkpoint's weights loaded.
        config: the run's saved (resolved) config.
        checkpoint: the ``.pt`` file the weights came from.
        run_dir: the run folder (holding ``config.json``, ``checkpoints/``), or ``None`` for a
            checkpoint outside one.
        epoch: epochs trained when the checkpoint was written.
        history: per-epoch training records up to then.
        image_shape: ``(C, H, W)`` of the images it was trained on.
        num_classes: outputs of the softmax head, ``None`` without one.
        device: where the model is.
    """

    model: EmbeddingModel
    config: TrainConfig
    checkpoint: Path
    run_dir: Path | None
    epoch: int
    history: list[dict[str, Any]]
    image_shape: tuple[int, int, int]
    num_classes: int | None
    device: torch.device


def _trained_image_size(config: TrainConfig) -> int:
    """Side of the images a run trained on: ``load_dataset`` resizes to ``image_size``,
    except ``digits``, which stays 8x8."""
    return 8 if config.dataset.strip() == "digits" else config.image_size


def _find_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """``(checkpoint, run folder or None)`` for a run folder or a ``.pt`` file."""
    if path.is_file():
        folder = path.parent.parent
        in_run = path.parent.name == "checkpoints" and (folder / "config.json").is_file()
        return path, folder if in_run else None
    if not path.is_dir():
        raise TrainingError(
            f"{path} is neither a run folder nor a checkpoint file; pass the --out folder "
            "of a `tripletlab train` run or a .pt checkpoint"
        )
    best = path / "checkpoints" / "best.pt"
    if best.is_file():
        return best, path
    if (path / "checkpoints" / "last.pt").is_file():
        raise TrainingError(
            f"run folder {path} has no checkpoints/best.pt yet (the run stopped in its first "
            f"epoch); finish it with `tripletlab train --resume {path}` or pass "
            f"{path / 'checkpoints' / 'last.pt'}"
        )
    runs = sorted(p.parent.parent for p in path.glob("*/checkpoints/best.pt"))
    hint = (
        f"; it holds runs, e.g. {runs[-1]}"
        if runs
        else "; train one with `tripletlab train --out FOLDER` and pass FOLDER"
    )
    raise TrainingError(
        f"run folder {path} holds no checkpoint (looked for {best}){hint}, or pass a .pt checkpoint"
    )


def load_run(path: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load the model of a run folder (its ``checkpoints/best.pt``) or of a checkpoint file.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs) by
    :func:`tripletlab.training.load_checkpoint`; the network is rebuilt from the config
    saved in it (its input channels and head size from the weights).

    Raises:
        tripletlab.training.TrainingError: no such folder or file, a folder without a
            checkpoint (the message says where to look), an unreadable checkpoint, weights
            that do not fit the config.
        ValueError: an unusable device or config.
    """
    ckpt_path, run_dir = _find_checkpoint(Path(path))
    ckpt = load_checkpoint(ckpt_path)
    config = config_from_dict(dict(ckpt["config"])).resolved()
    state: dict[str, Tensor] = ckpt["model"]
    convs = [t for t in state.values() if t.dim() == 4]  # the first is the input convolution
    if not convs:
        raise TrainingError(f"{ckpt_path} holds no convolution weights; not a tripletlab model")
    head = state.get("classifier.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    size = _trained_image_size(config)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = build_model(
        config.model,
        in_channels=int(convs[0].shape[1]),
        image_size=size,
        embedding_dim=config.embedding_dim,
        width=config.width,
        normalize=config.normalize_embeddings,
        num_classes=num_classes,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise TrainingError(
            f"the weights in {ckpt_path} do not fit a {config.model!r} model built from its "
            f"config ({first})"
        ) from None
    model = model.to(dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.eval()
    return LoadedRun(
        model=model,
        config=config,
        checkpoint=ckpt_path,
        run_dir=run_dir,
        epoch=int(ckpt["epoch"]),
        history=list(ckpt["history"]),
        image_shape=(int(convs[0].shape[1]), size, size),
        num_classes=num_classes,
        device=dev,
    )


def _has_class_split(config: TrainConfig) -> bool:
    return bool(config.train_classes or config.test_classes or config.unseen_classes)


def run_data(
    run: LoadedRun, *, dataset: str | None = None, data_dir: str | None = None
) -> tuple[TrainConfig, Splits, ImageSet | None]:
    """The run's data protocol applied to ``dataset`` (default: the run's own).

    The run's class split, validation hold-out, image size (that of the images it trained
    on) and seed are applied to ``dataset`` exactly as
    :func:`tripletlab.training.prepare_data` did at training time, so the run's own dataset
    gives back its training, validation and test sets and its
    normalisation. Another dataset is normalised with its own training statistics (for the
    same data in another place, e.g. ``imagefolder:NEWPATH``, that is the same thing).

    Returns:
        ``(config, splits, validation)``: the config with ``dataset`` and ``data_dir``
        replaced, the splits (training without the validation items), the validation set.

    Raises:
        tripletlab.data.DataError: unloadable data; images of another shape than the run
            trained on; a softmax head with another class count; class ids of the run's
            class split that the dataset lacks.
    """
    config = replace(
        run.config,
        dataset=dataset if dataset is not None else run.config.dataset,
        data_dir=data_dir if data_dir is not None else run.config.data_dir,
        image_size=run.image_shape[1],  # image folders (and IDX files) resized to the model's
    )
    splits, val = prepare_data(config)
    shape = tuple(splits.train.images.shape[1:])
    if shape != run.image_shape:
        c, h, w = shape
        rc, rh, rw = run.image_shape
        raise DataError(
            f"{config.dataset} has {c}-channel {h}x{w} images but {run.checkpoint} was trained "
            f"on {rc}-channel {rh}x{rw} images ({run.config.dataset}); evaluate on data of "
            "that shape"
        )
    if run.num_classes is not None:
        need = int(splits.train.labels.max()) + 1 if len(splits.train) else 0
        if need != run.num_classes:
            raise DataError(
                f"the softmax head of {run.checkpoint} has {run.num_classes} classes but "
                f"{config.dataset} has {need} training classes; evaluate on a dataset with the "
                "run's classes"
            )
    return config, splits, val


@dataclass(frozen=True)
class EvalGroup:
    """One set of test images to score and the training set it may use as k-NN gallery."""

    test: ImageSet
    gallery: ImageSet | None


def eval_groups(
    config: TrainConfig, splits: Splits, split: str | None
) -> tuple[str, dict[str, EvalGroup]]:
    """The sets to score for ``split`` (see the module): ``(resolved split, {name: group})``.

    ``None`` is ``"unseen"`` for a run trained on a class subset, else ``"test"``. ``"test"``
    is one group, the run's test split (the held-out classes of a class split), scored as at
    the end of training. ``"unseen"`` gives ``"seen"`` and ``"unseen"`` groups, ``"seen"``
    the first alone (all test images when the run trained on every class).

    Raises:
        ValueError: an unknown split; ``"unseen"`` for a run trained on every class.
    """
    if split is not None:
        _check_choices("split", [split], SPLITS)
    resolved = split or ("unseen" if _has_class_split(config) else "test")
    if resolved == "test":
        return resolved, {"test": EvalGroup(splits.test, splits.train)}
    if resolved == "unseen" and not _has_class_split(config):
        raise ValueError(
            f"the run trained on every class of {config.dataset}, so no class is unseen; use "
            "--split test, or train with --unseen-classes N (or --train-classes)"
        )
    groups: dict[str, EvalGroup] = {}
    if _has_class_split(config):
        # class_split dropped the test images of the training classes: load them again.
        raw = load_dataset(
            config.dataset,
            data_dir=Path(config.data_dir) if config.data_dir else None,
            image_size=config.image_size,
            strict=config.strict,
            seed=config.seed,
        )
        seen = torch.isin(raw.test.labels, torch.unique(splits.train.labels))
        groups["seen"] = EvalGroup(raw.test.subset(seen), splits.train)
    else:
        groups["seen"] = EvalGroup(splits.test, splits.train)
    if resolved == "unseen":
        groups["unseen"] = EvalGroup(splits.test, None)
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
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score a loaded run on ``dataset`` (default: its own) and ``split`` (see the module).

    Returns:
        ``{"checkpoint", "epoch", "dataset", "split", **metrics}`` for ``split="test"``, or
        the metrics of each group under its name (``{"seen": {...}, "unseen": {...}}``).

    Raises:
        ValueError, tripletlab.data.DataError: bad split, metric group or ``k``; unusable
            data (see :func:`run_data`); NaN embeddings.
    """
    _check_choices("metric group", metrics, METRIC_GROUPS)
    if split is not None:
        _check_choices("split", [split], SPLITS)
    config, splits, val = run_data(run, dataset=dataset, data_dir=data_dir)
    resolved, groups = eval_groups(config, splits, split)
    flip, amp = embedding_mode(config, run.device)
    out: dict[str, Any] = {
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
        "dataset": config.dataset,
        "split": resolved,
    }
    for name, group in groups.items():
        scores = evaluate_images(
            run.model,
            group.test,
            (splits.mean, splits.std),
            run.device,
            gallery=group.gallery,
            held_out=val,
            distance=config.distance,  # type: ignore[arg-type]
            k=k,
            metrics=metrics,
            batch_size=batch_size or config.eval_batch_size,
            seed=config.seed,
            progress=progress,
            what=name,
            source=f"the checkpoint {run.checkpoint}",
            flip=flip,
            amp=amp,
        )
        if resolved == "test":
            out.update(scores)
        else:
            out[name] = scores
    return out


def to_json(metrics: dict[str, Any]) -> str:
    """Metrics as indented JSON, NaN and Inf written as ``null``."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(metrics), indent=2) + "\n"


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

    def check(self) -> None:
        """Raise a one-line ``ValueError`` for a bad setting, before anything is loaded."""
        if self.split is not None:
            _check_choices("split", [self.split], SPLITS)
        _check_choices("device", [self.device], DEVICES)
        _check_choices("metric group", self.metrics or [], METRIC_GROUPS)
        if isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"--k must be a positive number of neighbours, got {self.k}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def evaluation_path(run: LoadedRun, out: str | None) -> Path:
    """Where :func:`run_evaluate` writes (see :attr:`EvalConfig.out`).

    Raises:
        ValueError: ``out`` is the run's ``metrics.json`` (the training's record).
    """
    if out is not None:
        path = Path(out)
    elif run.run_dir is not None:
        stem = "" if run.checkpoint.name == "best.pt" else f"-{run.checkpoint.stem}"
        path = run.run_dir / f"evaluation{stem}.json"
    else:
        path = run.checkpoint.with_name(f"{run.checkpoint.stem}.{EVALUATION_NAME}")
    protected = run.run_dir / "metrics.json" if run.run_dir is not None else None
    if protected is not None and path.resolve() == protected.resolve():
        raise ValueError(
            f"--out {out} is the training's metrics.json of {run.run_dir}; write the "
            "evaluation to another file"
        )
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
        progress=progress,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_json(metrics))
    except OSError as err:
        raise ValueError(f"cannot write {path} ({err.strerror}); choose another --out") from None
    return EvalResult(metrics, path)


def _projections() -> tuple[str, ...]:
    # tripletlab.plots imports matplotlib (0.6 s): only when pictures are drawn, not in fit.
    from tripletlab.plots import PROJECTIONS

    return PROJECTIONS


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
        _check_choices("projection", self.projections or [], _projections())
        _check_choices("device", [self.device], DEVICES)
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
    ``pair_threshold`` of ``metrics.json`` when the pictures are of the run's own dataset.

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
    methods = tuple(projections) if projections else default_projections(dim, quick=quick)
    _check_choices("projection", methods, _projections())
    if "direct" in methods and dim != 2:
        raise ValueError(f"a direct plot needs a 2-D embedding, got D={dim}; drop 'direct'")
    from tripletlab.plots import write_pictures
    from tripletlab.report import write_report

    config, splits, _ = run_data(run, dataset=dataset, data_dir=data_dir)
    stats, bs = (splits.mean, splits.std), batch_size or config.eval_batch_size
    train = splits.train.subset(_seeded_subset(len(splits.train), train_items, config.seed))
    source = f"the checkpoint {run.checkpoint}"
    flip, amp = embedding_mode(config, run.device)
    e_train = embed_set(
        run.model,
        train.images,
        stats,
        run.device,
        batch_size=bs,
        progress=progress,
        what="train",
        flip=flip,
        amp=amp,
    )
    check_finite(e_train, "train", source)
    e_test = embed_set(
        run.model,
        splits.test.images,
        stats,
        run.device,
        batch_size=bs,
        progress=progress,
        flip=flip,
        amp=amp,
    )
    check_finite(e_test, "test", source)
    history = run.history
    last = run.run_dir / "checkpoints" / "last.pt"
    if last.is_file() and last != run.checkpoint:
        history = list(load_checkpoint(last)["history"])
    threshold = None
    metrics_file = run.run_dir / "metrics.json"
    if config.dataset == run.config.dataset and metrics_file.is_file():
        try:
            threshold = json.loads(metrics_file.read_text()).get("pair_threshold")
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
        distance=config.distance,  # type: ignore[arg-type]
        projections=methods,  # type: ignore[arg-type]
        seed=config.seed,
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
