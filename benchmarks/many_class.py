"""Unseen-class retrieval of ``tripletlab train`` on a many-class image folder (issue 14).

Each variant is one ``tripletlab train`` command, run as a user runs it (a subprocess, one
after the other, so that each wall time is the whole command on an otherwise idle machine:
loading, training, evaluation), with classes held out of training (``--unseen-classes``);
the table gives the held-out classes' leave-one-out precision@1 and MAP@R from
``metrics.json`` beside the baselines the run computes under the same protocol (raw pixels
with cosine distance, the untrained network), the best and last epochs and the wall time.

The data: ``benchmarks/glyphs.py`` builds many-class sets offline (class = character,
sample = font)::

    python benchmarks/glyphs.py --out data/glyphs                    # 2,856 classes, 3-5 images
    python benchmarks/many_class.py --data data/glyphs --unseen 950 --extra=--no-hflip \\
        --out docs/results.md
    python benchmarks/glyphs.py --preset tens --out data/glyphs60    # 60 classes, 40 images
    python benchmarks/many_class.py --data data/glyphs60 --unseen 20 --extra=--no-hflip \\
        --variant "defaults=" --variant "3x longer=--epochs 90" \\
        --variant "3x longer, no early stop=--epochs 90 --patience 0" --out docs/results.md

(``--no-hflip``: a mirrored glyph is another character, or none.)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine
from sections import write_section

DEFAULT_VARIANTS = ("defaults=", "memory 4096=--memory-size 4096")


@dataclass
class Row:
    """One variant's figures (None: not computed, shown as "-")."""

    name: str
    flags: str
    p1: float | None
    map_r: float | None
    raw_p1: float | None
    raw_map_r: float | None
    untrained_p1: float | None
    untrained_map_r: float | None
    best_epoch: int
    epochs: int
    wall: float


def _variant(text: str) -> tuple[str, str]:
    """``NAME=FLAGS`` -> ``(name, flags)``."""
    name, sep, flags = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=FLAGS")
    return name, flags


def run_variant(data: Path, unseen: int, extra: str, name: str, flags: str, out: Path) -> Row:
    """Train one variant in ``out`` and read its ``metrics.json``."""
    command = [sys.executable, "-m", "tripletlab", "train", "--dataset", f"imagefolder:{data}"]
    command += ["--unseen-classes", str(unseen), "--no-report", "--quiet", "--out", str(out)]
    command += shlex.split(extra) + shlex.split(flags)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    unseen_scores: dict[str, Any] = metrics["unseen"]
    base: dict[str, Any] = unseen_scores.get("baselines", {})
    raw, untrained = base.get("raw_pixels", {}), base.get("untrained", {})
    return Row(
        name=name,
        flags=flags,
        p1=unseen_scores.get("precision_at_1"),
        map_r=unseen_scores.get("map_at_r"),
        raw_p1=raw.get("precision_at_1"),
        raw_map_r=raw.get("map_at_r"),
        untrained_p1=untrained.get("precision_at_1"),
        untrained_map_r=untrained.get("map_at_r"),
        best_epoch=int(metrics["best_epoch"]),
        epochs=int(metrics.get("epochs_trained", metrics["best_epoch"])),
        wall=wall,
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _gain(x: float | None, base: float | None) -> str:
    return "-" if x is None or base is None else f"{x - base:+.3f}"


def _ratio(x: float | None, base: float | None) -> str:
    return "-" if x is None or not base else f"{x / base:.2f}x"


def report(args: argparse.Namespace, rows: list[Row], summary: str) -> str:
    """The markdown section of this benchmark."""
    command = "python benchmarks/many_class.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"## Unseen classes of a many-class folder: {args.name or args.data.name} (issue 14)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {describe_machine()}",
        f"- Date: {time.strftime('%Y-%m-%d')}",
        f"- Data: {summary}; the last {args.unseen} classes held out of training, every image of"
        " them a leave-one-out query; a fifth of the training classes validate (class-disjoint,"
        " the defaults).",
        f"- Every run: `tripletlab train --dataset imagefolder:DIR --unseen-classes {args.unseen}"
        f" {args.extra}` plus the variant's flags; wall = the whole command (load, train,"
        " evaluate), runs one after the other.",
        "",
        "| variant | flags | P@1 | MAP@R | raw pixels P@1 / MAP@R | untrained P@1 / MAP@R "
        "| P@1 - raw | MAP@R / raw | best / last epoch | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | `{r.flags or '(none)'}` | {_f(r.p1)} | {_f(r.map_r)} "
            f"| {_f(r.raw_p1)} / {_f(r.raw_map_r)} "
            f"| {_f(r.untrained_p1)} / {_f(r.untrained_map_r)} "
            f"| {_gain(r.p1, r.raw_p1)} | {_ratio(r.map_r, r.raw_map_r)} "
            f"| {r.best_epoch} / {r.epochs} | {r.wall / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def _summary(data: Path) -> str:
    """The folder's classes and images, from the manifest of glyphs.py or icons.py when there
    is one (icons.py writes its own one-line ``summary``)."""
    manifest = data / "manifest.json"
    if manifest.is_file():
        built = json.loads(manifest.read_text())
        if "summary" in built:
            return str(built["summary"])
        counts = built["counts"]
        return (
            f"`benchmarks/glyphs.py` glyphs, {counts['classes']:,} classes, "
            f"{counts['images']:,} images, {counts['fonts_used']:,} fonts"
        )
    classes = [d for d in data.iterdir() if d.is_dir()]
    images = sum(1 for d in classes for f in d.iterdir() if f.is_file())
    return f"{len(classes):,} classes, {images:,} images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an image folder")
    parser.add_argument("--unseen", type=int, required=True, help="--unseen-classes N")
    parser.add_argument("--extra", default="", help="flags every run gets")
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        help=f"NAME=FLAGS, repeatable (default: {', '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--out", type=Path, help="write the section into this markdown file")
    parser.add_argument(
        "--name",
        help="the section's name in its heading, so that several runs on one folder write "
        "sections of their own (default: the folder's name)",
    )
    args = parser.parse_args(argv)
    variants = args.variant or [_variant(v) for v in DEFAULT_VARIANTS]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(variants):
            row = run_variant(args.data, args.unseen, args.extra, name, flags, Path(tmp) / str(i))
            print(f"{name}: P@1 {_f(row.p1)} MAP@R {_f(row.map_r)} ({row.wall:.0f} s)", flush=True)
            rows.append(row)
            if args.out:  # after each variant: a long run stopped early keeps what it measured
                write_section(args.out, report(args, rows, _summary(args.data)))
    print(report(args, rows, _summary(args.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
