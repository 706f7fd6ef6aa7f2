"""Scores of one test set: :func:`evaluate_embeddings` (every metric of
:mod:`tripletlab.metrics` on (N, D) embeddings, as one flat dict: the keys of
``metrics.json``; pure, no I/O) and :func:`evaluate_images` (embed an
:class:`~tripletlab.data.ImageSet`, its k-NN gallery and the held-out set of the pair
threshold with a model, then the above; the end of :func:`tripletlab.training.fit` calls it,
so training and ``tripletlab evaluate`` share one implementation). It sits below
:mod:`tripletlab.training` and above :mod:`tripletlab.embedding`.

The metrics (Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020, for the
retrieval ones), by group (``metrics=`` selects groups):

- ``retrieval``: ``precision_at_1``, ``r_precision``, ``map_at_r``, ``recall_at_{1,2,4,8}``,
  each test item against the rest of the test set (self-match excluded; queries whose class
  has no other member are excluded and counted in ``num_excluded_queries``;
  ``retrieval_gallery`` says ``"leave-one-out"``), or, for a dataset with a query/gallery
  split (In-Shop: :attr:`tripletlab.data.Splits.gallery`), each query (the test set) against
  the gallery alone (``"gallery"``; no query is in the gallery, none is excluded for itself;
  queries whose class has no gallery item are excluded and counted; ``num_gallery`` the
  gallery items).
- ``knn``: ``knn_accuracy``, the k-NN accuracy of the test items against the training set
  (``knn_gallery`` says ``"train"``; test items of classes without training items, as where
  validation took a small class's every image, are left out and counted in
  ``knn_excluded_queries``), or leave-one-out within the test set when none of its classes
  is in the training set (class-disjoint splits; ``"leave-one-out"``), or against the
  gallery of a query/gallery split (``"gallery"``), the same words at the end of training
  and in ``tripletlab evaluate``. The pair, verification and clustering groups score the test
  set (the queries of a query/gallery split) by itself.
- ``pairs``: torchvision's best-threshold ``pair_accuracy`` (with ``pair_threshold`` and the
  "always different" ``pair_floor``), tuned on the test pairs it scores; and the honest
  ``held_out_pair_accuracy``: the threshold is fitted on the validation pairs (or on a seeded
  subsample of the training set when the run kept no validation set) and then applied to the
  test pairs.
- ``verification``: ``roc_auc`` and ``tar_at_far_1e-3``, ``tar_at_far_1e-2`` over the test
  pairs.
- ``clustering``: ``nmi`` and ``ami`` of k-means with as many clusters as classes.

A score that cannot be computed is ``None`` (JSON ``null``, "-" in printed tables), never a
0 or 1 that reads like a result, and ``notes`` (a list of one-line strings) says why: the
retrieval scores and leave-one-out k-NN when no test item has another item of its class
(every class has one test image), the pair accuracies and verification scores when the test
pairs hold no positive (or no negative) pair, NMI/AMI when every class is one item (or there
is one class), where clustering is trivially perfect. :func:`to_json` writes the metrics
(NaN and Inf as ``null``): the one writer of ``metrics.json`` and ``evaluation.json``.

Costs, N test items: retrieval, k-NN and the two pair accuracies are chunked O(N^2 D)
passes (k-NN O(N M D) with M training items); verification and clustering run on at most
:data:`VERIFICATION_MAX_ITEMS` and :data:`CLUSTERING_MAX_ITEMS` test items, a seeded
subsample beyond (``verification_items`` and ``clustering_items`` say how many). At
Fashion-MNIST's size (N = 10,000, M = 50,000, D = 64) on one busy CPU core: retrieval 2.5 s,
k-NN 4 s, pairs 10 s (5 s of them for the held-out accuracy), verification 3 s, clustering
1.4 s. ``metrics=`` leaves groups out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from tripletlab.checks import check_choice
from tripletlab.data import ImageSet
from tripletlab.distances import Distance, check_distance
from tripletlab.embedding import EmbedMode, Progress, Stats, check_finite, embed
from tripletlab.metrics import (
    clustering_scores,
    held_out_pair_accuracy,
    nearest_neighbors,
    pair_accuracy,
    retrieval_metrics,
    verification_scores,
)
from tripletlab.models import EmbeddingModel

MetricGroup = Literal["retrieval", "knn", "pairs", "verification", "clustering"]
METRIC_GROUPS: tuple[str, ...] = get_args(MetricGroup)

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

#: Baselines (:func:`baseline_scores`): at most this many test items, fewer where
#: N^2 D would pass :data:`BASELINE_BUDGET` (raw pixels of large images).
BASELINE_MAX_ITEMS = 10_000
BASELINE_BUDGET = 10**11
#: The scores each baseline reports.
BASELINE_KEYS = ("precision_at_1", "map_at_r")

Metrics = dict[str, float | int | str | list[str] | None]

#: The scores each group leaves ``None`` when they cannot be computed (see the module).
_RETRIEVAL_KEYS = ("precision_at_1", "r_precision", "map_at_r")


def _finite(value: float) -> float | None:
    """``None`` for NaN and Inf (JSON has no such numbers), else the value."""
    return value if math.isfinite(value) else None


def to_json(metrics: dict[str, Any]) -> str:
    """Metrics as indented JSON, NaN and Inf written as ``null`` (at any depth).

    Example:
        >>> to_json({"a": float("nan"), "b": {"c": [1.0, float("inf")]}}).split()
        ['{', '"a":', 'null,', '"b":', '{', '"c":', '[', '1.0,', 'null', ']', '}', '}']
    """

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(metrics), indent=2) + "\n"


def _class_sizes(y: Tensor) -> Tensor:
    """(C,) items per class present in ``y``."""
    counts: Tensor = torch.unique(y, return_counts=True)[1]
    return counts


def _far_key(far: float) -> str:
    """``1e-3`` -> ``"tar_at_far_1e-3"``."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"tar_at_far_{mantissa}e{int(exponent)}"


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
    query_gallery: tuple[Tensor, Tensor] | None = None,
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
            set); ``None`` for leave-one-out k-NN within the test set. Test items of classes
            the gallery lacks are left out of the k-NN accuracy and counted in
            ``knn_excluded_queries`` (None with none left).
        query_gallery: ``(embeddings (G, D), labels (G,))`` of the gallery of a query/gallery
            split: the test items are its queries, for retrieval and k-NN (``gallery`` is
            then not used for k-NN). ``None``: no such split.
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
        A flat dict: floats in [0, 1] (``None`` where undefined, see the module, with the
        reason in ``notes``), counts and a few strings; always ``num_test`` (the queries of a
        query/gallery split), and ``num_gallery`` with ``query_gallery``.

    Raises:
        ValueError: an unknown group, ``k`` larger than the gallery, NaN or Inf embeddings.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
        >>> m = evaluate_embeddings(x, torch.tensor([0, 0, 1, 1]), metrics=["retrieval"])
        >>> m["precision_at_1"], m["map_at_r"], m["recall_at_2"], m["num_test"]
        (1.0, 1.0, 1.0, 4)

        The first two (class 0) as queries against a gallery of the last two, classes 1 and 0:
        both queries find [1.0, 1.0] (class 1) before [1.1, 1.0] (class 0).

        >>> m = evaluate_embeddings(x[:2], torch.tensor([0, 0]), metrics=["retrieval", "knn"],
        ...                         query_gallery=(x[2:], torch.tensor([1, 0])))
        >>> m["precision_at_1"], m["recall_at_2"], m["knn_gallery"], m["num_gallery"]
        (0.0, 1.0, 'gallery', 2)
    """
    for group in metrics:
        check_choice("metric group", group, METRIC_GROUPS)
    check_distance(distance)
    x, y = embeddings.detach(), labels.to(embeddings.device)
    n = x.shape[0]
    check_finite(x, what)
    qg = None
    if query_gallery is not None:
        qg = (query_gallery[0].detach().to(x.device), query_gallery[1].to(x.device))
        check_finite(qg[0], f"{what} gallery")
    if "knn" in metrics:
        if qg is not None:
            _check_k(k, qg[0].shape[0], f"the {what} gallery")
        elif gallery is not None:
            _check_k(k, gallery[0].shape[0], "the training set")
        else:
            _check_k(k, n - 1, f"the rest of the {what} set")
    out: Metrics = {}
    notes: list[str] = []
    sizes = _class_sizes(y)  # (C,)
    positives, negatives = int((sizes * (sizes - 1) // 2).sum()), int(sizes.numel() > 1)
    both_kinds = positives > 0 and negatives > 0
    pair_problem = (
        "the test pairs hold no positive pair (every class has a single test image)"
        if positives == 0
        else "the test pairs hold no negative pair (one class)"
    )

    def retrieval() -> None:
        limit = n - 1 if qg is None else qg[0].shape[0]
        ks = [r for r in RECALL_KS if r <= limit]
        if qg is None:
            r = retrieval_metrics(x, y, recall_ks=ks, distance=distance)
        else:
            r = retrieval_metrics(x, y, qg[0], qg[1], recall_ks=ks, distance=distance)
        out.update(precision_at_1=r.precision_at_1, r_precision=r.r_precision)
        out["map_at_r"] = r.map_at_r
        out.update({f"recall_at_{kk}": v for kk, v in r.recall_at_k.items()})
        out["num_excluded_queries"] = r.num_excluded
        out["retrieval_gallery"] = "leave-one-out" if qg is None else "gallery"
        if r.num_queries == 0:
            out.update({key: None for key in (*_RETRIEVAL_KEYS, *(f"recall_at_{kk}" for kk in ks))})
            notes.append(
                f"{what}: no retrieval score: no test item has another item of its class to "
                "find (every class has a single test image)"
                if qg is None
                else f"{what}: no retrieval score: no query has an item of its class in the gallery"
            )

    def knn() -> None:
        g = None if gallery is None else (gallery[0].to(x.device), gallery[1].to(x.device))
        g = qg if qg is not None else g
        qx, qy = x, y
        if qg is None and g is not None:  # the training set: the queries of its classes
            known = torch.isin(y, g[1])  # (N,)
            scored = int(known.sum())
            if scored < n:
                qx, qy = x[known], y[known]
                out["knn_excluded_queries"] = n - scored
                notes.append(
                    f"{what}: k-NN accuracy of the {scored:,} test images whose class has "
                    f"training images ({n - scored:,} without left out)"
                    if scored
                    else f"{what}: no k-NN accuracy: no test image's class has training images"
                )
        hits = _knn_hits(qx, qy, g, k, distance, progress, f"{k}-NN of the {what} set")
        out["knn_accuracy"] = hits / qx.shape[0] if qx.shape[0] else None
        if g is None and positives == 0:  # leave-one-out, no classmate anywhere
            out["knn_accuracy"] = None
            notes.append(
                f"{what}: no leave-one-out k-NN accuracy: every class has a single test image"
            )
        out["knn_gallery"] = (
            "gallery" if qg is not None else "train" if gallery is not None else "leave-one-out"
        )
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
        if not both_kinds:
            for key in (
                "pair_accuracy",
                "pair_threshold",
                "held_out_pair_accuracy",
                "held_out_pair_threshold",
            ):
                if key in out:
                    out[key] = None
            notes.append(f"{what}: no pair accuracy: {pair_problem}")

    def verification() -> None:
        pick = seeded_subset(n, VERIFICATION_MAX_ITEMS, seed).to(x.device)
        v = verification_scores(x[pick], y[pick], fars=FARS, distance=distance)
        out["roc_auc"] = _finite(v.roc_auc)
        out.update({_far_key(f): _finite(v.tar_at_far[f]) for f in FARS})
        out["verification_items"] = int(pick.numel())
        if out["roc_auc"] is None:
            notes.append(f"{what}: no ROC AUC or TAR@FAR: {pair_problem}")

    def clustering() -> None:
        pick = seeded_subset(n, CLUSTERING_MAX_ITEMS, seed).to(x.device)
        c = clustering_scores(x[pick], y[pick], seed=seed, distance=distance)
        out.update(nmi=c.nmi, ami=c.ami, clustering_items=int(pick.numel()))
        classes = int(torch.unique(y[pick]).numel())
        if classes < 2 or classes == pick.numel():
            out.update(nmi=None, ami=None)
            why = "one class" if classes < 2 else "every class is a single item"
            notes.append(f"{what}: no NMI/AMI: {why}, so any clustering scores perfectly")

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
    if qg is not None:
        out["num_gallery"] = int(qg[0].shape[0])
    if notes:
        out["notes"] = notes
    return out


def seeded_subset(n: int, cap: int, seed: int) -> Tensor:
    """Sorted (min(n, cap),) indices: all of ``range(n)``, or a seeded random subset."""
    if n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def _labels_overlap(test: ImageSet, gallery: ImageSet) -> bool:
    """Whether some class of ``test`` has items in ``gallery``."""
    return bool(torch.isin(torch.unique(test.labels), torch.unique(gallery.labels)).any())


def evaluate_images(
    model: EmbeddingModel,
    test: ImageSet,
    stats: Stats,
    device: torch.device,
    *,
    gallery: ImageSet | None = None,
    query_gallery: ImageSet | None = None,
    held_out: ImageSet | None = None,
    distance: Distance = "euclidean",
    k: int = 1,
    metrics: Sequence[str] = METRIC_GROUPS,
    mode: EmbedMode | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    what: str = "test",
    source: str = "the model",
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
        query_gallery: the gallery of a query/gallery split (``test`` its queries): retrieval
            and k-NN search it (see :func:`evaluate_embeddings`); ``None``: no such split.
            Queries that are also gallery items (a csv table's rows flagged both, found by
            path) are not left out of the gallery: a note says the scores are optimistic.
        held_out: the validation set: the held-out pair threshold is fitted on its pairs.
        distance, k, metrics, seed, progress, what: as :func:`evaluate_embeddings`.
        mode: how to embed (:class:`tripletlab.embedding.EmbedMode`: flip TTA, bfloat16,
            batch size), as the run was trained.
        source: names the model in the error for NaN embeddings (e.g. the checkpoint).

    Raises:
        ValueError: as :func:`evaluate_embeddings`; checked before the slow steps where
            possible (an unknown group, ``k`` too large).
    """
    for group in metrics:
        check_choice("metric group", group, METRIC_GROUPS)
    knn_gallery = gallery if gallery is not None and _labels_overlap(test, gallery) else None
    if query_gallery is not None:
        knn_gallery = None  # the query/gallery split's own gallery instead
    if "knn" in metrics:  # fail before embedding anything
        if query_gallery is not None:
            _check_k(k, len(query_gallery), f"the {what} gallery")
        elif knn_gallery is not None:
            _check_k(k, len(knn_gallery), "the training set")
        else:
            _check_k(k, len(test) - 1, f"the rest of the {what} set")
    e_test = embed(model, test.images, stats, device, mode, progress=progress, what=what)
    check_finite(e_test, what, source)
    qg = None
    if query_gallery is not None and ("retrieval" in metrics or "knn" in metrics):
        e_qg = embed(
            model, query_gallery.images, stats, device, mode, progress=progress, what="gallery"
        )
        check_finite(e_qg, f"{what} gallery", source)
        qg = (e_qg, query_gallery.labels.to(device))
    g = None
    if "knn" in metrics and knn_gallery is not None:
        e_gal = embed(
            model, knn_gallery.images, stats, device, mode, progress=progress, what="training set"
        )
        check_finite(e_gal, "training", source)
        g = (e_gal, knn_gallery.labels.to(device))
    fit, fit_name = held_out, "validation"
    if fit is None and gallery is not None:
        fit = gallery.subset(seeded_subset(len(gallery), THRESHOLD_FIT_MAX_ITEMS, seed + 5))
        fit_name = "train"
    h = None
    if "pairs" in metrics and fit is not None:
        e_fit = embed(model, fit.images, stats, device, mode)
        check_finite(e_fit, fit_name, source)
        h = (e_fit, fit.labels.to(device))
    out = evaluate_embeddings(
        e_test,
        test.labels.to(device),
        gallery=g,
        query_gallery=qg,
        held_out=h,
        held_out_name=fit_name,
        distance=distance,
        k=k,
        metrics=metrics,
        seed=seed,
        progress=progress,
        what=what,
    )
    shared = _shared_paths(test, query_gallery)
    if qg is not None and shared:
        found = out.get("notes")
        out["notes"] = [
            *(found if isinstance(found, list) else []),
            f"{what}: {shared} of the {len(test)} queries are also gallery images (the same "
            "path) and may find themselves: the retrieval and k-NN scores are optimistic",
        ]
    return out


