"""Forward + backward time and peak extra memory of each loss, against pytorch-metric-learning.

Each (method, batch size) runs in a fresh subprocess so that its peak resident memory can be
read from the OS: "peak extra" is the peak RSS during the timed runs minus the RSS once the
inputs exist. Times are medians of repeated forward + backward passes after one warm-up,
with ``torch.set_num_threads(threads)``.

Usage:
    python benchmarks/bench_losses.py --out docs/benchmarks.md
    python benchmarks/bench_losses.py --sizes 128 256 --repeats 3     # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import describe_machine
from sections import write_section

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Results = dict[tuple[str, int], dict[str, float] | str]

DIM = 128
K = 4
# pytorch-metric-learning's all-triplets path (no miner, and TripletMarginMiner) builds a
# (B, B, B) boolean mask: 8.6 GB at B = 2048, 69 GB at 4096. It is not run above this size.
PML_CUBIC_MAX_B = 1024


def _ours(name: str) -> Step:
    from tripletlab import ContrastiveLoss, TripletMarginLoss
    from tripletlab.distances import pairwise_distances

    if name == "floor":
        return lambda x, y: pairwise_distances(x).sum()
    if name.startswith("contrastive"):
        mining = name.split(":")[1]
        return ContrastiveLoss(0.0, 1.0, mining=mining, check_finite=False)  # type: ignore[arg-type]
    return TripletMarginLoss(0.2, mining=name, check_finite=False, seed=0)  # type: ignore[arg-type]


def _pml(name: str) -> Step:
    from pytorch_metric_learning import losses, miners
    from pytorch_metric_learning.distances import LpDistance

    dist = LpDistance(normalize_embeddings=False)
    if name == "pml:contrastive":
        return losses.ContrastiveLoss(distance=dist)  # type: ignore[no-any-return]
    loss = losses.TripletMarginLoss(margin=0.2, distance=dist)
    if name == "pml:all":
        return loss  # type: ignore[no-any-return]
    miner = (
        miners.BatchHardMiner(distance=dist)
        if name == "pml:batch_hard"
        else miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=dist)
    )
    return lambda x, y: loss(x, y, miner(x, y))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _inputs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(b)
    x = torch.nn.functional.normalize(torch.randn(b, DIM, generator=g), dim=1)
    return x.requires_grad_(True), torch.arange(b // K).repeat_interleave(K)


def _step(method: str) -> Step:
    return _pml(method) if method.startswith("pml:") else _ours(method)


def peak_memory(method: str, b: int, threads: int) -> float:
    """Peak extra resident memory (MB) of one forward + backward pass after a warm-up."""
    torch.set_num_threads(threads)
    step = _step(method)
    x, y = _inputs(b)
    base = _rss_mb()
    for _ in range(2):
        step(x, y).backward()
        x.grad = None
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, 0.0)


def interleaved_times(methods: list[str], b: int, repeats: int, threads: int) -> dict[str, float]:
    """Median ms of one forward + backward pass of each method, timed round-robin.

    Every round times each method once, so slow drifts of the machine (other tenants,
    frequency) touch all methods alike and the ratios stay fair.
    """
    torch.set_num_threads(threads)
    steps = {m: _step(m) for m in methods}
    x, y = _inputs(b)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats + 1):
        for m, step in steps.items():
            t0 = time.perf_counter()
            step(x, y).backward()
            if r:  # round 0 is a warm-up
                times[m].append(time.perf_counter() - t0)
            x.grad = None
    return {m: statistics.median(v) * 1e3 for m, v in times.items()}


OURS = [
    "floor",
    "batch_all",
    "batch_hard",
    "semi_hard",
    "hardest_negative",
    "random_hard",
    "semi_hard_random",
    "contrastive:all",
    "contrastive:hard_negative",
]
PML = ["pml:all", "pml:batch_hard", "pml:semihard", "pml:contrastive"]
# (our method, PML's nearest equivalent) for the ratio columns.
PEERS = {
    "batch_all": "pml:all",
    "batch_hard": "pml:batch_hard",
    "semi_hard": "pml:semihard",
    "semi_hard_random": "pml:semihard",
    "contrastive:all": "pml:contrastive",
}


PML_CUBIC = ("pml:all", "pml:semihard")


def _child(argv: list[str], repeats: int, threads: int) -> dict[str, float]:
    """Run this script on ``argv`` in a fresh process and parse its JSON answer."""
    cmd = [sys.executable, __file__, "--child", *argv]
    cmd += ["--repeats", str(repeats), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:60]}  # type: ignore[dict-item]
    parsed: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per cell (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "B"), help=argparse.SUPPRESS)
    parser.add_argument("--methods", nargs="+", default=OURS + PML, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement in a fresh process, printed as JSON
        what, b = args.child[0], int(args.child[1])
        if what == "times":
            out = interleaved_times(args.methods, b, args.repeats, args.threads)
        else:
            out = {"peak_mb": peak_memory(what, b, args.threads)}
        print(json.dumps(out))
        return

    results: Results = {}
    for b in args.sizes:
        repeats = args.repeats if b <= 1024 else max(3, args.repeats // 2)
        runnable = [m for m in OURS + PML if not (m in PML_CUBIC and b > PML_CUBIC_MAX_B)]
        for m in set(OURS + PML) - set(runnable):
            results[(m, b)] = f"not run ({b**3 / 1e9:.0f} GB mask)"
        times = _child(["times", str(b), "--methods", *runnable], repeats, args.threads)
        for m in runnable:
            if "error" in times:
                results[(m, b)] = f"failed: {times['error']}"
                continue
            mem = _child([m, str(b)], repeats, args.threads)
            cell = {"ms": times[m], "peak_mb": mem.get("peak_mb", float("nan"))}
            results[(m, b)] = cell
            print(f"B={b:5d} {m:28s} {cell['ms']:9.1f} ms {cell['peak_mb']:8.0f} MB", flush=True)

    report = _report(results, args)
    print(report)
    if args.out:
        write_section(args.out, report)


def _cell(r: dict[str, float] | str | None) -> str:
    if r is None:
        return "-"
    return r if isinstance(r, str) else f"{r['ms']:.1f} ms / {r['peak_mb']:.0f} MB"


def _report(
    results: dict[tuple[str, int], dict[str, float] | str], args: argparse.Namespace
) -> str:
    import pytorch_metric_learning

    sizes = args.sizes
    lines = [
        "## Losses: forward + backward",
        "",
        f"- Command: `python benchmarks/bench_losses.py {' '.join(sys.argv[1:])}`",
        f"- Machine: {describe_machine()}; {args.threads} torch threads",
        f"- Date: {dt.date.today().isoformat()}; torch {torch.__version__}, "
        f"pytorch-metric-learning {pytorch_metric_learning.__version__}",
        f"- Input: L2-normalised random embeddings, D = {DIM}, K = {K} samples per label, "
        "float32, Euclidean distance (PML: `LpDistance(normalize_embeddings=False)`), margin 0.2.",
        "- Cell: median time of one forward + backward pass / peak extra resident memory. "
        "Times: all methods of one batch size in one process, timed round-robin (each round "
        "times every method once, so drifts of the machine touch all alike). Memory: peak RSS "
        "minus RSS with the inputs built, each cell in a fresh process.",
        "- `floor` is the distance matrix alone (forward + backward of its sum). PML's "
        "all-triplets paths build a B x B x B mask and are not run above "
        f"B = {PML_CUBIC_MAX_B}.",
        "",
        "| method | " + " | ".join(f"B={b}" for b in sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for method in OURS + PML:
        lines.append(
            f"| {method} | " + " | ".join(_cell(results.get((method, b))) for b in sizes) + " |"
        )
    lines += ["", "Ratios (time): ours / floor, and PML / ours (higher = we are faster).", ""]
    lines += ["| method | peer | " + " | ".join(f"B={b}" for b in sizes) + " |"]
    lines += ["| --- | --- | " + " | ".join("---" for _ in sizes) + " |"]
    for ours, peer in PEERS.items():
        cells_f, cells_p = [], []
        for b in sizes:
            r, f, p = results.get((ours, b)), results.get(("floor", b)), results.get((peer, b))
            if not isinstance(r, dict):
                cells_f.append("-")
                cells_p.append("-")
                continue
            cells_f.append(f"{r['ms'] / f['ms']:.2f}x" if isinstance(f, dict) else "-")
            cells_p.append(f"{p['ms'] / r['ms']:.1f}x" if isinstance(p, dict) else "-")
        lines.append(f"| {ours} / floor | | " + " | ".join(cells_f) + " |")
        lines.append(f"| {peer} / {ours} | {peer} | " + " | ".join(cells_p) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
