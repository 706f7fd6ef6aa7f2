"""Open-set evaluation of a trained run: do calibrated thresholds reject classes never seen?

For a run trained with held-out classes (``tripletlab train --unseen-classes N``):

- index: the run's training images (the known classes, without the validation hold-out);
- calibration: the validation hold-out (known classes, never indexed) searched against the
  index; thresholds at max F1 and at each target precision (:mod:`tripletlab.calibration`);
- queries: the test images of the known classes and of the unseen classes.

At each stored threshold, and with none (closed set: every query gets its nearest label),
prints the fraction of unseen-class queries rejected, of known-class queries accepted and
accepted with the right label, and the open-set accuracy (right label or rightly rejected),
as markdown; writes the precision/recall/F1 plot of the calibration.

Usage:
    python benchmarks/open_set.py RUN_DIR --plot /tmp/open_set.png --out /tmp/open_set.md
    python benchmarks/open_set.py RUN_DIR --backend faiss --faiss-index hnsw
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from machine import describe_machine
from sections import write_section

from tripletlab.calibration import DEFAULT_PRECISIONS, format_calibration, format_open_set
from tripletlab.embedding import embed as embed_images
from tripletlab.evaluation import eval_groups, load_run, run_data
from tripletlab.plots import plot_calibration
from tripletlab.search import EmbeddingIndex, IndexConfig


def evaluate(args: argparse.Namespace, command: str) -> str:
    """Embed, index, calibrate, score; the markdown report."""
    run = load_run(Path(args.run), args.device)
    config, splits, val = run_data(run, data_dir=args.data_dir)
    if val is None or len(val) == 0:
        raise ValueError(
            f"{args.run} has no validation hold-out to calibrate on; train with --val-size > 0"
        )
    _, groups = eval_groups(config, splits, "unseen")  # ValueError when no class is unseen
    seen, unseen = groups["seen"].test, groups["unseen"].test
    mode = run.embed_mode(args.batch_size)
    stats = (splits.mean, splits.std)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return embed_images(run.model, images, stats, run.device, mode).cpu()

    t0 = time.perf_counter()
    e_train, e_val = embed(splits.train.images[:]), embed(val.images[:])
    e_queries = torch.cat([embed(seen.images[:]), embed(unseen.images[:])])
    q_labels = torch.cat([seen.labels, unseen.labels])
    t_embed = time.perf_counter() - t0

    options = IndexConfig(
        distance=config.objective.distance, backend=args.backend, faiss_index=args.faiss_index
    )
    index = EmbeddingIndex(e_train.shape[1], options, classes=splits.train.classes)
    index.add(e_train, splits.train.labels, [f"train/{i}" for i in range(len(e_train))])
    t0 = time.perf_counter()
    calibrated_on = f"{len(val):,} validation images of those classes (never indexed)"
    if bool(torch.isin(val.labels, splits.train.labels).all()):  # same-class validation
        cal = index.calibrate(e_val, val.labels, precisions=tuple(args.precision))
    else:  # class-disjoint validation classes are not indexed: leave-one-out on the index
        calibrated_on = "the indexed images, each against the others (leave-one-out)"
        ids = list(index.ids)
        cal = index.calibrate(
            e_train, splits.train.labels, ids=ids, precisions=tuple(args.precision)
        )
    rows = index.open_set(e_queries, q_labels)
    t_search = time.perf_counter() - t0
    if args.plot:
        plot_calibration(cal, Path(args.plot), distance=config.objective.distance)

    known = sorted(int(c) for c in torch.unique(splits.train.labels))
    unknown = sorted(int(c) for c in torch.unique(unseen.labels))
    lines = [
        "## Open-set evaluation",
        "",
        f"- Command: `{command}`",
        f"- Machine: {describe_machine()}; {dt.date.today().isoformat()}; "
        f"torch {torch.__version__}",
        f"- Run: `{args.run}` ({config.data.dataset}, checkpoint of epoch {run.epoch}, "
        f"{config.objective.distance} distance); index: {index.config.describe()}",
        f"- Index: {len(index):,} training images of the known classes {known}; calibration: "
        f"{calibrated_on}; queries: "
        f"{len(seen):,} test images of the known classes and {len(unseen):,} of the unseen "
        f"classes {unknown}",
        f"- Time: embedding {t_embed:.1f} s, calibration and queries {t_search:.1f} s",
        "",
        "Calibration (precision among accepted calibration queries, recall over all of them):",
        "",
        format_calibration(cal),
        "",
        "Queries (known accepted and right: the known-class queries accepted with their own "
        "label; open-set accuracy: right label or rightly rejected, over all queries):",
        "",
        format_open_set(rows),
    ]
    if args.plot:
        lines += ["", f"Plot: `{args.plot}`"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR", help="a run trained with --unseen-classes")
    parser.add_argument("--data-dir", help="folder holding the data set (default: the run's)")
    parser.add_argument("--backend", default="exact", help="exact or faiss")
    parser.add_argument("--faiss-index", default="flat", help="flat, hnsw or ivf")
    parser.add_argument("--precision", type=float, nargs="+", default=list(DEFAULT_PRECISIONS))
    parser.add_argument("--plot", help="PNG of precision, recall and F1 vs threshold")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int)
    args = parser.parse_args(argv)
    command = "python benchmarks/open_set.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = evaluate(args, command)
    print(report, end="")
    if args.out:
        write_section(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