def _shared_paths(test: ImageSet, gallery: ImageSet | None) -> int:
    """How many items of ``test`` are also in ``gallery`` by path (a csv table's rows that
    are both query and gallery); 0 without paths."""
    if gallery is None or test.paths is None or gallery.paths is None:
        return 0
    return len(set(test.paths) & set(gallery.paths))


def baseline_scores(
    test: ImageSet,
    untrained: EmbeddingModel,
    stats: Stats,
    device: torch.device,
    *,
    gallery: ImageSet | None = None,
    distance: Distance = "euclidean",
    mode: EmbedMode | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """What training must beat, under the protocol of :func:`evaluate_embeddings`'s
    retrieval group (each test item against the rest of ``test``, or, with ``gallery``, each
    test item a query against the gallery): ``raw_pixels`` (the pixels as a vector, values
    / 255, cosine distance) and ``untrained`` (``untrained``, the run's network at its
    initial weights, with the run's ``distance``), each with :data:`BASELINE_KEYS`
    (``None`` where undefined, the reason in ``notes``); ``items`` the test items scored (a
    seeded subsample beyond :data:`BASELINE_MAX_ITEMS`, fewer for large images, said in
    ``notes``) and, with ``gallery``, ``gallery_items`` the gallery items searched (capped
    alike, with another seed).
    """
    dims = int(test.images[0].numel()) if len(test) else 1
    cap = min(BASELINE_MAX_ITEMS, math.isqrt(BASELINE_BUDGET // max(dims, 1)))
    items = test.subset(seeded_subset(len(test), cap, seed + 11))
    searched = (
        None if gallery is None else gallery.subset(seeded_subset(len(gallery), cap, seed + 12))
    )

    def raw(s: ImageSet) -> Tensor:
        return s.images[:].to(device).flatten(1).float() / 255  # (N, C*H*W)

    def net(s: ImageSet) -> Tensor:
        return embed(untrained, s.images, stats, device, mode)  # (N, D)

    out: dict[str, Any] = {}
    notes: list[str] = []
    runs: tuple[tuple[str, Callable[[ImageSet], Tensor], Distance], ...] = (
        ("raw_pixels", raw, "cosine"),
        ("untrained", net, distance),
    )
    for name, features, dist in runs:
        qg = None if searched is None else (features(searched), searched.labels.to(device))
        m = evaluate_embeddings(
            features(items),
            items.labels.to(device),
            query_gallery=qg,
            distance=dist,
            metrics=["retrieval"],
            what=f"baseline {name}",
        )
        out[name] = {key: m.get(key) for key in BASELINE_KEYS}
        found = m.get("notes")
        if isinstance(found, list):
            notes.extend(found)
    out["items"] = len(items)
    if searched is not None:
        out["gallery_items"] = len(searched)
    if len(items) < len(test):
        notes.append(
            f"baselines on a seeded subsample of {len(items)} of the {len(test)} test items"
        )
    if gallery is not None and searched is not None and len(searched) < len(gallery):
        notes.append(
            f"baselines search a seeded subsample of {len(searched)} of the {len(gallery)} "
            "gallery items"
        )
    if notes:
        out["notes"] = notes
    return out
