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

With --vs-floor (issue 17) it times instead, side by side and interleaved (floor, ours;
then ours, floor), the floor of the torch path -- the chunked distance blocks alone, with the
chunks and kernel retrieval_metrics uses -- and retrieval_metrics itself (without mAP/MRR),
at 70k x 70k with 10 classes of ~7,000 and with ~7,000 classes of ~10, and at a 1M gallery
with --floor-queries sampled queries for 10 and for 200,000 classes; --with-topk adds the
pre-issue-17 top-(R_max + 1) path (tests/retrieval_topk.py) once per 70k shape.

Usage:
    python benchmarks/bench_metrics.py --out /tmp/bench_metrics.md           # 10k, 70k, 1M
    python benchmarks/bench_metrics.py --sizes 10000 --out /tmp/smoke.md     # a smoke run
    python benchmarks/bench_metrics.py --vs-floor --with-topk --out docs/benchmarks.md
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


def measure_floor_or_topk(
    method: str, n: int, queries: int, classes: int, threads: int, noise: float
) -> dict[str, Any]:
    """The floor (method "floor") or the pre-issue-17 top-k path ("topk") in this process.

    The floor is what retrieval_metrics' torch path cannot avoid: the gallery prepared once
    and every chunk's (C, N) distance block formed, with the same chunks and the same
    in-place kernel (``blocks._prepare`` / ``blocks._block``, read here on purpose: a floor
    from ``pairwise_distances`` would recompute the gallery's norms per chunk and flatter
    the ratio at 1M).
    """
    from tripletlab.metrics import blocks

    torch.set_num_threads(threads)
    gallery, gallery_labels = _embeddings(n, classes, 1, noise)
    same_set = queries >= n
    q, ql = (gallery, gallery_labels) if same_set else _embeddings(queries, classes, 2, noise)
    reset = _reset_peak()
    base = _rss_mb()
    t0 = time.perf_counter()
    if method == "floor":
        prepared = blocks._prepare(gallery, "euclidean")
        for s in blocks._chunks(len(q), blocks._rows_per_chunk(n, None)):
            own = torch.arange(s.start, s.stop) if same_set else None
            blocks._block(q[s], prepared, own)  # (C, N), dropped
        scores: dict[str, Any] = {}
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from retrieval_topk import topk_values

        chunk = blocks._rows_per_chunk(n, None)
        g, gl = (None, None) if same_set else (gallery, gallery_labels)
        values, r = topk_values(q, ql, g, gl, RECALL_KS, "euclidean", chunk)
        mean = values[r > 0].mean(0)
        scores = {"precision_at_1": float(mean[0]), "map_at_r": float(mean[2])}
    seconds = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": max(peak - base, 0.0), **scores}


def _child(
    args: argparse.Namespace, method: str, n: int, queries: int, classes: int | None = None
) -> dict[str, Any]:
    """Run this script's --child mode in a fresh process and parse its JSON answer."""
    cmd = [sys.executable, __file__, "--child", method, str(n), str(queries)]
    cmd += ["--classes", str(args.classes if classes is None else classes)]
    cmd += ["--threads", str(args.threads)]
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
    parser.add_argument("--vs-floor", action="store_true", help="issue 17: ours / floor")
    parser.add_argument("--rounds", type=int, default=2, help="--vs-floor: interleaved rounds")
    parser.add_argument("--floor-queries", type=int, default=2000, help="--vs-floor at 1M")
    parser.add_argument("--with-topk", action="store_true", help="--vs-floor: the old path too")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "N", "Q"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, q = args.child[0], int(args.child[1]), int(args.child[2])
        how = measure_floor_or_topk if method in ("floor", "topk") else measure
        print(json.dumps(how(method, n, q, args.classes, args.threads, args.noise)))
        return
    if args.vs_floor:
        vs_floor(args)
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


#: --vs-floor shapes: (gallery N, queries, classes, what it stands for).
FLOOR_SHAPES = (
    (70_000, 70_000, 10, "Fashion-MNIST shape: 10 classes of ~7,000 (R ~ 7,000)"),
    (70_000, 70_000, 7_000, "many classes: ~7,000 of ~10 (R ~ 9)"),
    (1_000_000, 0, 10, "1M gallery, 10 classes (R ~ 100,000)"),
    (1_000_000, 0, 200_000, "1M gallery, 200,000 classes (R ~ 5)"),
)


