"""Icons: a many-class COLOUR image folder rendered from Debian icon themes, built offline.

A class is a freedesktop icon name (``edit-copy``, ``folder-music``, ``firefox``,
``applications-games``, ``text-x-python``), an image is that icon drawn by one theme: the
themes are those of :data:`THEMES`, from Debian packages (``apt-get download`` +
``dpkg-deb -x``, no root, no network beyond the Debian mirror). One theme draws an icon in
its own style (flat, glossy 3D, circles, squircles), so the images of a class share a
concept and not a look, as photos of one product do. The result is read by
``tripletlab train --dataset imagefolder:DIR``.

What is built, and why:

- **Images**: RGB PNG, ``--size`` pixels square (default 64), the icon composited over a
  plain ``--background`` (default white), cut to its alpha bounding box, scaled to fit
  ``size - 2 * margin`` with its aspect ratio kept (margin ``size // 16``) and centred: the
  padding conventions of the themes are not a cue.
- **One rendering per (theme, name)**: of the files a theme has for a name, the design
  drawn nearest 64 pixels among those of 48 or more (an SVG of a ``scalable`` folder counts
  as 64; an SVG is rasterised by ``rsvg-convert`` at 64 pixels), else the largest of 32 or
  more; smaller designs are not used (upscaled 16- and 24-pixel icons are mostly blur).
- **Left out**: ``-symbolic`` names and ``symbolic`` folders (monochrome glyphs),
  animations, panel and cursor folders; an alias (a symlink to a file of another name: the
  themes alias hundreds of names to one drawing, ``text-x-c++src`` -> ``text-x-generic``),
  so an image is a drawing made for its name; images with less than :data:`MIN_COLOUR` of
  their opaque pixels coloured (grey or monochrome drawings, see :func:`colourfulness`).
- **Distinct themes**: themes copy each other (Obsidian from Faenza, elementary-xfce from
  elementary, Moka from Faba); two images of a class count as one when their 16x16 drawings
  differ by a mean absolute difference (RGB in [0, 1]) below :data:`DUPLICATE_MAD`; a class
  samples its themes among distinct ones only, at most ``--per-class``.
- **Look-alike names**: two names are look-alikes when their drawings are near-identical
  (< :data:`ALIAS_MAD`) in at least :data:`ALIAS_SHARE` of the themes that draw both
  (copies made instead of symlinks: ``gtk-copy``/``edit-copy``); going through names in
  sorted order, one is dropped when it is a look-alike of one already kept.
- **Regime**: many classes, few images each (``--per-class 5``, at least ``--min-themes
  3``). Class folders are named ``NNNN-NAME`` with NNNN a seeded shuffle, so the classes a
  ``--unseen-classes N`` holds out (the last N in sorted order) are a random mix of
  contexts (applications, actions, places, mime types, devices) rather than the names
  late in the alphabet (``x-office-*``, ``zoom-*``).
- **Reproducible**: the same arguments and the same cached packages give the same files.
  The folder is built beside the output and renamed into place at the end; an existing
  output is replaced only if it holds a ``manifest.json`` (a previous build).

Needs ``dpkg-deb`` and ``apt-get`` (Debian or Ubuntu) and ``rsvg-convert``
(``apt-get install librsvg2-bin``). ``manifest.json`` lists the packages, the themes, the
classes with their themes and source files, the look-alike names dropped (with the name
kept for each), the counts and the options.

Usage:
    python benchmarks/icons.py --out ~/data/icons            # every name of >= 3 themes, 5 each
    tripletlab train --dataset imagefolder:$HOME/data/icons --unseen-classes 500
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from glyphs import distinct_fonts, download, extract
from machine import describe_machine
from PIL import Image

#: (package, theme folder under usr/share/icons, theme id): one theme per package (its dark,
#: light and recoloured variants are copies), in priority order: of two near-identical
#: images of a class the one of the earlier theme is the one a class may keep first.
THEMES: tuple[tuple[str, str, str], ...] = (
    ("tango-icon-theme", "Tango", "tango"),
    ("gnome-icon-theme", "gnome", "gnome"),
    ("oxygen-icon-theme", "oxygen", "oxygen"),
    ("breeze-icon-theme", "breeze", "breeze"),
    ("adwaita-icon-theme", "Adwaita", "adwaita"),
    ("papirus-icon-theme", "Papirus", "papirus"),
    ("elementary-icon-theme", "elementary", "elementary"),
    ("elementary-xfce-icon-theme", "elementary-xfce", "elementary-xfce"),
    ("faenza-icon-theme", "Faenza", "faenza"),
    ("obsidian-icon-theme", "Obsidian", "obsidian"),
    ("numix-icon-theme", "Numix", "numix"),
    ("numix-icon-theme-circle", "Numix-Circle", "numix-circle"),
    ("faba-icon-theme", "Faba", "faba"),
    ("moka-icon-theme", "Moka", "moka"),
    ("paper-icon-theme", "Paper", "paper"),
    ("yaru-theme-icon", "Yaru", "yaru"),
    ("mate-icon-theme", "mate", "mate"),
    ("suru-icon-theme", "suru", "suru"),
    ("deepin-icon-theme", "bloom", "deepin-bloom"),
    ("mint-y-icons", "Mint-Y", "mint-y"),
    ("gnome-colors-common", "gnome-colors-common", "gnome-colors"),
    ("gnome-icon-theme-gartoon", "gartoon", "gartoon"),
    ("gnome-icon-theme-nuovo", "Nuovo", "nuovo"),
    ("gnome-icon-theme-suede", "Suede", "suede"),
    ("lxde-icon-theme", "nuoveXT2", "nuovext2"),
)

#: Folders whose icons are left out (any path part, lower case).
SKIPPED_PARTS = frozenset({"symbolic", "animations", "panel", "cursors", "legacy-symbolic"})
SUFFIXES = (".png", ".svg", ".svgz")
#: A pixel is coloured when its channels span more than this (RGB in [0, 1]).
CHROMA = 0.12
#: An image needs at least this share of its opaque pixels coloured.
MIN_COLOUR = 0.05
#: Two images of one class closer than this 16x16 RGB mean absolute difference are copies.
DUPLICATE_MAD = 0.02
#: Two names' drawings in one theme closer than this 16x16 RGB mean absolute difference are
#: near-identical; in at least ALIAS_SHARE of the themes they share, the names look alike.
ALIAS_MAD = 0.02
ALIAS_SHARE = 0.5
COMPARE_SIZE = 16
RENDER = 64  # pixels an SVG is rasterised at and the size a design is ranked against
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?(?:@(\d+)x)?$")


class ToolMissing(SystemExit):
    """A command-line tool this script needs is not installed."""


def need_tools() -> None:
    """Exit with how to install them when ``apt-get``, ``dpkg-deb`` or ``rsvg-convert`` is
    missing."""
    hints = {
        "apt-get": "a Debian or Ubuntu system (apt) is needed to download the icon themes",
        "dpkg-deb": "a Debian or Ubuntu system (dpkg) is needed to extract the packages",
        "rsvg-convert": "install it with `apt-get install librsvg2-bin` (SVG rasteriser)",
    }
    missing = [f"{tool}: {hint}" for tool, hint in hints.items() if shutil.which(tool) is None]
    if missing:
        raise ToolMissing("icons.py needs tools that are not installed:\n  " + "\n  ".join(missing))


@dataclass(frozen=True)
class Icon:
    """The file a theme draws ``name`` with: ``path`` (its real path), ``design`` its
    nominal size in pixels (``RENDER`` for a scalable SVG)."""

    theme: str
    name: str
    path: Path
    design: int
    rel: str


def _design(parts: tuple[str, ...]) -> int | None:
    """The nominal size a path's folders give (``48x48``, ``48``, ``24x24@2x`` -> 48,
    ``scalable`` -> RENDER), None when none does."""
    for part in reversed(parts):
        if part == "scalable":
            return RENDER
        m = _SIZE.match(part)
        if m:
            return int(m.group(1)) * int(m.group(3) or 1)
    return None


def _rank(icon: Icon) -> tuple[int, float]:
    """Smaller is better: designs of 48 or more first, nearest RENDER; then the largest."""
    if icon.design >= 48:
        return 0, abs(math.log(icon.design / RENDER))
    return 1, -icon.design


def scan_theme(theme: str, root: Path) -> dict[str, Icon]:
    """{name: the one file ``theme`` draws it with} for the icons under ``root`` (see the
    module for what is left out and which design is chosen)."""
    best: dict[str, Icon] = {}
    for dirpath, _, filenames in os.walk(root):
        parts = Path(dirpath).relative_to(root).parts
        if any(p.lower() in SKIPPED_PARTS for p in parts):
            continue
        design = _design(parts)
        for filename in filenames:
            path = Path(dirpath) / filename
            suffix = path.suffix.lower()
            if suffix not in SUFFIXES:
                continue
            name = filename[: -len(suffix)]
            if name.endswith("-symbolic") or name.endswith(".symbolic"):
                continue
            real = path.resolve()
            if not real.is_file():
                continue
            real_suffix = real.suffix.lower()
            if real.name[: -len(real_suffix)] != name:
                continue  # an alias of another name
            size = design
            if size is None:
                size = RENDER if suffix != ".png" else 0
            if size < 32:
                continue
            rel = path.relative_to(root).as_posix()
            icon = Icon(theme, name, real, size, rel)
            old = best.get(name)
            key = (_rank(icon), suffix == ".png", rel)
            if old is None or key < (_rank(old), old.path.suffix.lower() == ".png", old.rel):
                best[name] = icon
    return best


# --- drawing --------------------------------------------------------------------------------


def rgba(icon: Icon) -> Image.Image | None:
    """The icon as an RGBA image (an SVG rasterised at RENDER pixels), None if unreadable."""
    try:
        if icon.path.suffix.lower() == ".png":
            with Image.open(icon.path) as opened:
                return opened.convert("RGBA")
        done = subprocess.run(
            ["rsvg-convert", "-w", str(RENDER), "-h", str(RENDER), "-a", str(icon.path)],
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0 or not done.stdout:
            return None
        return Image.open(io.BytesIO(done.stdout)).convert("RGBA")
    except (OSError, ValueError, SyntaxError, subprocess.TimeoutExpired):
        return None


def colourfulness(img: Image.Image) -> float:
    """The share of the opaque pixels (alpha > 0.5) whose RGB channels span more than
    :data:`CHROMA`; 0 when none is opaque."""
    x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 4)
    opaque = x[..., 3] > 0.5
    if not opaque.any():
        return 0.0
    span = x[..., :3].max(axis=-1) - x[..., :3].min(axis=-1)  # (H, W)
    return float((span[opaque] > CHROMA).mean())


def fit(img: Image.Image, size: int, background: tuple[int, int, int]) -> Image.Image | None:
    """``img`` cut to its alpha box, scaled to fit ``size - 2 * (size // 16)`` pixels with its
    aspect ratio kept, composited centred over ``background``; None when nothing is opaque."""
    box = img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    ink = img.crop(box)
    inner = size - 2 * (size // 16)
    w, h = ink.size
    scale = inner / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    ink = ink.resize((nw, nh), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (size, size), background)
    out.paste(ink, ((size - nw) // 2, (size - nh) // 2), ink)
    return out


def small(img: Image.Image) -> npt.NDArray[np.float32]:
    """(16 * 16 * 3,) RGB in [0, 1]: the drawing compared for copies and look-alikes."""
    x = img.resize((COMPARE_SIZE, COMPARE_SIZE), Image.Resampling.BILINEAR)
    return (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1)


# --- choosing classes and themes --------------------------------------------------------------


def drop_lookalikes(
    names: list[str], drawings: dict[str, list[tuple[int, npt.NDArray[np.float32]]]], n: int
) -> tuple[list[str], dict[str, str]]:
    """``names`` (sorted) without each one whose drawings are near-identical to those of a
    name kept before it in at least :data:`ALIAS_SHARE` of the themes drawing both; and
    {dropped name: the first kept name it looks like}."""
    index = {name: i for i, name in enumerate(names)}
    per_theme: list[list[tuple[int, npt.NDArray[np.float32]]]] = [[] for _ in range(n)]
    for name in names:
        for t, d in drawings[name]:
            per_theme[t].append((index[name], d))
    shared = torch.zeros(len(names), len(names), dtype=torch.int32)  # (C, C)
    close = torch.zeros(len(names), len(names), dtype=torch.int32)  # (C, C)
    for items in per_theme:
        if len(items) < 2:
            continue
        idx = torch.tensor([i for i, _ in items])
        x = torch.from_numpy(np.stack([d for _, d in items]))  # (m, 768)
        mad = torch.cdist(x, x, p=1) / x.shape[1]  # (m, m)
        grid = (idx[:, None], idx[None, :])
        shared[grid] += 1
        close[grid] += (mad < ALIAS_MAD).to(torch.int32)
    alike = (close.double() >= ALIAS_SHARE * shared.double()) & (shared > 0)  # (C, C)
    kept: list[int] = []
    dropped: dict[str, str] = {}
    for i in range(len(names)):
        hits = alike[i, kept].nonzero().flatten().tolist() if kept else []
        if hits:
            dropped[names[i]] = names[kept[hits[0]]]
        else:
            kept.append(i)
    return [names[i] for i in kept], dropped


def _background(text: str) -> tuple[int, int, int]:
    named = {"white": (255, 255, 255), "grey": (128, 128, 128), "black": (0, 0, 0)}
    if text in named:
        return named[text]
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--background {text!r}: white, grey, black or #RRGGBB")
    v = int(m.group(1), 16)
    return v >> 16, (v >> 8) & 255, v & 255


# --- the build ------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> dict[str, object]:
    """Build the image folder ``args.out`` (see the module); returns the manifest."""
    need_tools()
    cache: Path = args.cache.expanduser()
    packages = tuple(dict.fromkeys(p for p, _, _ in THEMES))
    debs = download(packages, cache / "debs")
    folders = {p: extract(deb, cache / "extracted") for p, deb in debs.items()}
    themes: list[tuple[str, str, Path]] = []  # (package, id, root)
    for package, folder, ident in THEMES:
        root = folders[package] / "usr/share/icons" / folder if package in folders else None
        if root is not None and root.is_dir():
            themes.append((package, ident, root))
        elif package in folders:
            print(f"warning: {package} has no usr/share/icons/{folder}, skipped", file=sys.stderr)
    scanned = [scan_theme(ident, root) for _, ident, root in themes]
    drawers: dict[str, list[int]] = {}
    for t, icons in enumerate(scanned):
        for name in icons:
            drawers.setdefault(name, []).append(t)
    wanted = sorted(name for name, ts in drawers.items() if len(ts) >= args.min_themes)
    print(
        f"{len(themes)} themes; {len(drawers)} icon names, {len(wanted)} drawn by "
        f">= {args.min_themes} themes: rendering {sum(len(drawers[n]) for n in wanted)} icons",
        flush=True,
    )

    start = time.perf_counter()
    jobs = [(name, t) for name in wanted for t in drawers[name]]
    images: dict[tuple[str, int], Image.Image] = {}
    colour: dict[tuple[str, int], float] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n_done, ((name, t), img) in enumerate(
            zip(jobs, pool.map(lambda job: rgba(scanned[job[1]][job[0]]), jobs), strict=True),
            start=1,
        ):
            if img is not None:
                fitted = fit(img, args.size, args.background)
                if fitted is not None:
                    images[(name, t)] = fitted
                    colour[(name, t)] = colourfulness(img)
            if n_done % 5000 == 0:
                print(f"  rendered {n_done}/{len(jobs)}, {time.perf_counter() - start:.0f} s")
    coloured = {k: v for k, v in images.items() if colour[k] >= args.min_colour}
    drawings: dict[str, list[tuple[int, npt.NDArray[np.float32]]]] = {name: [] for name in wanted}
    for (name, t), img in coloured.items():
        drawings[name].append((t, small(img)))
    for d in drawings.values():
        d.sort(key=lambda item: item[0])
    chosen = {
        name: distinct_fonts(d, random.Random(f"{args.seed}-{name}"), args.per_class, DUPLICATE_MAD)
        for name, d in drawings.items()
    }
    enough = sorted(name for name, ts in chosen.items() if len(ts) >= args.min_themes)
    kept, lookalikes = drop_lookalikes(enough, drawings, len(themes))
    print(
        f"{len(images)} icons drawn, {len(coloured)} coloured (>= {args.min_colour:.0%} of "
        f"pixels); {len(enough)} names with >= {args.min_themes} distinct themes, {len(kept)} "
        "after dropping look-alike names",
        flush=True,
    )
    if args.classes is not None and args.classes < len(kept):
        kept = sorted(random.Random(f"{args.seed}-classes").sample(kept, args.classes))
    order = list(kept)
    random.Random(f"{args.seed}-order").shuffle(order)
    width = max(4, len(str(len(order))))

    out: Path = args.out.expanduser()
    if out.exists() and not (out / "manifest.json").is_file():
        raise SystemExit(f"{out} exists and is not an icons build (no manifest.json); not replaced")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    classes: list[dict[str, object]] = []
    per_theme: dict[str, int] = {}
    n_images = 0
    for n, name in enumerate(order, start=1):
        folder = f"{n:0{width}d}-{name}"
        (tmp / folder).mkdir()
        picked = sorted(chosen[name])
        for t in picked:
            ident = themes[t][1]
            images[(name, t)].save(tmp / folder / f"{ident}.png")
            per_theme[ident] = per_theme.get(ident, 0) + 1
        n_images += len(picked)
        classes.append(
            {
                "folder": folder,
                "name": name,
                "themes": {themes[t][1]: scanned[t][name].rel for t in picked},
            }
        )
    manifest: dict[str, object] = {
        "command": " ".join(["python benchmarks/icons.py", *sys.argv[1:]]),
        "options": {
            "size": args.size,
            "per_class": args.per_class,
            "classes": args.classes,
            "min_themes": args.min_themes,
            "min_colour": args.min_colour,
            "background": "#{:02x}{:02x}{:02x}".format(*args.background),
            "seed": args.seed,
            "duplicate_mad": DUPLICATE_MAD,
            "alias_mad": ALIAS_MAD,
            "alias_share": ALIAS_SHARE,
        },
        "counts": {
            "packages": len(debs),
            "themes": len(themes),
            "themes_used": len(per_theme),
            "names_seen": len(drawers),
            "classes": len(classes),
            "images": n_images,
            "images_per_theme": dict(sorted(per_theme.items())),
        },
        "summary": (
            f"`benchmarks/icons.py` icons (class = icon name, image = theme), "
            f"{len(classes):,} classes, {n_images:,} colour images, {len(per_theme)} themes"
        ),
        "packages": {p: deb.name for p, deb in debs.items()},
        "themes": [{"id": ident, "package": p, "folder": root.name} for p, ident, root in themes],
        "classes": classes,
        "lookalikes_dropped": lookalikes,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the image folder to build")
    parser.add_argument("--classes", type=int, help="keep this many classes (seeded sample)")
    parser.add_argument("--per-class", type=int, default=5, help="at most this many themes")
    parser.add_argument(
        "--min-themes", type=int, default=3, help="drop names with fewer distinct themes"
    )
    parser.add_argument(
        "--min-colour",
        type=float,
        default=MIN_COLOUR,
        help="drop images with less than this share of coloured opaque pixels (0: keep all)",
    )
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument(
        "--background",
        type=_background,
        default=(255, 255, 255),
        help="white (default), grey, black or #RRGGBB",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="rsvg-convert processes at once")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("~/.cache/tripletlab/icons"),
        help="where the .deb files and their extracted themes are kept",
    )
    args = parser.parse_args()
    if args.min_themes < 1 or args.per_class < args.min_themes or args.size < 8:
        parser.error("need 1 <= --min-themes <= --per-class and --size >= 8")
    start = time.perf_counter()
    manifest = build(args)
    print(f"- Command: {manifest['command']}")
    print(f"- Machine: {describe_machine()}")
    print(f"- Counts: {json.dumps(manifest['counts'], ensure_ascii=False)}")
    print(f"- Wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
