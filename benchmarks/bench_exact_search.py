"""Exact search against faiss's flat index and a bare matrix-product floor (issue 17).

Three ways to find each query's k nearest of N gallery vectors, exactly, measured side by
side in one run:

- ours: :meth:`tripletlab.search.EmbeddingIndex.search` with the exact backend (the path of
  every ``search``, ``calibrate`` and ``serve`` call by default: input checks, the blocked
  kernel :func:`tripletlab.metrics.exact_search`, labels and ids of the result);
- faiss: a bare ``IndexFlatL2`` (Euclidean) or ``IndexFlatIP`` on unit rows (cosine)
  ``search`` of ready float32 numpy queries;
- floor: a bare ``(q @ X.T).topk(k)`` a chunk of ``--floor-chunk`` queries at a time (inner
  products only: no norms, no distances, no tie order).

Data: the clustered unit vectors of ``bench_search.py`` (D = 128, float32, seeded). One
subprocess per (N, distance) builds the three and then, per thread count and k, warms each
up on 100 queries and times all ``--queries`` queries (one call) ``--repeats`` times,
interleaving ours / faiss / floor so that a change in the machine's load hits all three
alike; queries/s from the median time; ratios of medians. Peak extra memory: the peak
resident memory during a call minus the resident memory before it (``/proc/self/clear_refs``
resets the peak mark), the largest over the repeats. "same rows": the fraction of (query,
rank) places where ours and faiss return the same gallery row.

Usage:
    python benchmarks/bench_exact_search.py --out docs/benchmarks.md   # the issue's grid
    python benchmarks/bench_exact_search.py --sizes 20000 --queries 200 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_search import DIM, reset_peak, rss_mb, vectors
from machine import describe_machine
from sections import write_section

METHODS = ("ours", "faiss", "floor")


def floor_search(q: torch.Tensor, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(Q, k) rows of the largest inner products, a chunk of queries at a time."""
    out = [(q[s : s + chunk] @ x.T).topk(k, dim=1).indices for s in range(0, len(q), chunk)]
    return torch.cat(out)


