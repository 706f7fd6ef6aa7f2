"""``tripletlab evaluate`` (a run or a checkpoint on any dataset and split, to JSON) and
``tripletlab plot`` (a run's pictures and ``report.html``), over
:mod:`tripletlab.evaluation`."""

from __future__ import annotations

import argparse

from tripletlab.cli.common import DATASET_HELP, format_metrics
from tripletlab.cli.progress import _with_bars
from tripletlab.evaluation import (
    METRIC_GROUPS,
    SPLITS,
    EvalConfig,
    PlotConfig,
    run_evaluate,
    run_plot,
)
from tripletlab.plots import PROJECTIONS


def _add_evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained run or checkpoint on a dataset and split",
        description="Load a run's best checkpoint (or the given .pt file, read with "
        "weights_only=True) and its saved config, score it and write the metrics as JSON "
        "(default RUN/evaluation.json; the training's metrics.json is left alone). Metrics: "
        "precision@1, R-precision, MAP@R, Recall@1/2/4/8, k-NN accuracy, pair accuracy "
        "(threshold tuned on the test pairs, and fitted on validation pairs), ROC AUC, "
        "TAR@FAR 1e-3/1e-2, NMI/AMI, and the baselines of metrics.json (raw pixels and the "
        "untrained network, under the same protocol). A run trained on a class subset is "
        "reported for seen and unseen classes separately; a dataset with a query/gallery split "
        "(inshop:PATH) scores each query against the gallery.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (uses checkpoints/best.pt) or a .pt")
    p.add_argument(
        "--dataset",
        help=f"{DATASET_HELP} (default: the run's); the run's class split and image size apply",
    )
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument(
        "--split",
        help=f"{', '.join(SPLITS)}: test = the run's test split; seen = its images of the "
        "training classes (k-NN against the training set); unseen = seen plus, scored apart, "
        "the images of classes never trained on (default: unseen for a run trained on a "
        "class subset, else test)",
    )
    p.add_argument("--out", metavar="FILE", help="JSON file to write (default RUN/evaluation.json)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--k", type=int, default=1, help="neighbours of the k-NN vote (default 1)")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="GROUP",
        help=f"compute only these groups: {', '.join(METRIC_GROUPS)} (default all)",
    )
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="leave out the raw-pixel and untrained-network baselines (they cost one more "
        "embedding of the test set and two retrieval passes)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_plot_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot",
        help="write a run's pictures and report.html",
        description="Embed the test set and a seeded subsample of the training set with the "
        "run's best checkpoint; write the pictures (2-D embeddings, nearest neighbours, pair "
        "distances, learning curves, a TensorBoard projector export) into RUN_DIR/pictures "
        "and RUN_DIR/report.html.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the run folder (tripletlab train --out)")
    p.add_argument(
        "--projections",
        nargs="+",
        metavar="METHOD",
        help=f"2-D projections of the embedding plots: {', '.join(PROJECTIONS)} (default: "
        "direct for a 2-D embedding, else pca and tsne, and umap when umap-learn is installed)",
    )
    p.add_argument("--dataset", help="draw another dataset (default: the run's)")
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--train-items",
        type=int,
        default=PlotConfig.train_items,
        help=f"training images embedded and drawn (default {PlotConfig.train_items})",
    )
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_evaluate(ns: argparse.Namespace) -> int:
    config = EvalConfig(
        run=ns.run,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        split=ns.split,
        out=ns.out,
        device=ns.device,
        k=ns.k,
        metrics=ns.metrics,
        batch_size=ns.batch_size,
        baselines=ns.baselines,
    )
    result = _with_bars(ns, lambda p: run_evaluate(config, p))
    print(format_metrics(result.metrics))
    print(f"wrote {result.path}")
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    config = PlotConfig(
        run=ns.run,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        projections=ns.projections,
        device=ns.device,
        train_items=ns.train_items,
        batch_size=ns.batch_size,
    )
    result = _with_bars(ns, lambda p: run_plot(config, p))
    for path in result.pictures.values():
        print(path)
    print(f"report: {result.report}")
    return 0
