"""Sweep training configurations around the defaults and tabulate the test metrics.

How the defaults of ``tripletlab train`` were chosen: every configuration trains for a fixed
number of epochs (the number that fits the wall-clock budget on the 2-core CPU for that
model), so the sweep itself can run anywhere, a GPU included, several runs at a time::

    python benchmarks/sweep_defaults.py --grid defaults --device cuda --workers 6 \\
        --out docs/sweeps/defaults.md

Each row is one ``tripletlab.training.fit`` run with the listed overrides of the defaults;
the metrics are those of ``metrics.json`` (test split, best checkpoint by validation 1-NN).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine
from sections import write_section

Overrides = dict[str, Any]

#: name -> [(label, overrides of TrainConfig by flat key)]. Epochs default to the config's own.
GRIDS: dict[str, list[tuple[str, Overrides]]] = {
    "defaults": [
        ("defaults", {}),
        ("lr 3e-3", {"lr": 3e-3}),
        ("lr 5e-3", {"lr": 5e-3}),
        ("batch_all", {"mining": "batch_all"}),
        ("margin 0.1", {"margin": 0.1}),
        ("margin 0.4", {"margin": 0.4}),
        ("P10 K16", {"labels_per_batch": 10}),
        ("P10 K32 lr 2e-3", {"labels_per_batch": 10, "samples_per_label": 32, "lr": 2e-3}),
        ("crop 2", {"crop_padding": 2}),
        ("no augment", {"augment": "none"}),
        ("no tta", {"tta": False}),
        ("fp32", {"amp": "off"}),
        ("dim 128", {"embedding_dim": 128}),
        ("adamw wd 0.05", {"optimizer": "adamw", "weight_decay": 0.05}),
        ("sgd lr 0.05", {"optimizer": "sgd", "lr": 0.05}),
        ("w16 x2 epochs", {"width": 16, "epochs": 20}),
        ("w48 /2 epochs", {"width": 48, "epochs": 5}),
        ("14 epochs", {"epochs": 14}),
        ("hardest_negative", {"mining": "hardest_negative"}),
        ("softmax", {"objective": "softmax"}),
        ("contrastive", {"objective": "contrastive"}),
    ],
    "bf16": [
        ("fp32 8 ep", {"amp": "off", "epochs": 8}),
        ("bf16 14 ep", {"amp": "on", "epochs": 14}),
        ("bf16 14 ep no crop", {"amp": "on", "epochs": 14, "crop_padding": 0}),
        (
            "bf16 14 ep no crop batch_all m0.5",
            {"amp": "on", "epochs": 14, "crop_padding": 0, "mining": "batch_all", "margin": 0.5},
        ),
    ],
}

METRICS = ("knn_accuracy", "precision_at_1", "map_at_r", "pair_accuracy", "pair_threshold")


def run_one(
    label: str, overrides: Overrides, base: Overrides, root: str, threads: int
) -> dict[str, Any]:
    """Train one configuration in a fresh process; return its metrics and timings."""
    import torch

    from tripletlab.training import config_from_dict, fit

    torch.set_num_threads(threads)
    config = config_from_dict({**base, **overrides})
    run_dir = Path(tempfile.mkdtemp(prefix="sweep-", dir=root))
    t0 = time.perf_counter()
    result = fit(config, run_dir)
    wall = time.perf_counter() - t0
    return {
        "label": label,
        "overrides": overrides,
        "epochs": result.metrics.get("best_epoch"),
        "wall_seconds": wall,
        **{k: result.metrics.get(k) for k in (*METRICS, "train_seconds", "samples_per_second")},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="defaults", choices=sorted(GRIDS))
    p.add_argument("--only", nargs="*", help="labels of the grid to run (default: all)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = p.parse_args(argv)

    base: Overrides = {"dataset": args.dataset, "device": args.device}
    if args.data_dir:
        base["data_dir"] = args.data_dir
    grid = [(label, o) for label, o in GRIDS[args.grid] if not args.only or label in args.only]
    jobs = [(f"{label} (seed {s})", {**o, "seed": s}) for label, o in grid for s in args.seeds]
    root = tempfile.mkdtemp(prefix="tripletlab-sweep-")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_one, lab, o, base, root, args.threads) for lab, o in jobs]
        for fut in as_completed(futures):
            row = fut.result()
            rows.append(row)
            print(json.dumps(row), flush=True)
    order = {lab: i for i, (lab, _) in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["label"]])

    head = [
        f"# Sweep `{args.grid}` on {args.dataset}",
        "",
        f"- Command: `python benchmarks/{Path(__file__).name} "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- Machine: {describe_machine()}; device {args.device}; {args.workers} runs at a time, "
        f"{args.threads} torch threads each",
        f"- Date: {started}",
        "- Each row: `fit()` with the defaults of `TrainConfig` except the overrides; test-split "
        "metrics of the best checkpoint (validation 1-NN). Wall times are of runs sharing the "
        "machine, so only the accuracies compare across machines.",
        "",
        "| run | overrides | best epoch | 1-NN acc | P@1 | MAP@R | pair acc | threshold | wall s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    body = [
        f"| {r['label']} | `{json.dumps(r['overrides'])}` | {r['epochs']} | "
        f"{r['knn_accuracy']:.4f} | {r['precision_at_1']:.4f} | {r['map_at_r']:.4f} | "
        f"{r['pair_accuracy']:.4f} | {r['pair_threshold']:.2f} | {r['wall_seconds']:.0f} |"
        for r in rows
    ]
    write_section(args.out, "\n".join(head + body) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
