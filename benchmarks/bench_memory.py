"""Step-time overhead of the cross-batch memory (Wang et al. 2020) in a full training step.

A step is what ``tripletlab train`` does per batch: forward of the default network
(``small``, 64-d embeddings) on B 28x28 images, mining + loss, backward and an Adam step.
Each mining mode is timed without memory and with a full memory of M embeddings (filled by
``M / B`` untimed steps first), the two interleaved step by step so that both see the same
machine load; the report gives medians and the overhead of the memory.

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

K = 16  # images per class in a batch, as train's default -k


def _setup(
    mining: TripletMining, b: int, memory: int, seed: int
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


def measure(mining: TripletMining, b: int, memory: int, repeats: int) -> tuple[float, float]:
    """Median step seconds without and with a full memory of ``memory`` embeddings."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, 28, 28, generator=g)
    y = torch.arange(b // K).repeat_interleave(K)
    plain, with_memory = _setup(mining, b, 0, 0), _setup(mining, b, memory, 0)
    for _ in range(-(-memory // b) + 1):  # fill the memory, warm both up
        _step(*with_memory, x + 0.01 * torch.randn(x.shape, generator=g), y)
    _step(*plain, x, y)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(_step(*plain, x, y))
        times[1].append(_step(*with_memory, x, y))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="B (P x 16)")
    parser.add_argument("--memory", type=int, default=4096, help="M")
    parser.add_argument("--minings", nargs="+", default=["semi_hard", "batch_all", "batch_hard"])
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for mining in args.minings:
        t0, t1 = measure(mining, args.batch, args.memory, args.repeats)
        rows.append(f"| {mining} | {t0 * 1e3:.0f} | {t1 * 1e3:.0f} | {100 * (t1 / t0 - 1):+.0f}% |")
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
            f"M = {args.memory}, interleaved.",
            "",
            "| mining | no memory (ms) | memory (ms) | overhead |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )
    print(report)
    if args.out is not None:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