def _timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Seconds, peak extra MiB and result of one call."""
    reset = reset_peak()
    base = rss_mb()
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    peak = rss_mb("VmHWM") - base if reset else float("nan")
    return seconds, max(peak, 0.0), result


def measure(n: int, distance: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (threads, k) cell of one (N, distance), in this process."""
    import faiss

    from tripletlab.faiss_adapter import faiss_rows
    from tripletlab.search import EmbeddingIndex, IndexConfig

    gallery, queries = vectors(n, 1, args), vectors(args.queries, 2, args)
    ours = EmbeddingIndex(DIM, IndexConfig(distance=distance))  # type: ignore[arg-type]
    ours.add(gallery, torch.zeros(n, dtype=torch.long), [str(i) for i in range(n)])
    flat = faiss.IndexFlatIP(DIM) if distance == "cosine" else faiss.IndexFlatL2(DIM)
    flat.add(faiss_rows(gallery, distance))  # type: ignore[arg-type]
    q_np = faiss_rows(queries, distance)  # type: ignore[arg-type]
    x_floor = torch.nn.functional.normalize(gallery, dim=1) if distance == "cosine" else gallery
    del gallery  # ours and faiss hold their own copies
    calls: dict[str, Callable[[int, torch.Tensor], Any]] = {
        "ours": lambda k, q: ours.search(q, k).indices,
        "faiss": lambda k, q: torch.from_numpy(flat.search(np.ascontiguousarray(q.numpy()), k)[1]),
        "floor": lambda k, q: floor_search(q, x_floor, k, args.floor_chunk),
    }
    inputs = {"ours": queries, "faiss": torch.from_numpy(q_np), "floor": queries}
    saved_torch, saved_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    rows = []
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            for k in args.ks:
                for m in METHODS:
                    calls[m](k, inputs[m][:100])  # warm-up
                times: dict[str, list[float]] = {m: [] for m in METHODS}
                peaks: dict[str, float] = dict.fromkeys(METHODS, 0.0)
                found: dict[str, torch.Tensor] = {}
                for _ in range(args.repeats):
                    for m in METHODS:
                        seconds, peak, found[m] = _timed(functools.partial(calls[m], k, inputs[m]))
                        times[m].append(seconds)
                        peaks[m] = max(peaks[m], peak)
                qps = {m: args.queries / statistics.median(times[m]) for m in METHODS}
                same = float((found["ours"] == found["faiss"]).double().mean())
                rows.append(
                    {"n": n, "distance": distance, "threads": threads, "k": k, "qps": qps}
                    | {"peak_mb": peaks, "same": same}
                    | {"index_mb": ours.structure_bytes() / 2**20, "faiss_mb": n * DIM * 4 / 2**20}
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(saved_torch)
        faiss.omp_set_num_threads(saved_faiss)
    return rows


def _child(args: argparse.Namespace, n: int, distance: str) -> list[dict[str, Any]]:
    """This script's --child mode in a fresh process (a clean peak-memory mark per gallery)."""
    cmd = [sys.executable, __file__, "--child", str(n), distance]
    cmd += ["--queries", str(args.queries), "--repeats", str(args.repeats)]
    cmd += ["--floor-chunk", str(args.floor_chunk), "--threads", *map(str, args.threads)]
    cmd += ["--ks", *map(str, args.ks)]
    for flag in ("clusters", "latent", "noise", "data_seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    parsed: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def render_report(
    rows: list[dict[str, Any]], args: argparse.Namespace, notes: dict[str, str]
) -> str:
    import faiss

    lines = [
        "## Exact search against faiss's flat index (issue 17)",
        "",
        f"- Command: `{notes['command']}`",
        f"- Machine: {describe_machine()}; load average {notes['load']}",
        f"- Date: {dt.date.today().isoformat()}, {notes['span']}; torch {torch.__version__}, "
        f"faiss {faiss.__version__}",
        f"- Data: N x {DIM} float32 unit vectors ({args.clusters} clusters, noise {args.noise} "
        f"in a {args.latent}-d subspace, seed {args.data_seed}); {args.queries:,} queries drawn "
        "alike, all in one call.",
        "- ours = `EmbeddingIndex.search` (exact backend: checks, the blocked kernel, labels "
        "and ids); faiss = bare `IndexFlatL2` / `IndexFlatIP` (unit rows) `search`; floor = "
        f"bare `(q @ X.T).topk(k)`, {args.floor_chunk} queries at a time.",
        f"- Timing: per cell a warm-up, then {args.repeats} rounds of ours / faiss / floor "
        "interleaved, median; peak extra = peak RSS during a call minus RSS before it (largest "
        "round); same rows = fraction of (query, rank) places where ours and faiss agree.",
        "",
        "| N | distance | k | threads | ours q/s | faiss q/s | floor q/s | ours / faiss | "
        "ours / floor | same rows | peak extra ours / faiss / floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        q, p = r["qps"], r["peak_mb"]
        lines.append(
            f"| {r['n']:,} | {r['distance']} | {r['k']} | {r['threads']} | {q['ours']:,.0f} | "
            f"{q['faiss']:,.0f} | {q['floor']:,.0f} | {q['ours'] / q['faiss']:.2f} | "
            f"{q['ours'] / q['floor']:.2f} | {r['same']:.4f} | {p['ours']:.0f} / "
            f"{p['faiss']:.0f} / {p['floor']:.0f} MiB |"
        )
    seen = {(r["n"], r["distance"]): r for r in rows}
    lines.append("")
    for (n, distance), r in seen.items():
        lines.append(
            f"- Index memory at N = {n:,}, {distance}: ours {r['index_mb']:.0f} MiB, faiss "
            f"{r['faiss_mb']:.0f} MiB."
        )
    return "\n".join(lines) + "\n"


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """The grid's cells (sizes, distances, ks), queries, repeats and the clustered data's
    parameters: the flags of this benchmark and of bench_exact_parts.py."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[70_000, 1_000_000])
    parser.add_argument("--distances", nargs="+", default=["euclidean", "cosine"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--data-seed", type=int, default=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_grid_arguments(parser)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--floor-chunk", type=int, default=128, help="floor's queries per chunk")
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    parser.add_argument("--child", nargs=2, metavar=("N", "DISTANCE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args)))
        return
    command = "python benchmarks/bench_exact_search.py " + " ".join(sys.argv[1:])
    print(f"$ {command}\n{describe_machine()}; {dt.date.today()}", flush=True)
    start, load0 = dt.datetime.now(dt.UTC), os.getloadavg()
    rows = [r for n in args.sizes for d in args.distances for r in _child(args, n, d)]
    end, load1 = dt.datetime.now(dt.UTC), os.getloadavg()
    notes = {
        "command": command,
        "load": f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end (1-minute)",
        "span": f"{start:%H:%M} to {end:%H:%M} UTC",
    }
    report = render_report(rows, args, notes)
    print(report)
    if args.out:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
