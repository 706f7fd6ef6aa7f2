"""Search speed, recall and memory: exact torch against faiss flat, HNSW and IVF.

Data: N gallery and Q query vectors, D = 128, float32, L2-normalised, seeded: one random unit
centre per cluster (``--clusters``) plus ``--noise`` times a standard Gaussian in a fixed
random ``--latent``-dimensional subspace (learned embeddings vary along few directions;
isotropic 128-d noise would make every point nearly equidistant, which no real embedding
is). The queries are drawn like the gallery, with another seed. Distance: ``--distance``.

Each (size, method) runs in a fresh subprocess through :class:`tripletlab.search.EmbeddingIndex`:
it builds the data, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), builds the
index (timed), searches ``min(Q, 100)`` queries to warm up, then times ``--repeats`` searches
of all Q queries (one call each) and reports Q / median time. HNSW is built once per size and
searched at each ``--ef-search``; IVF at each ``--nprobe``. Recall@10 is the mean over queries
of |top-10 found ∩ exact top-10| / 10, the exact top-10 coming from the ``exact`` cell
(always run first). Memory: the index's own bytes (the vectors for exact; faiss's serialised
structure, which is what it holds in memory) and the peak resident memory during build and
search minus that before building ("peak extra", the vectors' copy inside faiss included).

Usage:
    python benchmarks/bench_search.py --out /tmp/bench_search.md         # N = 70k and 1M
    python benchmarks/bench_search.py --sizes 20000 --queries 200         # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import describe_machine
from sections import write_section

DIM = 128
K = 10
METHODS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")


def rss_mb(field: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def vectors(n: int, seed: int, args: argparse.Namespace) -> torch.Tensor:
    """(n, DIM) float32 unit rows: centre of a random cluster + noise in a latent subspace.

    The centres and the subspace depend on ``--data-seed`` only (shared by gallery and
    queries); the cluster of each row and its noise on ``seed``. Built a block at a time.
    """
    fixed = torch.Generator().manual_seed(args.data_seed)
    centres = torch.nn.functional.normalize(torch.randn(args.clusters, DIM, generator=fixed), dim=1)
    basis = torch.linalg.qr(torch.randn(DIM, args.latent, generator=fixed)).Q  # (DIM, latent)
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, DIM)
    for s in range(0, n, 65536):
        m = min(n, s + 65536) - s
        z = torch.randn(m, args.latent, generator=g) * args.noise  # (m, latent)
        which = torch.randint(0, args.clusters, (m,), generator=g)
        x[s : s + m] = torch.nn.functional.normalize(centres[which] + z @ basis.T, dim=1)
    return x


def _sweep(method: str, args: argparse.Namespace) -> list[dict[str, int]]:
    table: dict[str, list[dict[str, int]]] = {
        "exact": [{}],
        "faiss-flat": [{}],
        "faiss-hnsw": [{"ef_search": e} for e in args.ef_search],
        "faiss-ivf": [{"nprobe": p} for p in args.nprobe],
    }
    return table[method]


def measure(method: str, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build one index in this process and search it at each setting of its sweep."""
    import faiss

    from tripletlab.search import EmbeddingIndex, IndexConfig

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    gallery, queries = vectors(n, 1, args), vectors(args.queries, 2, args)
    labels = torch.zeros(n, dtype=torch.long)
    ids = [str(i) for i in range(n)]
    kind = {"exact": "flat", "faiss-flat": "flat", "faiss-hnsw": "hnsw", "faiss-ivf": "ivf"}
    config = IndexConfig(
        distance=args.distance,
        backend="exact" if method == "exact" else "faiss",
        faiss_index=kind[method],  # type: ignore[arg-type]
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        nlist=args.nlist,
    )
    reset = reset_peak()
    base = rss_mb()
    t0 = time.perf_counter()
    index = EmbeddingIndex(DIM, config)
    index.add(gallery, labels, ids)
    build = time.perf_counter() - t0
    truth = None if method == "exact" else np.load(args.truth)
    rows = []
    for params in _sweep(method, args):
        index.set_search_parameters(**params)
        index.search(queries[: min(args.queries, 100)], K)  # warm-up
        times, found = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found = index.search(queries, K).indices
            times.append(time.perf_counter() - t0)
        assert found is not None
        if truth is None:
            np.save(args.truth, found.numpy())
            recall = 1.0
        else:
            hits = sum(
                len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True)
            )
            recall = hits / truth.size
        rows.append(
            {
                "params": params,
                "build_s": build,
                "qps": args.queries / statistics.median(times),
                "recall": recall,
            }
        )
    peak = rss_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nbytes = index.structure_bytes()
    for r in rows:
        r.update(
            index_mb=nbytes / 2**20, peak_mb=max(peak - base, 0.0), config=index.config.describe()
        )
    return rows


