"""Time per batch of the two augmentations of ``tripletlab train``: ``digits`` (a random crop
after zero padding of 2 and flips, :func:`tripletlab.data.augment`, one gather) and
``photos`` (random resized crop, flip, colour jitter at the preset's strengths,
:func:`tripletlab.data.photo_augment`), on (B, 3, S, S) uint8 batches, median of --repeats
calls after one warm-up call.

Usage:
    python benchmarks/bench_augment.py                       # B = 256 at 64 and 224 px, CPU
    python benchmarks/bench_augment.py --device cuda --sizes 64 224 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
from machine import describe_machine

from tripletlab.data import augment, photo_augment


def _median_seconds(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {describe_machine()}; device {device}; {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}\n")
    print("| size | digits ms/batch | photos ms/batch | photos / digits |")
    print("|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for size in args.sizes:
        shape = (args.batch, 3, size, size)
        x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
        digits = _median_seconds(
            partial(augment, x, crop_padding=2, hflip=True, generator=g), args.repeats, device
        )
        photos = _median_seconds(partial(photo_augment, x, generator=g), args.repeats, device)
        print(f"| {size} | {digits * 1e3:.1f} | {photos * 1e3:.1f} | {photos / digits:.1f}x |")


if __name__ == "__main__":
    main()
