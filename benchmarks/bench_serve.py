"""Load on ``tripletlab serve``: concurrent clients against a server on 127.0.0.1 (issue 16.5).

Starts ``tripletlab serve RUN_DIR`` in a subprocess (a digits run trained first when no
``--run`` is given), warms it up (``--warmup`` seconds of the same load), then runs
``--clients`` asyncio clients (httpx2, one connection each) for ``--seconds`` or
``--max-requests`` requests, whichever comes first.
Each client alternates an upload search (``POST /api/search``, an 8 x 8 PNG of noise, so
every query is new) and an item search (``GET /api/items/{id}/neighbors``) with k = 10.
Records queries/s, p50/p99 latency per kind, errors (any status but 200, any exception) and
the server's resident memory (``VmRSS`` of ``/proc/PID/status``) after the warm-up and after
the run (and every second during it), with its peak (``VmHWM``) and its threads, and the
load average before and after.

"No growth", the issue's memory target, is judged here as: VmRSS after the run at most
:data:`GROWTH_TOLERANCE_MIB` above VmRSS after the warm-up, and at most
:data:`HALF_TOLERANCE_MIB` (one 128 KiB step of glibc's heap) over the run's second half
(the sample nearest mid-run to the end), so that a steady creep fails even when it is small.

The clients run on the same machine as the server, so they share its CPUs: the figures are
the server's and the clients' work together.

    python benchmarks/bench_serve.py                       # 50 clients, 30 s, digits run
    python benchmarks/bench_serve.py --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import numpy as np
from machine import describe_machine
from PIL import Image
from sections import write_section

ROOT = Path(__file__).resolve().parents[1]
#: The most VmRSS may rise over the measured run for "no growth" (MiB).
GROWTH_TOLERANCE_MIB = 0.5
#: The most VmRSS may rise over the measured run's second half for "no growth" (MiB).
HALF_TOLERANCE_MIB = 0.125


def rss_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB, and its ``Threads``."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def growth_verdict(before: int, after: int, samples: list[int]) -> tuple[float, float, bool]:
    """Growth over the run and over its second half (MiB, from KiB) and whether that is
    "no growth" (see the module docstring). ``samples``: VmRSS every second of the run."""
    total = (after - before) / 1024
    mid = samples[len(samples) // 2] if samples else before
    half = (after - mid) / 1024
    return total, half, total <= GROWTH_TOLERANCE_MIB and half <= HALF_TOLERANCE_MIB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_digits(folder: Path) -> Path:
    """A digits run (one short epoch), the tests' quick run."""
    run = folder / "run"
    cmd = [sys.executable, "-m", "tripletlab", "train", "--dataset", "digits", "--epochs", "1"]
    cmd += ["--val-size", "150", "--seed", "0", "--amp", "off", "--quiet", "--no-report"]
    subprocess.run([*cmd, "--out", str(run)], check=True, stdout=subprocess.DEVNULL)
    return run


