"""Every objective on one footing: same network, data, epochs; seen and unseen classes apart.

Trains, one after the other on this machine, the softmax baseline, offline siamese, offline
triplet, online contrastive (hard-negative pairs) and triplet with batch-all, batch-hard,
semi-hard and random-hard mining, each with the defaults of ``tripletlab train`` except the
objective and mining, on a class-disjoint split (``--unseen-classes``: the last N classes
never appear in training). Each run is then scored by ``tripletlab.evaluation.evaluate_run``
on the seen classes (test images of the training classes) and on the unseen ones, as
Musgrave et al. (ECCV 2020) recommend: precision@1, R-precision, MAP@R within each group,
and torchvision's pair accuracy. Every run gets the same number of epochs, so the same
number of training images; the wall time of each is reported with it::

    python benchmarks/compare_objectives.py --epochs 3 --out /tmp/compare.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine

#: (label, TrainConfig overrides)
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("softmax (classification)", {"objective": "softmax"}),
    ("siamese, offline random pairs", {"objective": "siamese"}),
    ("triplet, offline random triplets", {"objective": "triplet-offline"}),
    ("contrastive, hard-negative pairs", {"objective": "contrastive"}),
    ("triplet, batch-all", {"objective": "triplet", "mining": "batch_all"}),
    ("triplet, batch-hard", {"objective": "triplet", "mining": "batch_hard"}),
    ("triplet, semi-hard", {"objective": "triplet", "mining": "semi_hard"}),
    ("triplet, random-hard", {"objective": "triplet", "mining": "random_hard"}),
]
COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "pair_accuracy")


def run_one(
    label: str, overrides: dict[str, Any], base: dict[str, Any], root: Path
) -> dict[str, Any]:
    """Train one objective and score it on the seen and the unseen classes."""
    from tripletlab.evaluation import evaluate_run, load_run
    from tripletlab.training import TrainConfig, fit

    run_dir = Path(tempfile.mkdtemp(prefix="compare-", dir=root))
    t0 = time.perf_counter()
    result = fit(TrainConfig(**{**base, **overrides}), run_dir)
    wall = time.perf_counter() - t0
    scores = evaluate_run(load_run(run_dir), split="unseen", metrics=("retrieval", "pairs"))
    return {
        "label": label,
        "overrides": overrides,
        "wall_seconds": wall,
        "train_seconds": result.metrics["train_seconds"],
        **{f"{g}_{c}": scores[g][c] for g in ("seen", "unseen") for c in COLUMNS},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--unseen-classes", type=int, default=5)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="labels to run (default: all)")
    p.add_argument("--out", type=Path, required=True, help="markdown section to write")
    args = p.parse_args(argv)

    base: dict[str, Any] = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "unseen_classes": args.unseen_classes,
        "seed": args.seed,
    }
    if args.data_dir:
        base["data_dir"] = args.data_dir
    root = Path(tempfile.mkdtemp(prefix="tripletlab-compare-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for label, overrides in RUNS:
        if args.only and label not in args.only:
            continue
        row = run_one(label, overrides, base, root)
        rows.append(row)
        print(json.dumps(row), flush=True)

    head = [
        f"## Objectives compared on {args.dataset}, last {args.unseen_classes} classes unseen",
        "",
        f"- Command: `python benchmarks/{Path(__file__).name} "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- Machine: {describe_machine()}",
        f"- Date: {started}",
        f"- Each run: `tripletlab train` defaults (network `small`, 64-d, P x K batches or the "
        f"same batch size, Adam, cosine schedule) with the objective below, {args.epochs} "
        "epochs, seed "
        f"{args.seed}; scored with `tripletlab evaluate --split unseen`: seen = test images of "
        "the training classes, unseen = test images of the held-out classes, each group "
        "searched within itself. Pair accuracy: torchvision's best threshold on the group's "
        "own pairs.",
        "",
        "| objective | seen P@1 | seen R-prec | seen MAP@R | seen pair acc | unseen P@1 "
        "| unseen R-prec | unseen MAP@R | unseen pair acc | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    body = [
        f"| {r['label']} | "
        + " | ".join(f"{r[f'{g}_{c}']:.4f}" for g in ("seen", "unseen") for c in COLUMNS)
        + f" | {r['wall_seconds']:.0f} |"
        for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + body) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
