"""Every objective on one footing: same network, data and training-time budget, several seeds.

Trains the softmax baseline, offline siamese, offline triplet, online contrastive
(hard-negative pairs) and triplet with batch-all, batch-hard, semi-hard and random-hard
mining, each with the defaults of ``tripletlab train`` except the objective and mining, on a
class-disjoint split (``--unseen-classes``: the last N classes never appear in training).
Each run is scored by ``tripletlab.evaluation.evaluate_run`` on the seen classes (test images
of the training classes) and on the unseen ones, as Musgrave et al. (ECCV 2020) recommend:
precision@1, R-precision, MAP@R within each group, and torchvision's pair accuracy.

Equal budget: objectives differ in cost per step (offline siamese and triplet batches load 2x
and 3x the images; mining costs differ), so first a probe times each objective's training
steps on this machine (``--probe-steps`` after ``--warmup-steps``, nothing else should run
then), and each objective then trains for ``--budget`` seconds' worth of its own steps:
``steps = budget * steps_per_second``, spread over ``--epochs`` epochs with
``steps_per_epoch`` (same schedule shape for all). The step counts, not the clock, bound the
runs, so the comparison does not depend on what else the machine does while they train::

    python benchmarks/compare_objectives.py --budget 60 --seeds 0 1 2 --out /tmp/compare.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine
from sections import write_section

from tripletlab.training import SilentReporter, StepInfo

#: (label, TrainConfig overrides by flat key)
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
GROUPS = ("seen", "unseen")


class _ProbeDone(Exception):
    """Raised from the probe's reporter to leave ``fit`` once the timed steps are done."""


class _StepClock(SilentReporter):
    """Records when each training step ends; stops the run after ``stop_after`` steps."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after, self.times = stop_after, list[float]()

    def step(self, epoch: int, info: StepInfo) -> None:
        self.times.append(time.perf_counter())  # the step's values are on the host: it ended
        if len(self.times) == self.stop_after:
            raise _ProbeDone


def probe_rate(overrides: dict[str, Any], base: dict[str, Any], warmup: int, steps: int) -> float:
    """Training steps per second of one objective on this machine (after ``warmup`` steps)."""
    from tripletlab.training import config_from_dict, fit

    clock = _StepClock(warmup + steps)
    config = config_from_dict({**base, **overrides, "epochs": 1, "steps_per_epoch": warmup + steps})
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(_ProbeDone):
        fit(config, Path(tmp) / "probe", reporter=clock)
    return steps / (clock.times[-1] - clock.times[warmup - 1])


def run_one(overrides: dict[str, Any], base: dict[str, Any], root: Path) -> dict[str, Any]:
    """Train one objective and score it on the seen and the unseen classes."""
    from tripletlab.evaluation import evaluate_run, load_run
    from tripletlab.training import config_from_dict, fit

    run_dir = Path(tempfile.mkdtemp(prefix="compare-", dir=root))
    result = fit(config_from_dict({**base, **overrides}), run_dir)
    scores = evaluate_run(load_run(run_dir), split="unseen", metrics=("retrieval", "pairs"))
    return {
        "train_seconds": result.metrics["train_seconds"],
        **{f"{g}_{c}": scores[g][c] for g in GROUPS for c in COLUMNS},
    }


def _cell(values: list[float]) -> str:
    """``mean ± sample standard deviation`` (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per objective")
    p.add_argument("--epochs", type=int, default=3, help="epochs the budget is spread over")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--probe-steps", type=int, default=40)
    p.add_argument("--unseen-classes", type=int, default=5)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", nargs="*", help="labels to run (default: all)")
    p.add_argument("--out", type=Path, required=True, help="markdown section to write")
    p.add_argument("--json", type=Path, help="also write every run's row here (JSON lines)")
    args = p.parse_args(argv)

    base: dict[str, Any] = {"dataset": args.dataset, "unseen_classes": args.unseen_classes}
    if args.data_dir:
        base["data_dir"] = args.data_dir
    runs = [(label, o) for label, o in RUNS if not args.only or label in args.only]
    root = Path(tempfile.mkdtemp(prefix="tripletlab-compare-"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    steps: dict[str, int] = {}
    for label, overrides in runs:  # the probe: run it on a quiet machine
        rate = probe_rate(overrides, {**base, "seed": 0}, args.warmup_steps, args.probe_steps)
        steps[label] = max(args.epochs, round(args.budget * rate))
        print(json.dumps({"label": label, "steps_per_second": rate, "steps": steps[label]}))

    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in runs}
    for seed in args.seeds:
        for label, overrides in runs:
            per_epoch = -(-steps[label] // args.epochs)
            cfg = {**overrides, "seed": seed, "epochs": args.epochs, "steps_per_epoch": per_epoch}
            row = {"label": label, "seed": seed, "steps": per_epoch * args.epochs}
            row.update(run_one(cfg, base, root))
            rows[label].append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")

    command = " ".join(argv if argv is not None else sys.argv[1:])
    head = [
        f"## Objectives compared on {args.dataset}, last {args.unseen_classes} classes unseen",
        "",
        f"- Command: `python benchmarks/{Path(__file__).name} {command}`",
        f"- Machine: {describe_machine()}",
        f"- Date: {started}",
        f"- Each run: `tripletlab train` defaults (network `small`, 64-d, P x K batches or the "
        "same batch size, Adam, cosine schedule) with the objective below, trained for "
        f"{args.budget:.0f} s worth of its own steps on this machine (the probe's rate), over "
        f"{args.epochs} epochs; seeds {', '.join(map(str, args.seeds))}, mean ± standard "
        "deviation over the seeds. Scored with `tripletlab evaluate --split unseen`: seen = "
        "test images of the training classes, unseen = test images of the held-out classes, "
        "each group searched within itself. Pair accuracy: torchvision's best threshold on "
        "the group's own pairs. Training seconds: measured, mean over the seeds.",
        "",
        "| objective | steps | seen P@1 | seen R-prec | seen MAP@R | seen pair acc "
        "| unseen P@1 | unseen R-prec | unseen MAP@R | unseen pair acc | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    body = []
    for label, got in rows.items():
        cells = [_cell([r[f"{g}_{c}"] for r in got]) for g in GROUPS for c in COLUMNS]
        seconds = statistics.mean(r["train_seconds"] for r in got)
        body.append(f"| {label} | {got[0]['steps']} | {' | '.join(cells)} | {seconds:.0f} |")
    write_section(args.out, "\n".join(head + body) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
