"""Time and peak extra memory of the retrieval metrics at N = 10k, 70k and 1M, torch and faiss.

Each (size, method) runs in a fresh subprocess: it builds the synthetic embeddings, resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``; without it, the process's ``ru_maxrss``),
computes the metrics once and reports the wall time and its peak resident memory minus the
resident memory it had with the inputs built ("peak extra"). ``RUSAGE_CHILDREN`` in the parent
is not used because it is the maximum over every child waited for so far, not per cell.

Methods (all through :func:`tripletlab.metrics.retrieval_metrics`):
  torch       precision@1, R-precision, MAP@R, Recall@{1,2,4,8}: chunked top-k with torch
  torch+full  the same plus mAP and MRR over the whole ranking (sorts every query's row)
  faiss       the top-k metrics with faiss's exact IndexFlatL2 for the neighbour search

Sizes up to --same-set-max score every item against all the others (N x N distances, in
chunks); larger galleries are scored with --queries held-out queries drawn from the same
classes, since N x N at 1M would take hours on 2 cores (the report extrapolates).

Usage:
    python benchmarks/bench_metrics.py --out /tmp/bench_metrics.md           # 10k, 70k, 1M
    python benchmarks/bench_metrics.py --sizes 10000 --out /tmp/smoke.md     # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from machine import describe_machine
from sections import write_section

DIM = 128
METHODS = ("torch", "torch+full", "faiss")
RECALL_KS = (1, 2, 4, 8)


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _embeddings(n: int, classes: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, DIM) float32 unit rows around one random centre per class; labels 0..classes-1.

    Built in place, a block at a time, so that building them peaks at about their own size.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(
        torch.randn(classes, DIM, generator=torch.Generator().manual_seed(0)), dim=1
    )
    labels = torch.randint(0, classes, (n,), generator=g)
    x = torch.empty(n, DIM)
    for s in range(0, n, 65536):
        block = x[s : s + 65536]
        block.normal_(generator=g).mul_(noise).add_(centres[labels[s : s + 65536]])
        block.div_(block.norm(dim=1, keepdim=True))
    return x, labels


def measure(
    method: str, n: int, queries: int, classes: int, threads: int, noise: float
) -> dict[str, Any]:
    """One call of retrieval_metrics in this process: seconds, peak extra MiB and the scores."""
    from tripletlab.metrics import retrieval_metrics

    torch.set_num_threads(threads)
    if method == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
    gallery, gallery_labels = _embeddings(n, classes, 1, noise)
    if queries < n:
        q, ql = _embeddings(queries, classes, 2, noise)
        args: tuple[torch.Tensor, ...] = (q, ql, gallery, gallery_labels)
    else:
        args = (gallery, gallery_labels)
    reset = _reset_peak()
    base = _rss_mb()
    t0 = time.perf_counter()
    m = retrieval_metrics(
        *args,
        recall_ks=RECALL_KS,
        full_ranking=method == "torch+full",
        backend="faiss" if method == "faiss" else "torch",
    )
    seconds = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_mb": max(peak - base, 0.0),
        "peak_source": "VmHWM after clear_refs" if reset else "ru_maxrss (includes building)",
        "precision_at_1": m.precision_at_1,
        "map_at_r": m.map_at_r,
        "recall_at_8": m.recall_at_k[8],
        "mean_average_precision": m.mean_average_precision,
    }


def _child(args: argparse.Namespace, method: str, n: int, queries: int) -> dict[str, Any]:
    """Run this script's --child mode in a fresh process and parse its JSON answer."""
    cmd = [sys.executable, __file__, "--child", method, str(n), str(queries)]
    cmd += ["--classes", str(args.classes), "--threads", str(args.threads)]
    cmd += ["--noise", str(args.noise)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail[:80]}
    parsed: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 70_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--classes", type=int, default=10, help="MNIST-like: R_max = N / 10")
    parser.add_argument("--noise", type=float, default=0.2, help="per-coordinate noise std")
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--same-set-max", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000, help="above --same-set-max")
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "N", "Q"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, q = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(measure(method, n, q, args.classes, args.threads, args.noise)))
        return

    command = "python benchmarks/bench_metrics.py " + " ".join(sys.argv[1:])
    print(f"$ {command}\n{describe_machine()}; {args.threads} threads; {dt.date.today()}")
    rows = []
    for n in args.sizes:
        queries = n if n <= args.same_set_max else min(args.queries, n)
        for method in args.methods:
            r = _child(args, method, n, queries)
            rows.append((n, queries, method, r))
            if "error" in r:
                print(f"N={n:>9,} Q={queries:>9,} {method:11s} failed: {r['error']}", flush=True)
            else:
                print(
                    f"N={n:>9,} Q={queries:>9,} {method:11s} {r['seconds']:9.1f} s "
                    f"{r['peak_mb']:8.0f} MiB  P@1 {r['precision_at_1']:.4f}  "
                    f"MAP@R {r['map_at_r']:.4f}",
                    flush=True,
                )
    report = _report(rows, args, command)
    print(report)
    if args.out:
        write_section(args.out, report)


def _report(
    rows: list[tuple[int, int, str, dict[str, Any]]], args: argparse.Namespace, command: str
) -> str:
    try:
        import faiss

        faiss_version = f"faiss {faiss.__version__}"
    except ImportError:
        faiss_version = "faiss not installed"
    sources = {r.get("peak_source") for *_, r in rows if "peak_source" in r}
    lines = [
        "## Retrieval metrics: time and peak memory",
        "",
        f"- Command: `{command}`",
        f"- Machine: {describe_machine()}; {args.threads} torch / faiss threads",
        f"- Date: {dt.date.today().isoformat()}; torch {torch.__version__}, {faiss_version}",
        f"- Input: synthetic L2-normalised float32 embeddings, D = {DIM}, {args.classes} "
        f"classes (so R_max, the neighbours MAP@R needs, is about N / {args.classes}), one "
        f"random centre per class plus Gaussian noise of std {args.noise}; Euclidean distance.",
        "- Methods: `torch` and `faiss` compute precision@1, R-precision, MAP@R and "
        "Recall@{1,2,4,8} from one chunked top-k search (faiss: exact `IndexFlatL2`); "
        "`torch+full` adds mAP and MRR over the whole ranking (sorts each query's row).",
        f"- Queries: up to N = {args.same_set_max:,} every item against all the others. "
        f"Above, {args.queries:,} held-out queries from the same classes against the "
        "N-item gallery: the full N x N would take hours on 2 cores; the last column "
        "extrapolates it linearly in the number of queries.",
        "- Cell: wall time of one call / peak extra resident memory (peak RSS during the "
        "call minus RSS with the inputs built, each cell in a fresh process; "
        f"{', '.join(sorted(s for s in sources if s)) or 'no cell ran'}).",
        "",
        "| N | queries | method | time | peak extra | P@1 | MAP@R | Recall@8 | all N queries |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, q, method, r in rows:
        if "error" in r:
            lines.append(f"| {n:,} | {q:,} | {method} | failed: {r['error']} | | | | | |")
            continue
        full = r["seconds"] * n / q
        extrapolated = "(measured)" if q == n else f"~{full / 3600:.1f} h"
        lines.append(
            f"| {n:,} | {q:,} | {method} | {r['seconds']:.1f} s | {r['peak_mb']:.0f} MiB | "
            f"{r['precision_at_1']:.4f} | {r['map_at_r']:.4f} | {r['recall_at_8']:.4f} | "
            f"{extrapolated} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
