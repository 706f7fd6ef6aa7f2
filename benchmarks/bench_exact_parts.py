"""Where the exact search's time goes (issue 17): the blocked kernel against its own parts.

For one gallery and k, in one process on one thread, times side by side:

- kernel: :func:`tripletlab.metrics.exact_search` on a prepared gallery (no
  ``EmbeddingIndex`` checks, labels or ids around it);
- products: the kernel's matrix products alone, the same blocks
  (:func:`tripletlab.metrics.neighbors.block_shape`) into one reused buffer, nothing kept;
- products + group minima: the same, plus each block's minima over groups of columns (the
  first step of the kernel's screening): what the kernel would cost if no score ever had to
  be looked at inside a group;
- known bound: the kernel's blocks screened against each query's final k-th score given in
  advance (a bound no search has; here taken from the kernel's own result), the candidates
  kept and sorted once at the end, no running merge: what the kernel would cost if its first
  block already knew the answer's radius, the best any seeding of that bound could reach;
- faiss: a bare ``IndexFlatL2`` / ``IndexFlatIP`` (unit rows) ``search``.

The difference between the kernel and the products + group minima is the price of finding
and merging each query's candidates (the scores below its running k-th). Data: the
clustered unit vectors of ``bench_search.py``; per method a warm-up on 100 queries, then
``--repeats`` rounds interleaved, best of them.

Usage:
    python benchmarks/bench_exact_parts.py --out docs/benchmarks.md
    python benchmarks/bench_exact_parts.py --sizes 70000 --ks 10 100 --distances euclidean
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bench_exact_search import add_grid_arguments
from bench_search import DIM, vectors
from machine import describe_machine
from sections import write_section

METHODS = ("kernel", "products", "products + group minima", "known bound", "faiss")


def products(q: torch.Tensor, rows: torch.Tensor, k: int, minima: bool) -> None:
    """The kernel's matrix products over the same blocks (and their group minima)."""
    from tripletlab.metrics.blocks import _chunks
    from tripletlab.metrics.neighbors import block_shape

    n = rows.shape[0]
    qb, gb, group = block_shape(q.shape[0], n, k)
    buffer = torch.empty(qb * gb, dtype=rows.dtype)
    for qs in _chunks(q.shape[0], qb):
        c = qs.stop - qs.start
        for gs in _chunks(n, gb):
            m = gs.stop - gs.start
            s = torch.mm(q[qs], rows[gs].T, out=buffer[: c * m].view(c, m))
            whole = m - m % group
            if minima and whole:
                s[:, :whole].view(c, -1, group).amin(2)


def known_bound(q: torch.Tensor, rows: torch.Tensor, k: int, tau: torch.Tensor) -> torch.Tensor:
    """(Q, k) rows of the k smallest scores of ``q @ rows.T``, screened by blocks against the
    bound ``tau`` (Q,), at least each query's k-th score (not checked)."""
    from tripletlab.metrics.blocks import _chunks
    from tripletlab.metrics.neighbors import _pad, _screen, block_shape

    n = rows.shape[0]
    qb, gb, group = block_shape(q.shape[0], n, k)
    buffer = torch.empty(qb * gb, dtype=rows.dtype)
    out = []
    for qs in _chunks(q.shape[0], qb):
        c, t = qs.stop - qs.start, tau[qs]
        found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for gs in _chunks(n, gb):
            m = gs.stop - gs.start
            s = torch.mm(q[qs], rows[gs].T, out=buffer[: c * m].view(c, m))
            whole = m - m % group
            head = s[:, :whole].view(c, -1, group)
            r, cols, vals = _screen(head, head.amin(2), t)
            found.append((r, cols + gs.start, vals))
            r, cols = torch.nonzero(s[:, whole:] < t[:, None], as_tuple=True)
            found.append((r, cols + gs.start + whole, s[:, whole:][r, cols]))
        r = torch.cat([f[0] for f in found])
        by_row = torch.sort(r, stable=True).indices
        v, i = _pad(
            r[by_row],
            torch.cat([f[1] for f in found])[by_row],
            torch.cat([f[2] for f in found])[by_row],
            c,
        )
        out.append(i.gather(1, torch.sort(v, dim=1, stable=True).indices[:, :k]))
    return torch.cat(out)