@contextmanager
def server(args: argparse.Namespace, run: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    cmd = [sys.executable, "-m", "tripletlab", "serve", str(run), "--port", str(port)]
    cmd += ["--quiet", "--device", "cpu"]
    if args.index:
        cmd += ["--index", str(args.index)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server stopped: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start within 300 s")
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def noise_pngs(count: int, seed: int) -> list[bytes]:
    g = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray((g.random((8, 8)) * 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def client(
    url: str,
    ids: list[str],
    images: list[bytes],
    stop: float,
    budget: list[int],
    records: list[tuple[str, float, bool]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        turn = seed % 2
        while time.monotonic() < stop and budget[0] > 0:
            budget[0] -= 1
            kind = "upload" if turn == 0 else "item"
            turn ^= 1
            t0 = time.perf_counter()
            try:
                if kind == "upload":
                    files = {"image": ("q.png", rng.choice(images), "image/png")}
                    r = await http.post("/api/search", files=files, data={"k": "10"})
                else:
                    r = await http.get(f"/api/items/{rng.choice(ids)}/neighbors", params={"k": 10})
                ok = r.status_code == 200 and len(r.json()["neighbors"]) == 10
            except (httpx.HTTPError, ValueError, KeyError):
                ok = False
            records.append((kind, time.perf_counter() - t0, ok))


async def sample_rss(pid: int, stop: float, every: float, out: list[int]) -> None:
    """The server's VmRSS (KiB) every ``every`` seconds until ``stop``."""
    while time.monotonic() + every < stop:
        await asyncio.sleep(every)
        out.append(rss_kib(pid)["VmRSS"])


async def load(
    url: str,
    ids: list[str],
    args: argparse.Namespace,
    seconds: float,
    requests: int,
    pid: int,
    samples: list[int],
) -> tuple[list[tuple[str, float, bool]], float]:
    images = noise_pngs(256, 0)
    records: list[tuple[str, float, bool]] = []
    budget = [requests]
    t0 = time.monotonic()
    stop = t0 + seconds
    await asyncio.gather(
        sample_rss(pid, stop, 1.0, samples),
        *(client(url, ids, images, stop, budget, records, i) for i in range(args.clients)),
    )
    return records, time.monotonic() - t0


def summary(records: list[tuple[str, float, bool]], wall: float) -> dict[str, dict[str, float]]:
    out = {}
    for kind in ("upload", "item", "all"):
        rows = [r for r in records if kind in ("all", r[0])]
        ms = np.array([r[1] for r in rows]) * 1000
        out[kind] = {
            "requests": len(rows),
            "qps": len(rows) / wall,
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "errors": sum(not r[2] for r in rows),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train a digits run)")
    parser.add_argument("--index", type=Path, help="serve this index (default: the gallery)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after these")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds of the same load before measuring"
    )
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    args = parser.parse_args()
    command = "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
    load_avg = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    header = f"{describe_machine()}; load average before {load_avg}; {dt.date.today()}"
    if os.environ.get("MALLOC_ARENA_MAX"):
        header += f"; MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}"
    print(f"$ {command}\n{header}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_digits(Path(tmp))
        with server(args, run) as (url, proc):
            items = httpx.get(url + "/api/health").json()["items"]
            ids = httpx.get(url + "/api/map", timeout=300).json()["ids"]
            asyncio.run(load(url, ids, args, args.warmup, args.max_requests, proc.pid, []))
            before = rss_kib(proc.pid)
            samples: list[int] = []
            records, wall = asyncio.run(
                load(url, ids, args, args.seconds, args.max_requests, proc.pid, samples)
            )
            after = rss_kib(proc.pid)
    load_after = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    stats = summary(records, wall)
    lines = [
        f"## Serving: tripletlab serve under {args.clients} concurrent clients (issue 16)",
        "",
        f"`{command}`: {header}. The server (`tripletlab serve`, {items:,} gallery items, "
        "exact search, CPU) and the clients (httpx2, asyncio, one connection each) share the "
        "machine's CPUs, which other jobs were using too (the load average above): the "
        "figures are a floor. Each client alternates an upload search (an 8 x 8 PNG) and an "
        f"item search, k = 10; {wall:.1f} s after {args.warmup:g} s of the same load (the "
        "server's threads and caches settle).",
        "",
        "| requests | count | queries/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("upload", "item", "all"):
        s = stats[kind]
        lines.append(
            f"| {kind} | {s['requests']:,} | {s['qps']:.1f} | {s['p50']:.0f} | "
            f"{s['p99']:.0f} | {s['errors']} |"
        )
    total, half, flat = growth_verdict(before["VmRSS"], after["VmRSS"], samples)
    lines += [
        "",
        f"Server memory (VmRSS): {before['VmRSS'] / 1024:.2f} MiB after the warm-up, "
        f"{after['VmRSS'] / 1024:.2f} MiB after the run ({total:+.2f} MiB; {half:+.2f} MiB over "
        f"its second half); peak (VmHWM) {after['VmHWM'] / 1024:.1f} MiB; every 5 s during "
        "the run: "
        + ", ".join(f"{v / 1024:.2f}" for v in samples[4::5])
        + f" MiB; {after['Threads']} threads. No growth (at most {GROWTH_TOLERANCE_MIB} MiB over "
        f"the run and {HALF_TOLERANCE_MIB} MiB over its second half): "
        + ("met" if flat else "NOT met")
        + f". Load average after: {load_after}.",
    ]
    wrapped = [textwrap.fill(ln, 96) if not ln.startswith(("|", "#")) else ln for ln in lines]
    report = "\n".join(wrapped) + "\n"
    print(report)
    if args.out:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
