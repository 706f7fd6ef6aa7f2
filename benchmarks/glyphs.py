"""Glyphs: a many-class image folder rendered from Debian font packages, built offline.

A class is a character (a letter or digit of one of :data:`BLOCKS`: Latin, Greek, Cyrillic,
Armenian, Georgian, Hebrew, Arabic, Ethiopic, Cherokee, Canadian syllabics, Indic and
South-East Asian scripts, ...), an image is that character drawn by one font: the fonts come
from the Debian packages in :data:`PACKAGES` (``apt-get download`` + ``dpkg-deb -x``, no root,
no network beyond the Debian mirror; every face of a ``.ttc``; a weight or an italic is a font
of its own). The result is read by ``tripletlab train --dataset imagefolder:DIR``.

What is built, and why:

- **Images**: grayscale PNG, ``--size`` pixels square (default 32), the glyph WHITE ON BLACK
  (as MNIST and Fashion-MNIST, the package's default data), cut to its ink bounding box,
  scaled to fit ``size - 2 * margin`` with its aspect ratio kept (margin ``size // 16``) and
  centred. Scaling to fit drops absolute size, so ``o``/``O`` or ``c``/``C`` draw alike: the
  homoglyph filter below removes one of each such pair.
- **Characters dropped**: anything but letters (Unicode categories Lu, Ll, Lt, Lo) and
  decimal digits (Nd), so whitespace, controls, combining marks and modifier letters; a
  (character, font) pair whose glyph is missing from the font's cmap, maps to ``.notdef``,
  draws nothing, draws less than :data:`MIN_INK` of the em, or draws the same as the font's
  ``.notdef`` box; then characters with fewer than ``--min-fonts`` distinct fonts.
- **Distinct fonts**: two fonts of a character count as one when their 16x16 drawings differ
  by a mean absolute difference below :data:`DUPLICATE_MAD` (Liberation 1 and 2, TeX Gyre
  and the URW fonts it derives from, Noto and Noto UI); a class samples its fonts among
  distinct ones only.
- **Homoglyphs**: every character is drawn at 16x16 in every font that has it; two
  characters are near-identical in a font when their drawings differ by a mean absolute
  difference (pixels in [0, 1]) below :data:`HOMOGLYPH_MAD`, and are homoglyphs when they
  are near-identical in at least :data:`HOMOGLYPH_SHARE` of the fonts they share. Going
  through the characters in code-point order, one is dropped when it is a homoglyph of one
  already kept: Latin ``A`` stays and Greek Alpha and Cyrillic A go; ``0`` stays and ``O``
  goes where fonts draw them alike; ``C`` stays and ``c`` goes (scaled to fit, they match).
- **Regime**: many classes, few images each (``--per-class 5``), and the held-out classes
  of ``--unseen-classes N`` never seen in training. Class folders are named
  ``NNNN-U+XXXX`` with NNNN a seeded shuffle, so sorted folder names (the order class ids
  follow, the last N held out) are a random mix of scripts: the held-out classes then
  measure generalisation to new characters, with every script seen in training. Holding out
  whole scripts would ask a different question (transfer to an unseen writing system) whose
  answer depends on which scripts fell out; a mix gives a steadier many-class estimate.
- **Presets**: ``--preset many`` (default: all classes, 5 fonts each, at least 3) and
  ``--preset tens`` (60 classes, 40 fonts each, drawn among characters with 40 distinct
  fonts: a "tens of classes, many images each" set like a folder of drawings).
- **Reproducible**: the same arguments and the same cached packages give the same files
  (seeded choices; no dates in ``manifest.json``). The folder is built beside the output
  and renamed into place at the end; an existing output is replaced only if it holds a
  ``manifest.json`` (a previous build).

``manifest.json`` lists the packages (and .deb files), the fonts used with their packages,
the classes (folder, code point, name, script) with their fonts, the counts and the options.

Usage:
    python benchmarks/glyphs.py --out ~/data/glyphs                  # many classes, 5 each
    python benchmarks/glyphs.py --preset tens --out ~/data/glyphs60  # 60 classes, 40 each
    tripletlab train --dataset imagefolder:$HOME/data/glyphs --unseen-classes 950
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from fontTools.ttLib import TTCollection, TTFont, TTLibError  # type: ignore[import-untyped]
from machine import describe_machine
from PIL import Image, ImageDraw, ImageFont

#: The Debian packages the fonts come from (about 120 MB of .deb in all), in priority order:
#: of two fonts with the same PostScript name the first package's is kept. A package the
#: mirror lacks is skipped with a warning.
PACKAGES: tuple[str, ...] = (
    # many scripts at once
    "fonts-noto-core",  # Noto Sans/Serif for ~150 scripts, regular and bold
    "fonts-noto-ui-core",
    "fonts-noto-mono",
    "fonts-dejavu-core",  # Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew, Arabic, UCAS
    "fonts-dejavu-extra",
    "fonts-freefont-ttf",  # Latin to Ethiopic, Cherokee, Indic, Thai
    "fonts-mph-2b-damase",  # many small scripts
    "fonts-liberation2",
    "fonts-liberation",
    "fonts-croscore",
    "fonts-crosextra-carlito",
    "fonts-crosextra-caladea",
    # Latin, Greek, Cyrillic text faces
    "fonts-urw-base35",
    "fonts-texgyre",
    "fonts-cmu",
    "fonts-lmodern",
    "fonts-ebgaramond",
    "fonts-linuxlibertine",
    "fonts-sil-charis",
    "fonts-sil-gentiumplus",
    "fonts-sil-andika",
    "fonts-sil-doulos",
    "fonts-paratype",
    "fonts-roboto-unhinted",
    "fonts-open-sans",
    "fonts-lato",
    "fonts-inter",
    "fonts-firacode",
    "fonts-hack",
    "fonts-go",
    "fonts-cantarell",
    "fonts-oldstandard",
    "fonts-vollkorn",
    "fonts-junicode",
    "fonts-stix",
    "fonts-comfortaa",
    "fonts-jura",
    "fonts-tuffy",
    "fonts-linex",
    "fonts-averia-gwf",
    "fonts-cabin",
    "fonts-fanwood",
    "fonts-league-spartan",
    "fonts-anonymous-pro",
    "fonts-humor-sans",
    "fonts-dkg-handwriting",
    "fonts-femkeklaver",
    "fonts-breip",
    "fonts-levien-museum",
    "fonts-adf-accanthis",
    "fonts-adf-baskervald",
    "fonts-adf-berenis",
    "fonts-adf-gillius",
    "fonts-adf-ikarius",
    "fonts-adf-libris",
    "fonts-adf-romande",
    "fonts-adf-switzera",
    "fonts-adf-tribun",
    "fonts-adf-universalis",
    "fonts-adf-verana",
    # Greek
    "fonts-gfs-didot",
    "fonts-gfs-didot-classic",
    "fonts-gfs-artemisia",
    "fonts-gfs-neohellenic",
    "fonts-gfs-porson",
    "fonts-gfs-complutum",
    "fonts-gfs-bodoni-classic",
    "fonts-gfs-baskerville",
    # Georgian, Ethiopic, Hebrew, Arabic
    "fonts-bpg-georgian",
    "fonts-sil-abyssinica",
    "fonts-sil-ezra",
    "fonts-kacst",
    "fonts-hosny-amiri",
    "fonts-sil-scheherazade",
    "fonts-sil-lateef",
    # Indic
    "fonts-lohit-deva",
    "fonts-lohit-beng-bengali",
    "fonts-lohit-taml",
    "fonts-lohit-taml-classical",
    "fonts-samyak-deva",
    "fonts-gargi",
    "fonts-sarai",
    "fonts-nakula",
    "fonts-sahadeva",
    "fonts-kalapi",
    "fonts-deva-extra",
    "fonts-beng-extra",
    "fonts-taml-tamu",
    "fonts-taml-tscu",
    "fonts-sil-annapurna",
    "fonts-yrsa-rasa",
    # Thai
    "fonts-tlwg-garuda-ttf",
    "fonts-tlwg-kinnari-ttf",
    "fonts-tlwg-laksaman-ttf",
    "fonts-tlwg-loma-ttf",
    "fonts-tlwg-mono-ttf",
    "fonts-tlwg-norasi-ttf",
    "fonts-tlwg-purisa-ttf",
    "fonts-tlwg-sawasdee-ttf",
    "fonts-tlwg-typewriter-ttf",
    "fonts-tlwg-typist-ttf",
    "fonts-tlwg-typo-ttf",
    "fonts-tlwg-umpush-ttf",
    "fonts-tlwg-waree-ttf",
    # Khmer, Tibetan
    "fonts-khmeros",
    "fonts-sil-mondulkiri",
    "fonts-tibetan-machine",
    "fonts-dzongkha",
)

#: The Unicode blocks characters are drawn from, as (script, first, last) code points; of
#: each only letters and decimal digits are candidates. Left out: Latin Extended Additional
#: and Greek Extended (precomposed letters with stacked accents: 600 near-copies of base
#: letters, lost at 32 pixels), CJK and Hangul (thousands of classes, few fonts here).
BLOCKS: tuple[tuple[str, int, int], ...] = (
    ("Digits", 0x0030, 0x0039),
    ("Latin", 0x0041, 0x007A),
    ("Latin", 0x00C0, 0x024F),
    ("Latin", 0x0250, 0x02AF),  # IPA
    ("Greek", 0x0370, 0x03FF),
    ("Cyrillic", 0x0400, 0x052F),
    ("Armenian", 0x0530, 0x058F),
    ("Hebrew", 0x05D0, 0x05EA),
    ("Arabic", 0x0620, 0x064A),
    ("Arabic", 0x0660, 0x0669),
    ("Devanagari", 0x0900, 0x097F),
    ("Bengali", 0x0980, 0x09FF),
    ("Gurmukhi", 0x0A00, 0x0A7F),
    ("Gujarati", 0x0A80, 0x0AFF),
    ("Oriya", 0x0B00, 0x0B7F),
    ("Tamil", 0x0B80, 0x0BFF),
    ("Telugu", 0x0C00, 0x0C7F),
    ("Kannada", 0x0C80, 0x0CFF),
    ("Malayalam", 0x0D00, 0x0D7F),
    ("Sinhala", 0x0D80, 0x0DFF),
    ("Thai", 0x0E00, 0x0E7F),
    ("Lao", 0x0E80, 0x0EFF),
    ("Tibetan", 0x0F00, 0x0FFF),
    ("Myanmar", 0x1000, 0x109F),
    ("Georgian", 0x10A0, 0x10FF),
    ("Georgian", 0x1C90, 0x1CBF),
    ("Ethiopic", 0x1200, 0x137F),
    ("Cherokee", 0x13A0, 0x13FF),
    ("Cherokee", 0xAB70, 0xABBF),
    ("Canadian syllabics", 0x1400, 0x167F),
    ("Ogham", 0x1680, 0x169F),
    ("Runic", 0x16A0, 0x16FF),
    ("Khmer", 0x1780, 0x17FF),
    ("Tifinagh", 0x2D30, 0x2D7F),
)
_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lo", "Nd"})

#: Two drawings of different characters in one font at 16x16 (pixels in [0, 1]) closer than
#: this mean absolute difference are near-identical. Calibrated on this font set (median
#: over shared fonts, share of them below 0.03): look-alikes A/Α/А, o/о, p/р, x/х, ё/ë have
#: median 0 and are near-identical in 75-95% of their fonts; distinct letters b/h (0.08, 1%),
#: E/F (0.07, 4%), c/C (0.10, 1%), 0/O (0.21, 0%), n/h (0.29, 0%) are well apart.
HOMOGLYPH_MAD = 0.03
#: Near-identical in at least this share of the fonts two characters share: homoglyphs.
#: Borderline pairs at 0.25: l/I (34%: alike in sans-serif fonts) and accented capitals
#: whose accents blur at 16 pixels (Ĩ/Ї 47%, Í/ĺ 40%) go; ƒ/f (20%), Å/Ä (11%) stay.
HOMOGLYPH_SHARE = 0.25
#: Two fonts draw a character the same (one counts) below this 16x16 mean absolute difference.
DUPLICATE_MAD = 0.012
#: A drawing whose ink box is smaller than this fraction of the em on both sides is dropped.
MIN_INK = 0.06
COMPARE_SIZE = 16  # the side of the drawings compared
RENDER_EM = 96  # pixels per em when drawing (before scaling to fit)


@dataclass(frozen=True)
class Font:
    """One face of a font file: ``package``'s ``file`` (relative to the package's root),
    face ``face`` of a collection (0 otherwise); ``ident`` names its images."""

    package: str
    path: Path
    file: str
    face: int
    postscript: str
    codepoints: frozenset[int]
    ident: str


def candidates() -> dict[int, str]:
    """{code point: script} for the letters and decimal digits of :data:`BLOCKS`."""
    out: dict[int, str] = {}
    for script, first, last in BLOCKS:
        for cp in range(first, last + 1):
            if unicodedata.category(chr(cp)) in _CATEGORIES:
                out.setdefault(cp, script)
    return out


# --- packages and fonts ---------------------------------------------------------------------


def download(packages: tuple[str, ...], cache: Path) -> dict[str, Path]:
    """{package: its .deb in ``cache``}, downloading with ``apt-get download`` what is not
    cached; a package that cannot be downloaded is skipped with a warning."""
    cache.mkdir(parents=True, exist_ok=True)

    def cached() -> dict[str, Path]:
        found: dict[str, Path] = {}
        for deb in sorted(cache.glob("*.deb")):
            found.setdefault(deb.name.split("_", 1)[0], deb)
        return found

    missing = [p for p in packages if p not in cached()]
    if missing:
        print(f"apt-get download: {len(missing)} package(s) into {cache}", flush=True)
        one_go = subprocess.run(
            ["apt-get", "download", *missing], cwd=cache, capture_output=True, text=True
        )
        if one_go.returncode != 0:  # one unknown package fails them all: one at a time
            for p in missing:
                subprocess.run(["apt-get", "download", p], cwd=cache, capture_output=True)
    debs = cached()
    for p in packages:
        if p not in debs:
            warnings.warn(f"{p}: not downloadable (apt-get download), skipped", stacklevel=2)
    return {p: debs[p] for p in packages if p in debs}


def extract(deb: Path, root: Path) -> Path:
    """The folder ``deb`` is extracted in (``dpkg-deb -x``, once per .deb file)."""
    target = root / deb.stem
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        partial.rename(target)
    return target


def _faces(path: Path) -> Iterator[tuple[int, TTFont]]:
    if path.suffix.lower() == ".ttc":
        collection = TTCollection(str(path), lazy=True)
        yield from enumerate(collection.fonts)
    else:
        yield 0, TTFont(str(path), lazy=True)


def read_fonts(folders: dict[str, Path], wanted: set[int]) -> list[Font]:
    """The faces of the .ttf/.otf/.ttc files under each package's folder, in package then
    path order, with the code points of ``wanted`` their cmap maps to a real glyph; a face
    whose PostScript name an earlier one has, or that has none of ``wanted``, is left out."""
    fonts: list[Font] = []
    names: set[str] = set()
    idents: set[str] = set()
    for package, folder in folders.items():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".ttf", ".otf", ".ttc"})
        for path in files:
            try:
                faces = list(_faces(path))
            except (TTLibError, OSError, AssertionError) as e:
                warnings.warn(f"{path}: unreadable font ({e}), skipped", stacklevel=2)
                continue
            for face, tt in faces:
                try:
                    cmap = tt.getBestCmap() or {}
                    postscript = str(tt["name"].getDebugName(6) or f"{path.stem}-{face}")
                except (TTLibError, KeyError, AssertionError):
                    continue
                codepoints = frozenset(
                    cp for cp, glyph in cmap.items() if cp in wanted and glyph != ".notdef"
                )
                if not codepoints or postscript in names:
                    continue
                names.add(postscript)
                stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)
                ident = stem if path.suffix.lower() != ".ttc" else f"{stem}-{face}"
                if ident in idents:
                    ident = f"{package}-{ident}"
                idents.add(ident)
                rel = path.relative_to(folder).as_posix()
                fonts.append(Font(package, path, rel, face, postscript, codepoints, ident))
    return fonts


# --- drawing --------------------------------------------------------------------------------


def _load(font: Font, em: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(
        str(font.path), em, index=font.face, layout_engine=ImageFont.Layout.BASIC
    )


def glyph(face: ImageFont.FreeTypeFont, char: str, em: int) -> Image.Image | None:
    """``char`` drawn white on black by ``face`` (at ``em`` pixels per em), cut to its ink
    box; None when it draws nothing or less than :data:`MIN_INK` of the em both ways."""
    left, top, right, bottom = (int(v) for v in face.getbbox(char))
    if right <= left or bottom <= top:
        return None
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=face, fill=255)
    box = canvas.getbbox()
    if box is None or max(box[2] - box[0], box[3] - box[1]) < MIN_INK * em:
        return None
    return canvas.crop(box)


def fit(ink: Image.Image, size: int) -> npt.NDArray[np.uint8]:
    """``ink`` scaled to fit ``size - 2 * (size // 16)`` pixels, aspect ratio kept, centred
    on a black (size, size) square."""
    inner = size - 2 * (size // 16)
    w, h = ink.size
    scale = inner / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("L", (size, size), 0)
    out.paste(ink.resize((nw, nh), Image.Resampling.LANCZOS), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out, dtype=np.uint8)


def _missing_char(font: Font) -> str:
    """A character ``font`` lacks, drawn as its .notdef glyph."""
    for cp in (0x10FFFD, 0xFFFD, 0xE000, 0x0378):
        if cp not in font.codepoints:
            return chr(cp)
    return chr(0x10FFFD)


def small_drawings(
    fonts: list[Font], chars: dict[int, str]
) -> dict[int, list[tuple[int, npt.NDArray[np.float32]]]]:
    """{code point: [(font index, (16, 16) drawing in [0, 1])]} for every font that has a
    candidate character and draws it (not empty, not its .notdef box)."""
    out: dict[int, list[tuple[int, npt.NDArray[np.float32]]]] = {cp: [] for cp in chars}
    start = time.perf_counter()
    for i, font in enumerate(fonts):
        try:
            face = _load(font, RENDER_EM)
        except OSError as e:
            warnings.warn(f"{font.path}: FreeType cannot open it ({e}), skipped", stacklevel=2)
            continue
        notdef_ink = glyph(face, _missing_char(font), RENDER_EM)
        notdef = None if notdef_ink is None else fit(notdef_ink, COMPARE_SIZE) / np.float32(255)
        for cp in sorted(font.codepoints):
            ink = glyph(face, chr(cp), RENDER_EM)
            if ink is None:
                continue
            small = (fit(ink, COMPARE_SIZE) / np.float32(255)).astype(np.float32)
            if notdef is not None and np.abs(small - notdef).mean() < DUPLICATE_MAD:
                continue
            out[cp].append((i, small))
        if (i + 1) % 100 == 0:
            print(f"  drew {i + 1}/{len(fonts)} fonts, {time.perf_counter() - start:.0f} s")
    return out


# --- choosing classes and fonts ---------------------------------------------------------------


def distinct_fonts(
    drawings: list[tuple[int, npt.NDArray[np.float32]]],
    rng: random.Random,
    limit: int,
    mad: float = DUPLICATE_MAD,
) -> list[int]:
    """Up to ``limit`` font (or theme) indices from ``drawings``, in a ``rng`` shuffle,
    skipping one whose drawing is within a mean absolute difference ``mad`` of one already
    taken (default :data:`DUPLICATE_MAD`; ``benchmarks/icons.py`` passes its own)."""
    if not drawings:
        return []
    x = torch.from_numpy(np.stack([d.reshape(-1) for _, d in drawings]))  # (m, pixels)
    same = (torch.cdist(x, x, p=1) / x.shape[1] < mad).tolist()  # (m, m)
    order = list(range(len(drawings)))
    rng.shuffle(order)
    taken: list[int] = []
    for k in order:
        if not any(same[k][t] for t in taken):
            taken.append(k)
            if len(taken) == limit:
                break
    return [drawings[k][0] for k in taken]


def homoglyph_counts(
    drawings: dict[int, list[tuple[int, npt.NDArray[np.float32]]]], n_fonts: int
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Code points (sorted), and for each pair (C, C) the number of fonts that draw both and
    the number in which their drawings are near-identical (< :data:`HOMOGLYPH_MAD`)."""
    cps = sorted(cp for cp, d in drawings.items() if d)
    index = {cp: i for i, cp in enumerate(cps)}
    per_font: list[list[tuple[int, npt.NDArray[np.float32]]]] = [[] for _ in range(n_fonts)]
    for cp in cps:
        for f, drawing in drawings[cp]:
            per_font[f].append((index[cp], drawing))
    shared = torch.zeros(len(cps), len(cps), dtype=torch.int32)  # (C, C)
    close = torch.zeros(len(cps), len(cps), dtype=torch.int32)  # (C, C)
    for items in per_font:
        if len(items) < 2:
            continue
        idx = torch.tensor([i for i, _ in items])
        x = torch.from_numpy(np.stack([d.reshape(-1) for _, d in items]))  # (m, 256)
        mad = torch.cdist(x, x, p=1) / x.shape[1]  # (m, m)
        grid = (idx[:, None], idx[None, :])
        shared[grid] += 1
        close[grid] += (mad < HOMOGLYPH_MAD).to(torch.int32)
    return cps, shared, close


def drop_homoglyphs(cps: list[int], shared: torch.Tensor, close: torch.Tensor) -> list[int]:
    """``cps`` in order without each one that is a homoglyph (see the module) of an earlier
    one kept."""
    is_homoglyph = (close.double() >= HOMOGLYPH_SHARE * shared.double()) & (shared > 0)  # (C, C)
    kept: list[int] = []
    for i in range(len(cps)):
        if not kept or not bool(is_homoglyph[i, kept].any()):
            kept.append(i)
    return [cps[i] for i in kept]


# --- the build ------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> dict[str, object]:
    """Build the image folder ``args.out`` (see the module); returns the manifest."""
    cache: Path = args.cache.expanduser()
    debs = download(PACKAGES, cache / "debs")
    folders = {p: extract(deb, cache / "extracted") for p, deb in debs.items()}
    chars = candidates()
    fonts = read_fonts(folders, set(chars))
    print(f"{len(fonts)} fonts from {len(folders)} packages; {len(chars)} candidate characters")
    drawings = small_drawings(fonts, chars)

    distinct = {
        cp: distinct_fonts(d, random.Random(f"{args.seed}-{cp}"), len(d))
        for cp, d in drawings.items()
    }
    enough = {cp: d for cp, d in drawings.items() if len(distinct[cp]) >= args.min_fonts}
    cps, shared, close = homoglyph_counts(enough, len(fonts))
    kept = drop_homoglyphs(cps, shared, close)
    print(
        f"{sum(1 for d in distinct.values() if d)} characters drawn, {len(enough)} with "
        f">= {args.min_fonts} distinct fonts, {len(kept)} after dropping homoglyphs"
    )
    if args.classes is not None and args.classes < len(kept):
        kept = sorted(random.Random(f"{args.seed}-classes").sample(kept, args.classes))
    order = list(kept)
    random.Random(f"{args.seed}-order").shuffle(order)
    width = max(4, len(str(len(order))))

    out: Path = args.out.expanduser()
    if out.exists() and not (out / "manifest.json").is_file():
        raise SystemExit(f"{out} exists and is not a glyphs build (no manifest.json); not replaced")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    em = max(RENDER_EM, 2 * args.size)
    faces: dict[int, ImageFont.FreeTypeFont] = {}
    classes: list[dict[str, object]] = []
    used: set[int] = set()
    images = 0
    for n, cp in enumerate(order, start=1):
        folder = f"{n:0{width}d}-U+{cp:04X}"
        (tmp / folder).mkdir()
        picked = []
        for f in distinct_fonts(drawings[cp], random.Random(f"{args.seed}-{cp}"), args.per_class):
            face = faces.get(f) or faces.setdefault(f, _load(fonts[f], em))
            ink = glyph(face, chr(cp), em)
            if ink is not None:  # drawn at RENDER_EM already; a larger em could still differ
                Image.fromarray(fit(ink, args.size)).save(tmp / folder / f"{fonts[f].ident}.png")
                picked.append(f)
        used.update(picked)
        images += len(picked)
        classes.append(
            {
                "folder": folder,
                "codepoint": f"U+{cp:04X}",
                "char": chr(cp),
                "name": unicodedata.name(chr(cp), ""),
                "script": chars[cp],
                "fonts": sorted(fonts[f].ident for f in picked),
            }
        )
    scripts: dict[str, int] = {}
    for c in classes:
        scripts[str(c["script"])] = scripts.get(str(c["script"]), 0) + 1
    manifest: dict[str, object] = {
        "command": " ".join(["python benchmarks/glyphs.py", *sys.argv[1:]]),
        "options": {
            "size": args.size,
            "per_class": args.per_class,
            "classes": args.classes,
            "min_fonts": args.min_fonts,
            "seed": args.seed,
            "colours": "white glyph on black",
            "homoglyph_mad": HOMOGLYPH_MAD,
            "homoglyph_share": HOMOGLYPH_SHARE,
            "duplicate_mad": DUPLICATE_MAD,
        },
        "counts": {
            "packages": len(debs),
            "fonts_read": len(fonts),
            "fonts_used": len(used),
            "classes": len(classes),
            "images": images,
            "classes_per_script": dict(sorted(scripts.items())),
        },
        "packages": {p: deb.name for p, deb in debs.items()},
        "fonts": [
            {
                "id": f.ident,
                "package": f.package,
                "file": f.file,
                "face": f.face,
                "name": f.postscript,
            }
            for i, f in enumerate(fonts)
            if i in used
        ],
        "classes": classes,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


PRESETS: dict[str, tuple[int | None, int, int]] = {
    # preset: (classes, per-class, min-fonts)
    "many": (None, 5, 3),
    "tens": (60, 40, 40),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the image folder to build")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="many",
        help="defaults for the next three: many (all classes, 5 fonts each, at least 3) or "
        "tens (60 classes, 40 fonts each, at least 40)",
    )
    parser.add_argument("--classes", type=int, help="keep this many classes (seeded sample)")
    parser.add_argument("--per-class", type=int, help="at most this many fonts per class")
    parser.add_argument("--min-fonts", type=int, help="drop classes with fewer distinct fonts")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("~/.cache/tripletlab/glyphs"),
        help="where the .deb files and their extracted fonts are kept",
    )
    args = parser.parse_args()
    classes, per_class, min_fonts = PRESETS[args.preset]
    args.classes = classes if args.classes is None else args.classes
    args.per_class = per_class if args.per_class is None else args.per_class
    args.min_fonts = min(args.per_class, min_fonts) if args.min_fonts is None else args.min_fonts
    if args.min_fonts < 1 or args.per_class < args.min_fonts or args.size < 8:
        parser.error("need 1 <= --min-fonts <= --per-class and --size >= 8")
    start = time.perf_counter()
    manifest = build(args)
    print(f"- Command: {manifest['command']}")
    print(f"- Machine: {describe_machine()}")
    print(f"- Counts: {json.dumps(manifest['counts'], ensure_ascii=False)}")
    print(f"- Wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
