"""The image data path (issue 15): decoding into the cache, reading it back, and what a
training run costs in memory and waiting, on a folder of images (photo-like JPEGs that
``--make`` writes, or any folder of class sub-folders; ``--what`` names it in the report).

``--make N`` first writes a synthetic folder of N JPEGs (``--classes`` sub-folders, about
500 x 375 px, smooth colour fields with shapes and noise, so they decode like photos), in
parallel. Then, for each size of ``--sizes``:

- decoding into a cold cache with 1, 2 and all workers (images/s; each into a fresh cache
  folder; not with ``--no-rates``), then loading the folder again from the warm cache (seconds);
- with ``--first-step``: the seconds from starting ``tripletlab train`` to its first step,
  on a cold cache (a fresh cache folder: the decoding included) and then on the warm one;
- one short ``tripletlab train`` run as a subprocess on the warm cache, its peak resident
  memory (``ru_maxrss`` of the child) and ``load_wait_share`` (the share of step time spent
  waiting for images) from its ``metrics.json``; and, for comparison, the peak memory of the
  same run on a tenth of the folder, so that the memory that grows with the dataset shows.

::

    python benchmarks/bench_images.py --make 20000 --folder /tmp/photos --sizes 64 224 \\
        --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine
from sections import write_section

from tripletlab.data import (
    IMAGE_SUFFIXES,
    CacheSettings,
    decode_files,
    default_workers,
    load_dataset,
)


def _photo(seed: int) -> Image.Image:
    """A 500 x 375 photo-like JPEG image: a blurred colour field, shapes, noise."""
    rng = np.random.default_rng(seed)
    w, h = 500, 375
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    noise = rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _write(job: tuple[Path, int]) -> None:
    path, seed = job
    _photo(seed).save(path, quality=88)


def make_folder(folder: Path, n: int, classes: int, workers: int) -> None:
    """N JPEGs in ``classes`` sub-folders of ``folder`` (skipped when already there)."""
    jobs = []
    for i in range(n):
        path = folder / f"c{i % classes:05d}" / f"{i:07d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((path, i))
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write, jobs, chunksize=64))
    print(f"made {len(jobs):,} JPEGs in {time.perf_counter() - t:.0f} s", flush=True)


def _files(folder: Path, fraction: float = 1.0) -> list[Path]:
    files = sorted(f for f in folder.glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return files[: max(2, int(len(files) * fraction))]


def warm_page_cache(folder: Path) -> None:
    """Read every file once, so that each decode rate is measured on files in the page cache
    (a cold disk measures the storage, and would favour whichever count runs second)."""
    for f in _files(folder):
        f.read_bytes()


def decode_rate(folder: Path, size: int, workers: int) -> float:
    """Images per second decoding the folder into a fresh cache."""
    files = _files(folder)
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        decode_files(folder, files, size, CacheSettings(Path(cache), workers))
        return len(files) / (time.perf_counter() - t)


def train_run(folder: Path, size: int, cache: Path, extra: list[str]) -> dict[str, float]:
    """One short training run as a subprocess: its wall time, peak memory, load wait."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tripletlab", "train", "--dataset", f"imagefolder:{folder}"]
        cmd += ["--image-size", str(size), "--out", out, "--quiet", "--no-report"]
        cmd += ["--cache-dir", str(cache), *extra]
        t = time.perf_counter()
        # A fresh process runs the command and reports the peak RSS of what it waited for
        # (KiB on Linux), so that no earlier child of this one is counted.
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, *cmd], check=True, capture_output=True, text=True
        )
        wall = time.perf_counter() - t
        peak_kib = int(done.stdout.strip().splitlines()[-1])
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {
        "wall": wall,
        "peak_mib": peak_kib / 1024,
        "load_wait_share": float(metrics.get("load_wait_share", float("nan"))),
    }