def measure(n: int, distance: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Queries/s of every method for one (N, distance), each k."""
    import faiss

    from tripletlab.faiss_adapter import faiss_rows
    from tripletlab.metrics.neighbors import _query_rows, exact_gallery, exact_search

    gallery, queries = vectors(n, 1, args), vectors(args.queries, 2, args)
    prepared = exact_gallery(gallery, distance)  # type: ignore[arg-type]
    flat = faiss.IndexFlatIP(DIM) if distance == "cosine" else faiss.IndexFlatL2(DIM)
    flat.add(faiss_rows(gallery, distance))  # type: ignore[arg-type]
    q_np = np.ascontiguousarray(faiss_rows(queries, distance))  # type: ignore[arg-type]
    q_rows = _query_rows(queries, prepared)
    taus: dict[int, torch.Tensor] = {}
    for k in args.ks:  # each query's k-th score, a little above (float32 rounding)
        kth = exact_search(queries, prepared, k)[1][:, -1]
        score = (q_rows * prepared.rows[kth]).sum(1)
        taus[k] = score + 1e-4 * score.abs() + 1e-6
        found = known_bound(q_rows, prepared.rows, k, taus[k])
        ref = exact_search(queries, prepared, k)[1]
        assert torch.equal(found.sort(1).values, ref.sort(1).values), "known bound: other rows"
    calls: dict[str, Callable[[int, int], Any]] = {
        "kernel": lambda m, k: exact_search(queries[:m], prepared, k),
        "products": lambda m, k: products(q_rows[:m], prepared.rows, k, minima=False),
        "products + group minima": lambda m, k: products(q_rows[:m], prepared.rows, k, True),
        "known bound": lambda m, k: known_bound(q_rows[:m], prepared.rows, k, taus[k][:m]),
        "faiss": lambda m, k: flat.search(q_np[:m], k),
    }
    rows = []
    for k in args.ks:
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        for m in METHODS:
            calls[m](100, k)
        for _ in range(args.repeats):
            for m in METHODS:
                t0 = time.perf_counter()
                calls[m](args.queries, k)
                times[m].append(time.perf_counter() - t0)
        qps = {m: args.queries / min(times[m]) for m in METHODS}
        rows.append({"n": n, "distance": distance, "k": k, "qps": qps})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def render_report(rows: list[dict[str, Any]], notes: dict[str, str]) -> str:
    import faiss

    lines = [
        "### Where the time goes: the kernel against its own parts (issue 17)",
        "",
        f"- Command: `{notes['command']}`",
        f"- Machine: {describe_machine()}; load average {notes['load']}",
        f"- Date: {dt.date.today().isoformat()}, {notes['span']}; torch {torch.__version__}, "
        f"faiss {faiss.__version__}; one thread",
        f"- Data: as in the grid above; {notes['queries']} queries in one call; best of "
        f"{notes['repeats']} interleaved rounds.",
        "- kernel = `exact_search` on a prepared gallery; products = its matrix products over "
        "the same blocks, nothing kept; + group minima = and each block's minima over its "
        "column groups; known bound = the kernel screening against each query's final k-th "
        "score given in advance, one sort at the end (the best a seeded bound could do); "
        "candidates = (kernel - products + group minima) time per query.",
        "",
        "| N | distance | k | kernel q/s | products q/s | products + minima q/s | "
        "known bound q/s | faiss q/s | kernel / faiss | products + minima / faiss | "
        "known bound / faiss | candidates µs/query |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        q = r["qps"]
        extra = (1 / q["kernel"] - 1 / q["products + group minima"]) * 1e6
        lines.append(
            f"| {r['n']:,} | {r['distance']} | {r['k']} | {q['kernel']:,.0f} | "
            f"{q['products']:,.0f} | {q['products + group minima']:,.0f} | "
            f"{q['known bound']:,.0f} | {q['faiss']:,.0f} | {q['kernel'] / q['faiss']:.2f} | "
            f"{q['products + group minima'] / q['faiss']:.2f} | "
            f"{q['known bound'] / q['faiss']:.2f} | {extra:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_grid_arguments(parser)
    parser.add_argument("--out", help="write the markdown section here")
    return parser.parse_args(argv)


def main() -> None:
    import faiss

    args = parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    command = "python benchmarks/bench_exact_parts.py " + " ".join(sys.argv[1:])
    print(f"$ {command}\n{describe_machine()}; {dt.date.today()}", flush=True)
    start, load0 = dt.datetime.now(dt.UTC), os.getloadavg()
    rows = [r for n in args.sizes for d in args.distances for r in measure(n, d, args)]
    end, load1 = dt.datetime.now(dt.UTC), os.getloadavg()
    notes = {
        "command": command,
        "load": f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end (1-minute)",
        "span": f"{start:%H:%M} to {end:%H:%M} UTC",
        "queries": f"{args.queries:,}",
        "repeats": str(args.repeats),
    }
    report = render_report(rows, notes)
    print(report)
    if args.out:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
