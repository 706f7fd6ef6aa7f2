"""Step-time overhead of the cross-batch memory (Wang et al. 2020) in a full training step.

A step is what ``tripletlab train`` does per batch: forward of the default network
(``small``, 64-d embeddings) on B 28x28 images, mining + loss, backward and an Adam step.
Each mining mode is timed without memory and with a full memory of M embeddings (filled by
``M / B`` untimed steps first), the two interleaved step by step (which goes first
alternates) so that both see the same machine load; the report gives medians and the
overhead of the memory.

Batches hold P = B / K classes of K = 16 images. ``--classes C`` sets the pool they are
drawn from, P distinct classes at random each step as :class:`tripletlab.samplers.PKSampler`
draws them: C = P repeats the same classes every step (every class in every batch, as the
defaults do on Fashion-MNIST's 10 classes), so a full memory gives each anchor about M / P
extra positives, the most triplets a memory can add; a larger pool (C = 100, e.g. CUB-200's
100 training classes) gives about M / C.

Usage:
    python benchmarks/bench_memory.py --out docs/benchmarks.md
    python benchmarks/bench_memory.py --batch 128 --memory 1024 --repeats 5   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import describe_machine
from sections import write_section
from torch import nn

from tripletlab.losses import TripletMarginLoss, TripletMining
from tripletlab.models import build_model

K = 16  # images per class in a batch, as train's default -k for big classes
Batch = tuple[torch.Tensor, torch.Tensor]


def _setup(
    mining: TripletMining, memory: int, seed: int
) -> tuple[nn.Module, TripletMarginLoss, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model("small", embedding_dim=64)
    loss = TripletMarginLoss(0.2, mining, check_finite=False, seed=0, memory_size=memory)
    return model, loss, torch.optim.Adam(model.parameters(), lr=1e-4)


def _step(
    model: nn.Module,
    loss: TripletMarginLoss,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    value = loss(model(x), y)
    value.backward()
    opt.step()
    return time.perf_counter() - start


def batches(b: int, classes: int, count: int, seed: int) -> list[Batch]:
    """``count`` batches of B random 28x28 images (B,1,28,28) and labels (B,): P = B / K
    distinct classes drawn from ``classes`` each batch, K images each."""
    g = torch.Generator().manual_seed(seed)
    p = b // K
    out = []
    for _ in range(count):
        chosen = torch.randperm(classes, generator=g)[:p]  # (P,)
        out.append((torch.randn(b, 1, 28, 28, generator=g), chosen.repeat_interleave(K)))
    return out


def measure(
    mining: TripletMining, b: int, memory: int, classes: int, repeats: int
) -> tuple[float, float]:
    """Median step seconds without and with a full memory of ``memory`` embeddings."""
    fill = -(-memory // b) + 1  # fill the memory, warm both up
    data = batches(b, classes, fill + repeats, seed=0)
    plain, with_memory = _setup(mining, 0, 0), _setup(mining, memory, 0)
    for x, y in data[:fill]:
        _step(*with_memory, x, y)
    _step(*plain, *data[0])
    times: tuple[list[float], list[float]] = ([], [])
    for i, (x, y) in enumerate(data[fill:]):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            times[j].append(_step(*(plain, with_memory)[j], x, y))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="B (P x 16)")
    parser.add_argument("--memory", type=int, default=4096, help="M")
    parser.add_argument("--minings", nargs="+", default=["semi_hard", "batch_all", "batch_hard"])
    parser.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=[16, 100],
        help="pools of classes each batch draws its B / 16 classes from (B / 16: the same "
        "classes every step)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    args = parser.parse_args()
    if min(args.classes) < args.batch // K:
        parser.error(f"--classes must be at least B / {K} = {args.batch // K}")
    torch.set_num_threads(args.threads)
    rows = []
    for mining in args.minings:
        for classes in args.classes:
            t0, t1 = measure(mining, args.batch, args.memory, classes, args.repeats)
            overhead = f"{100 * (t1 / t0 - 1):+.0f}%"
            rows.append(f"| {mining} | {classes} | {t0 * 1e3:.0f} | {t1 * 1e3:.0f} | {overhead} |")
            print(rows[-1], flush=True)
    report = "\n".join(
        [
            "## Cross-batch memory: training-step overhead (issue 14)",
            "",
            f"- Command: `python {' '.join(['benchmarks/bench_memory.py', *sys.argv[1:]])}`",
            f"- Machine: {describe_machine()}, {args.threads} threads",
            f"- Date: {dt.date.today().isoformat()}",
            f"- Step: forward of the default network (small, 64-d) on B = {args.batch} 28x28 "
            f"images (P x K = {args.batch // K} x {K}), mining + triplet loss, backward, Adam; "
            f"median of {args.repeats} steps, with and without a full memory of "
            f"M = {args.memory}, interleaved (alternating which goes first).",
            "- Classes: each batch draws its P classes at random from a pool of that many "
            f"(P = {args.batch // K}: the same classes every step, about M / P extra positives "
            "an anchor).",
            "",
            "| mining | classes | no memory (ms) | memory (ms) | overhead |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(report)
    if args.out is not None:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