def first_step(folder: Path, size: int, cache: Path, extra: list[str]) -> float:
    """Seconds from starting ``tripletlab train`` to its first finished step (the first step
    record in the run's ``log.jsonl``); the run is stopped there."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tripletlab", "train", "--dataset", f"imagefolder:{folder}"]
        cmd += ["--image-size", str(size), "--out", out, "--quiet", "--no-report"]
        cmd += ["--cache-dir", str(cache), "--epochs", "1", "--steps-per-epoch", "1000", *extra]
        log = Path(out) / "log.jsonl"
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                if log.exists() and '"kind": "step"' in log.read_text():
                    break
                time.sleep(0.02)
            seconds = time.perf_counter() - t
            if proc.poll() is not None:
                raise RuntimeError(f"the run ended (exit {proc.returncode}) before a step")
        finally:
            proc.kill()
            proc.wait()
    return seconds


_MEASURE = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--make", type=int, default=0, help="write this many JPEGs first")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--sizes", type=int, nargs="+", default=[64])
    p.add_argument("--train-flags", default="--epochs 1 --steps-per-epoch 30")
    p.add_argument("--out", type=Path)
    p.add_argument("--decode-only", action="store_true", help="print the decode rates only")
    p.add_argument(
        "--no-rates",
        action="store_true",
        help="skip the decode rates with 1, 2 and all workers (each a cold cache of its own)",
    )
    p.add_argument("--what", default="synthetic 500 x 375 JPEGs", help="the folder, in words")
    p.add_argument(
        "--first-step",
        action="store_true",
        help="also the time to the first training step on a cold and on a warm cache",
    )
    args = p.parse_args()
    if args.no_rates and args.decode_only:
        p.error("--no-rates with --decode-only measures nothing; drop one")
    all_workers = default_workers()
    if args.make:
        make_folder(args.folder, args.make, args.classes, all_workers)
    n = len(_files(args.folder))
    classes = len({f.parent for f in _files(args.folder)})
    counts = sorted({1, 2, all_workers})  # each worker count once (all may be 2)
    lines = [
        "## Image data path: decoding, the cache, memory and loader wait (issue 15)",
        "",
        f"`python benchmarks/bench_images.py --folder F --sizes {' '.join(map(str, args.sizes))}"
        f' --train-flags "{args.train_flags}"{" --no-rates" if args.no_rates else ""}` on '
        f"{n:,} {args.what} in {classes:,} classes; {describe_machine()}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| size | "
        + " | ".join(f"decode, {w} worker{'s' if w > 1 else ''}" for w in counts)
        + " | warm load | train: peak RSS | on a tenth | load wait |"
        + (" first step, cold cache | warm cache |" if args.first_step else ""),
        "|" + " ---: |" * (len(counts) + 5 + 2 * args.first_step),
    ]
    warm_page_cache(args.folder)
    for size in args.sizes:
        rates = {} if args.no_rates else {w: decode_rate(args.folder, size, w) for w in counts}
        print(f"{size}px decode: {rates}", flush=True)
        if args.decode_only:
            continue
        cache = Path(tempfile.mkdtemp(prefix="bench-images-"))
        try:
            decode_files(args.folder, _files(args.folder), size, CacheSettings(cache, all_workers))
            t = time.perf_counter()
            load_dataset(f"imagefolder:{args.folder}", image_size=size, cache=CacheSettings(cache))
            warm = time.perf_counter() - t
            firsts = ""
            if args.first_step:
                cold_cache = Path(tempfile.mkdtemp(prefix="bench-images-cold-"))
                try:
                    cold = first_step(args.folder, size, cold_cache, [])
                    warm_first = first_step(args.folder, size, cold_cache, [])
                finally:
                    shutil.rmtree(cold_cache)
                firsts = f" {cold:.1f} s | {warm_first:.1f} s |"
                print(f"{size}px first step: {cold:.1f} s, then {warm_first:.1f} s", flush=True)
            full = train_run(args.folder, size, cache, args.train_flags.split())
            small_folder = Path(tempfile.mkdtemp(prefix="bench-images-tenth-"))
            for f in _files(args.folder, 0.1):
                (small_folder / f.parent.name).mkdir(exist_ok=True)
                os.symlink(f, small_folder / f.parent.name / f.name)
            tenth = _files(small_folder)
            decode_files(small_folder, tenth, size, CacheSettings(cache, all_workers))  # warm
            small = train_run(small_folder, size, cache, args.train_flags.split())
            shutil.rmtree(small_folder)
        finally:
            shutil.rmtree(cache)
        print(f"{size}px: warm {warm:.1f} s, full {full}, tenth {small}", flush=True)
        decoded = " | ".join(f"{rates[w]:,.0f}/s" if w in rates else "-" for w in counts)
        lines.append(
            f"| {size} | {decoded} | {warm:.1f} s | "
            f"{full['peak_mib']:,.0f} MiB | {small['peak_mib']:,.0f} MiB | "
            f"{full['load_wait_share']:.1%} |{firsts}"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out and not args.decode_only:
        write_section(args.out, report)


if __name__ == "__main__":
    main()