def _child(args: argparse.Namespace, method: str, n: int, truth: Path) -> list[dict[str, Any]]:
    """Run this script's --child mode in a fresh process and parse its JSON answer."""
    cmd = [sys.executable, __file__, "--child", method, str(n), "--truth", str(truth)]
    for flag in ("queries", "repeats", "threads", "clusters", "latent", "noise", "data_seed"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--distance", args.distance, "--hnsw-m", str(args.hnsw_m)]
    cmd += ["--ef-construction", str(args.ef_construction)]
    cmd += ["--ef-search", *map(str, args.ef_search), "--nprobe", *map(str, args.nprobe)]
    if args.nlist:
        cmd += ["--nlist", str(args.nlist)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [{"error": tail[:100]}]
    parsed: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return parsed


def _params(p: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items()) or "-"


def _report(
    rows: list[tuple[int, str, dict[str, Any]]], args: argparse.Namespace, command: str
) -> str:
    import faiss

    exact_qps = {n: r["qps"] for n, m, r in rows if m == "exact" and "qps" in r}
    lines = [
        "## Nearest-neighbour search: exact torch and faiss",
        "",
        f"- Command: `{command}`",
        f"- Machine: {describe_machine()}; {args.threads} torch / faiss threads",
        f"- Date: {dt.date.today().isoformat()}; torch {torch.__version__}, "
        f"faiss {faiss.__version__}",
        f"- Data: D = {DIM} float32 unit vectors, {args.clusters} clusters, noise {args.noise} "
        f"in a {args.latent}-d subspace, seed {args.data_seed}; {args.queries:,} queries drawn "
        "alike; "
        f"{args.distance} distance; k = {K}",
        f"- Timing: build once; per setting a warm-up, then {args.repeats} searches of all "
        "queries in one call, median; recall@10 against the exact top 10.",
        "- Memory: index = the vectors (exact) or faiss's serialised structure; peak extra = "
        "peak RSS during build and search minus RSS before the build (fresh process per cell).",
        "",
        "| N | method | search params | build | queries/s | vs exact | recall@10 | index "
        "| peak extra |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, method, r in rows:
        if "error" in r:
            lines.append(f"| {n:,} | {method} | failed: {r['error']} | | | | | | |")
            continue
        speed = r["qps"] / exact_qps[n] if n in exact_qps else float("nan")
        lines.append(
            f"| {n:,} | {method} | {_params(r['params'])} | {r['build_s']:.1f} s | "
            f"{r['qps']:,.0f} | {speed:.1f}x | {r['recall']:.4f} | {r['index_mb']:.0f} MiB | "
            f"{r['peak_mb']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[70_000, 1_000_000])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="exact always runs first (it gives the recall's truth)",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--distance", default="cosine", help="euclidean, sqeuclidean or cosine")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--latent", type=int, default=16, help="dimension of the noise subspace")
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--nlist", type=int, help="IVF lists (default: sqrt(N))")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--truth", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return

    command = "python benchmarks/bench_search.py " + " ".join(sys.argv[1:])
    print(
        f"$ {command}\n{describe_machine()}; {args.threads} threads; {dt.date.today()}", flush=True
    )
    methods = ["exact", *[m for m in args.methods if m != "exact"]]
    rows: list[tuple[int, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            truth = Path(tmp) / f"truth-{n}.npy"
            for method in methods:
                for r in _child(args, method, n, truth):
                    rows.append((n, method, r))
                    if "error" in r:
                        print(f"N={n:>9,} {method:10s} failed: {r['error']}", flush=True)
                        continue
                    print(
                        f"N={n:>9,} {method:10s} {_params(r['params']):14s} "
                        f"build {r['build_s']:7.1f} s {r['qps']:9,.0f} q/s  "
                        f"recall@10 {r['recall']:.4f}  index {r['index_mb']:6.0f} MiB  "
                        f"peak extra {r['peak_mb']:6.0f} MiB",
                        flush=True,
                    )
                if method == "exact" and not truth.exists():
                    break  # no truth: the other methods cannot be scored
    report = _report(rows, args, command)
    print(report)
    if args.out:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
