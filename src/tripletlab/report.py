"""A run's report as one self-contained HTML file: config, metrics and pictures.

Every picture is embedded as a base64 ``data:`` URI, so ``report.html`` can be mailed or
archived alone; it needs no JavaScript, no network and no file beside it. All text (config
values, metric names, class names in captions) goes through :func:`html.escape`, and the
file is written as ASCII (other characters as HTML character references) through a
temporary file and a rename.

Typical use, after :func:`tripletlab.plots.write_pictures`::

    pictures = write_pictures(run_dir / "pictures", test=..., test_embeddings=..., ...)
    write_report(run_dir, pictures=pictures)  # reads config.json and metrics.json
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripletlab.checks import is_number
from tripletlab.io import atomic_write_bytes as write_atomic

REPORT_NAME = "report.html"

#: Pictures by section, matched by name prefix, in this order; others go last.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Learning curves", ("learning_curves",)),
    ("Embeddings", ("embedding_",)),
    ("Nearest neighbours", ("neighbors_",)),
    ("Pair distances", ("distances",)),
)
_CAPTIONS = {
    "learning_curves": "Loss, fraction of active triplets, mean distances and validation "
    "metrics per epoch.",
    "neighbors_random": "Random test queries (grey) and their nearest neighbours among the "
    "rest of the test set: green the same class, red another.",
    "neighbors_worst": "The test queries with the lowest precision@k (ties: the most confident "
    "mistake first) and their nearest neighbours.",
    "distances": "Distances of random same-class and different-class test pairs; the dashed "
    "line is the verification threshold.",
}
_METHODS = {"direct": "the embedding itself (2-D)", "pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 2rem; }
img { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
        column-gap: 1.5rem; }
figcaption { color: #555; font-size: 0.9rem; }
code { font-size: 0.9rem; }
p.note { color: #8a4b00; }
""".strip()


@dataclass(frozen=True)
class Table:
    """A table to render: column headers (after the name column) and named rows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Any, ...]], ...]


#: Entries of a metrics dict that are not a score: shown as notes and a baseline table.
_NOT_SCORES = ("notes", "baselines")


def _baseline_rows(baselines: Any) -> dict[str, Any]:
    """``{"baseline raw_pixels precision_at_1": 0.8, ...}`` of one group's ``baselines``."""
    rows: dict[str, Any] = {}
    if not isinstance(baselines, Mapping):
        return rows
    for method, scores in baselines.items():
        if method in _NOT_SCORES:  # its notes are listed with the others (metric_notes)
            continue
        if isinstance(scores, Mapping):
            rows.update({f"baseline {method} {m}": v for m, v in scores.items()})
        else:
            rows[f"baseline {method}"] = scores
    return rows


def metric_tables(metrics: Mapping[str, Any]) -> list[Table]:
    """Arrange metrics for display; both a flat dict and a dict of metric dicts work.

    Entries whose value is a dict (e.g. ``{"seen": {...}, "unseen": {...}}``) become the
    columns of a first table, one row per metric name in order of first appearance, ``None``
    where a group lacks it. The remaining (scalar) entries form a one-column table. The
    ``baselines`` of each group (or of the flat dict) form a last table, one row per method
    and metric; ``notes`` are left to :func:`metric_notes`. Empty tables are left out.

    Example:
        >>> [t.columns for t in metric_tables({"map_at_r": 0.5, "num_test": 10})]
        [('value',)]
        >>> t = metric_tables({"seen": {"p1": 0.9, "n": 5}, "unseen": {"p1": 0.6}, "s": 3.0})
        >>> t[0]
        Table(columns=('seen', 'unseen'), rows=(('p1', (0.9, 0.6)), ('n', (5, None))))
        >>> t[1]
        Table(columns=('value',), rows=(('s', (3.0,)),))
        >>> metric_tables({"p1": None, "baselines": {"raw_pixels": {"p1": 0.5}}})[1]
        Table(columns=('value',), rows=(('baseline raw_pixels p1', (0.5,)),))
    """
    groups = {
        str(k): v for k, v in metrics.items() if isinstance(v, Mapping) and k not in _NOT_SCORES
    }
    scalars = tuple(
        (str(k), (v,))
        for k, v in metrics.items()
        if not isinstance(v, Mapping) and k not in _NOT_SCORES
    )
    tables = []
    if groups:
        names = dict.fromkeys(str(m) for g in groups.values() for m in g if m not in _NOT_SCORES)
        rows = tuple((m, tuple(g.get(m) for g in groups.values())) for m in names)
        tables.append(Table(tuple(groups), rows))
    if scalars:
        tables.append(Table(("value",), scalars))
    per_group = (
        {name: _baseline_rows(g.get("baselines")) for name, g in groups.items()}
        if groups
        else {"value": _baseline_rows(metrics.get("baselines"))}
    )
    names = dict.fromkeys(m for rows_ in per_group.values() for m in rows_)
    if names:
        rows = tuple((m, tuple(r.get(m) for r in per_group.values())) for m in names)
        tables.append(Table(tuple(per_group), rows))
    return tables


