"""Writing a benchmark's markdown report into a file that may hold other sections.

Every benchmark's ``--out`` goes through :func:`write_section`, so that pointing one at a
shared page (``docs/benchmarks.md``, ``docs/results.md``) rewrites that benchmark's own
section and never the others.
"""

from __future__ import annotations

from pathlib import Path

from tripletlab.io import atomic_write_text


def _heading(line: str) -> int:
    """The level of a markdown heading line (``## x`` -> 2), 0 for any other line."""
    hashes = len(line) - len(line.lstrip("#"))
    return hashes if hashes and line[hashes : hashes + 1] == " " else 0


def write_section(path: Path | str, report: str) -> None:
    """Write ``report`` into ``path`` atomically, keeping everything else the file holds.

    The report's first heading names its section. When ``path`` has a line equal to that
    heading, the section from there to the next heading of the same or a higher level (or
    the end) is replaced; otherwise the report is appended after a blank line. A missing
    (or empty) file gets the report alone. Written with ``atomic_write_text``.

    Corner cases: a report without a heading is appended (or written, for a new file);
    headings inside fenced code blocks are not told apart from real ones.
    """
    path = Path(path)
    body = report.rstrip("\n") + "\n"
    old = path.read_text() if path.exists() else ""
    lines = old.splitlines()
    head = next((ln for ln in body.splitlines() if _heading(ln)), None)
    if head is None or head not in lines:
        text = old.rstrip("\n") + "\n\n" + body if old.strip() else body
    else:
        start = lines.index(head)
        level = _heading(head)
        end = next(
            (i for i in range(start + 1, len(lines)) if 0 < _heading(lines[i]) <= level),
            len(lines),
        )
        before, after = "\n".join(lines[:start]), "\n".join(lines[end:])
        text = (before + "\n" if before else "") + body + ("\n" + after + "\n" if after else "")
    atomic_write_text(path, text)