def _load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def vs_floor(args: argparse.Namespace) -> None:
    """Issue 17: retrieval_metrics (torch) against its matrix-product floor, interleaved."""
    command = "python benchmarks/bench_metrics.py " + " ".join(sys.argv[1:])
    print(f"$ {command}\n{describe_machine()}; {args.threads} threads; {dt.date.today()}")
    start = dt.datetime.now(dt.timezone.utc)
    rows = []
    for n, q, classes, what in FLOOR_SHAPES:
        q = q or min(args.floor_queries, n)
        cells: dict[str, list[dict[str, Any]]] = {"floor": [], "torch": [], "topk": []}
        for i in range(args.rounds):
            order: tuple[str, ...] = ("floor", "torch") if i % 2 == 0 else ("torch", "floor")
            if args.with_topk and i == 0 and n <= args.same_set_max:
                order += ("topk",)
            for method in order:
                load = _load()
                r = _child(args, method, n, q, classes)
                r["load"] = load
                cells[method].append(r)
                shown = r.get("error") or f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MiB"
                print(f"N={n:,} Q={q:,} classes={classes:,} {method}: {shown} (load {load})")
        rows.append((n, q, classes, what, cells))
    end = dt.datetime.now(dt.timezone.utc)
    report = _floor_report(rows, args, command, start, end)
    print(report)
    if args.out:
        write_section(args.out, report)


def _floor_report(
    rows: list[tuple[int, int, int, str, dict[str, list[dict[str, Any]]]]],
    args: argparse.Namespace,
    command: str,
    start: dt.datetime,
    end: dt.datetime,
) -> str:
    lines = [
        "## Retrieval metrics against the matrix-product floor (issue 17)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {describe_machine()}; {args.threads} torch threads; shared with other "
        "jobs (the load average of the 1-minute window is given at the start of each cell).",
        f"- Date: {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC; torch {torch.__version__}.",
        f"- Input: synthetic L2-normalised float32 embeddings, D = {DIM}, random labels, one "
        f"random centre per class plus Gaussian noise of std {args.noise}; Euclidean distance. "
        f"70k: every item against all the others; 1M: {args.floor_queries:,} held-out queries "
        "against the 1M gallery (times also given per 1,000 queries).",
        "- floor: the gallery prepared once and every chunk's (C, N) distance block formed "
        "(same chunks, same kernel as `retrieval_metrics`), nothing else. ours: "
        "`retrieval_metrics(..., recall_ks=(1, 2, 4, 8))` (P@1, R-precision, MAP@R, Recall@K; "
        "no mAP/MRR). topk: the top-(R_max + 1) path it replaces (`tests/retrieval_topk.py`). "
        "Each cell is a fresh process; rounds alternate floor, ours / ours, floor; ratio = "
        "ours / floor of the same round. Peak extra = peak RSS during the call minus RSS with "
        "the inputs built.",
        "",
        "| gallery x queries | classes | round | floor | ours | ratio | per 1,000 queries "
        "(ours / floor) | peak extra (ours / floor) | load | MAP@R | P@1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    notes = []
    for n, q, classes, what, cells in rows:
        for i, (f, o) in enumerate(zip(cells["floor"], cells["torch"], strict=True), 1):
            if "error" in f or "error" in o:
                lines.append(
                    f"| {n:,} x {q:,} | {classes:,} | {i} | failed: "
                    f"{f.get('error') or o.get('error')} | | | | | | | |"
                )
                continue
            lines.append(
                f"| {n:,} x {q:,} | {classes:,} | {i} | {f['seconds']:.1f} s | "
                f"{o['seconds']:.1f} s | **{o['seconds'] / f['seconds']:.2f}** | "
                f"{o['seconds'] * 1000 / q:.2f} s / {f['seconds'] * 1000 / q:.2f} s | "
                f"{o['peak_mb']:.0f} / {f['peak_mb']:.0f} MiB | {f['load']}, {o['load']} | "
                f"{o['map_at_r']:.4f} | {o['precision_at_1']:.4f} |"
            )
        for t in cells["topk"]:
            if "error" not in t:
                f = cells["floor"][0]
                notes.append(
                    f"- {n:,} x {q:,}, {classes:,} classes ({what}): the old top-k path took "
                    f"{t['seconds']:.1f} s ({t['seconds'] / f['seconds']:.2f}x round 1's floor, "
                    f"load {t['load']}), peak extra {t['peak_mb']:.0f} MiB, MAP@R "
                    f"{t['map_at_r']:.4f}, P@1 {t['precision_at_1']:.4f}."
                )
    return "\n".join([*lines, "", *notes]) + "\n"


if __name__ == "__main__":
    main()