def metric_notes(metrics: Mapping[str, Any]) -> list[str]:
    """What a reader of the metrics must be told beside the numbers (shown under the table by
    ``tripletlab train`` and ``evaluate`` and in the report), for flat or grouped metrics:

    - which test images the ``unseen`` and ``seen`` groups hold, and that a set scored
      leave-one-out holds classes the run never trained on;
    - that a set of a query/gallery split was scored query against gallery, with the counts;
    - a ``pair_accuracy`` at or below its ``pair_floor`` (no threshold beats answering
      "different" for every pair), and a ``held_out_pair_accuracy`` below it (answering
      "different" does better than the distance threshold fitted on held-out pairs);
    - the ``notes`` of the metrics themselves (why a score is ``None``, shown as "-") and of
      their ``baselines``.

    Example:
        >>> metric_notes({"held_out_pair_accuracy": 0.85, "pair_floor": 0.9})[0][:60]
        'held_out_pair_accuracy 0.8500 is below pair_floor 0.9000 (th'
        >>> metric_notes({"precision_at_1": 0.9})
        []
    """
    groups = {
        str(k): v for k, v in metrics.items() if isinstance(v, Mapping) and k not in _NOT_SCORES
    }
    notes = []
    if "unseen" in groups:
        against = (
            "the gallery"
            if groups["unseen"].get("retrieval_gallery") == "gallery"
            else "the others (leave-one-out)"
        )
        notes.append(
            "unseen: the images of the classes held out of training, each a query against "
            f"{against}; seen: test images of the training classes"
        )
    for name, group in list(groups.items()) or [("", metrics)]:
        where = f"{name}: " if name else ""
        if name != "unseen" and group.get("knn_gallery") == "leave-one-out":
            notes.append(
                f"{where}the test classes are not among the training classes (k-NN "
                "leave-one-out among the test images)"
            )
        if "gallery" in (group.get("retrieval_gallery"), group.get("knn_gallery")):
            notes.append(
                f"{where}each of the {group.get('num_test')} queries (the test images) against "
                f"the {group.get('num_gallery')} gallery images of the dataset's query/gallery "
                "split for retrieval and k-NN (no query in the gallery); pairs, verification and "
                "clustering over the queries"
            )
        floor = group.get("pair_floor")
        best = group.get("pair_accuracy")
        if is_number(best) and is_number(floor) and best < floor + 5e-5:  # equal as shown
            many = " (with many classes almost every pair is different)" if floor > 0.5 else ""
            notes.append(
                f"{where}pair_accuracy {best:.4f} is at or below pair_floor {floor:.4f}: no "
                f'distance threshold does better than answering "different" for every '
                f"pair{many}, so the pair scores say nothing here; read precision_at_1 and "
                "MAP@R"
            )
        acc = group.get("held_out_pair_accuracy")
        if is_number(acc) and is_number(floor) and acc < floor:
            digits = next((d for d in range(4, 10) if f"{acc:.{d}f}" != f"{floor:.{d}f}"), 10)
            notes.append(
                f"{where}held_out_pair_accuracy {acc:.{digits}f} is below pair_floor "
                f"{floor:.{digits}f} "
                '(the accuracy of answering "different" for every pair): the distance '
                "threshold fitted on held-out pairs does worse than no threshold"
            )
    for group in [metrics, *groups.values()]:
        for entry in (group, group.get("baselines")):
            if isinstance(entry, Mapping) and isinstance(entry.get("notes"), list):
                notes.extend(str(n) for n in entry["notes"] if str(n) not in notes)
    if not groups and _nothing_to_find(metrics):  # a run that held no class out
        notes.append(
            "with a few images per class, score classes held out of training instead: "
            "--unseen-classes N (e.g. a third to a half of the classes; their images are "
            "then scored leave-one-out)"
        )
    return notes


def _nothing_to_find(group: Mapping[str, Any]) -> bool:
    """Whether no test item of a set scored leave-one-out had another of its class."""
    n = group.get("num_test")
    return (
        group.get("retrieval_gallery") == "leave-one-out"
        and isinstance(n, int)
        and n > 0
        and group.get("num_excluded_queries") == n
    )


def format_value(value: Any) -> str:
    """A metric or config value as display text (not yet escaped).

    Example:
        >>> [format_value(v) for v in (0.123456, 3, None, True, [1, 2], "a")]
        ['0.1235', '3', '-', 'True', '[1, 2]', 'a']
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int, str)):
        return str(value)
    return json.dumps(value, default=str)


def _table_html(table: Table, name_header: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (name_header, *table.columns))
    body = []
    for name, values in table.rows:
        cells = "".join(
            f'<td class="num">{html.escape(format_value(v))}</td>'
            if is_number(v)
            else f"<td>{html.escape(format_value(v))}</td>"
            for v in values
        )
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _caption(name: str) -> str:
    if name in _CAPTIONS:
        return _CAPTIONS[name]
    parts = name.split("_")
    if len(parts) == 3 and parts[0] == "embedding":
        method = _METHODS.get(parts[2], parts[2])
        return f"The {parts[1]} set in 2-D: {method}, coloured by class."
    return name.replace("_", " ")


def _section_of(name: str) -> int:
    for i, (_, prefixes) in enumerate(SECTIONS):
        if any(name.startswith(p) for p in prefixes):
            return i
    return len(SECTIONS)


def _data_uri(name: str, path: Path) -> str:
    if not path.is_file():
        raise ValueError(
            f"picture {name!r} not found at {path}; write the pictures first or leave it out"
        )
    data = path.read_bytes()
    mime = _MIME[path.suffix.lower()]
    if mime == "image/png" and not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"picture {name!r} at {path} is not a PNG file; write it again")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())


def render_report(
    *,
    title: str,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    pictures: Mapping[str, Path] | None = None,
    base_dir: Path | None = None,
) -> str:
    """The report as an HTML string (see the module docstring).

    Args:
        title: the page title and heading.
        config: the run's resolved config (``config.json``); one row per key, ``part.key``
            for the keys of a nested part (``optim.lr``).
        metrics: flat or grouped metrics (see :func:`metric_tables`).
        pictures: name -> path, as returned by :func:`tripletlab.plots.write_pictures`. PNG
            and JPEG files are embedded, grouped by :data:`SECTIONS`; other files (the
            projector export) are listed by path, relative to ``base_dir`` when inside it.
        base_dir: the folder the report is written to.

    Returns:
        The HTML text.

    Raises:
        ValueError: a picture file is missing or not a PNG.
    """
    pictures = dict(pictures or {})
    images = {n: p for n, p in pictures.items() if Path(p).suffix.lower() in _MIME}
    others = {n: p for n, p in pictures.items() if n not in images}
    sections: list[tuple[str, list[str]]] = []
    for name in sorted(images, key=_section_of):  # stable: keeps the order within a section
        i = _section_of(name)
        heading = SECTIONS[i][0] if i < len(SECTIONS) else "Other pictures"
        if not sections or sections[-1][0] != heading:
            sections.append((heading, []))
        uri = _data_uri(name, Path(images[name]))
        sections[-1][1].append(
            f'<figure id="fig-{html.escape(_anchor(name))}">'
            f'<img src="{uri}" alt="{html.escape(name)}">'
            f"<figcaption>{html.escape(_caption(name))} <code>{html.escape(name)}</code>"
            "</figcaption></figure>"
        )

    parts: list[str] = []
    nav: list[str] = []

    def section(heading: str, content: str) -> None:
        anchor = _anchor(heading)
        nav.append(f'<a href="#{anchor}">{html.escape(heading)}</a>')
        parts.append(
            f'<section>\n<h2 id="{anchor}">{html.escape(heading)}</h2>\n{content}\n</section>'
        )

    if metrics:
        tables = [_table_html(t, "metric") for t in metric_tables(metrics)]
        notes = [f'<p class="note">{html.escape(n)}</p>' for n in metric_notes(metrics)]
        section("Metrics", "\n".join(tables + notes))
    for heading, figures in sections:
        grid = heading == "Embeddings" and len(figures) > 1  # train | test, method by method
        content = "\n".join(figures)
        section(heading, f'<div class="grid">\n{content}\n</div>' if grid else content)
    if config:
        rows: list[tuple[str, tuple[Any, ...]]] = []
        for key, value in config.items():
            if isinstance(value, Mapping):  # a part of the config: optim.lr, optim.epochs, ...
                rows.extend((f"{key}.{k}", (v,)) for k, v in value.items())
            else:
                rows.append((str(key), (value,)))
        section("Configuration", _table_html(Table(("value",), tuple(rows)), "setting"))
    if others:
        items = []
        for name, path in others.items():
            shown = Path(path)
            if base_dir is not None:
                with contextlib.suppress(ValueError):  # another drive on Windows
                    shown = Path(os.path.relpath(path, base_dir))
            items.append(f"<li><code>{html.escape(str(shown))}</code> ({html.escape(name)})</li>")
        note = (
            "<p>Not embedded. A <code>projector</code> folder opens in TensorBoard's projector "
            "(<code>tensorboard --logdir FOLDER</code>), or load its two TSV files at "
            "projector.tensorflow.org.</p>"
        )
        section("Other files", note + "\n<ul>\n" + "\n".join(items) + "\n</ul>")

    head = (
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<title>{html.escape(title)}</title>\n<style>\n{_STYLE}\n</style>"
    )
    body = (
        f"<h1>{html.escape(title)}</h1>\n<nav>{' '.join(nav)}</nav>\n" + "\n".join(parts)
        if parts
        else f"<h1>{html.escape(title)}</h1>\n<p>Nothing to report yet.</p>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); write it again or pass it") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def write_report(
    run_dir: Path,
    *,
    pictures: Mapping[str, Path] | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """Write ``run_dir / "report.html"`` atomically and return its path.

    Args:
        run_dir: the run folder (must exist).
        pictures: see :func:`render_report`.
        config: default: ``run_dir / "config.json"`` when it exists.
        metrics: default: ``run_dir / "metrics.json"`` when it exists.
        title: default ``"tripletlab run <folder name>"``.

    Raises:
        ValueError: missing run folder, unreadable JSON, a missing or broken picture.
    """
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist; pass the folder of a run")
    if config is None:
        config = _read_json(run_dir / "config.json")
    if metrics is None:
        metrics = _read_json(run_dir / "metrics.json")
    text = render_report(
        title=title or f"tripletlab run {run_dir.resolve().name}",
        config=config,
        metrics=metrics,
        pictures=pictures,
        base_dir=run_dir,
    )
    path = run_dir / REPORT_NAME
    # ASCII only (the rest as character references): the same bytes under any locale.
    return write_atomic(path, text.encode("ascii", "xmlcharrefreplace"))
