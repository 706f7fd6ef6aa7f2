"""Writing a benchmark's markdown report into a file that may hold other sections.

Every benchmark's ``--out`` goes through :func:`write_section`, so that pointing one at a
shared page (``docs/benchmarks.md``, ``docs/results.md``) rewrites that benchmark's own
section and never the others.
"""

from __future__ import annotations

import os
from pathlib import Path


def _heading(line: str) -> int:
    """The level of a markdown heading line (``## x`` -> 2), 0 for any other line."""
    hashes = len(line) - len(line.lstrip("#"))
    return hashes if hashes and line[hashes : hashes + 1] == " " else 0


def write_section(path: Path | str, report: str) -> None:
    """Write ``report`` into ``path`` atomically, keeping everything else the file holds.

    The report's first heading names its section. When ``path`` has a line equal to that
    heading, the section from there to the next heading of the same or a higher level (or
    the end) is replaced; otherwise the report is appended after a blank line. A missing
    file is created with the report alone.

    Corner cases: a report without a heading is appended (or written, for a new file);
    headings inside fenced code blocks are not told apart from real ones.
    """
    path = Path(path)
    body = report.rstrip("\n") + "\n"
    head = next((ln for ln in body.splitlines() if _heading(ln)), None)
    old = path.read_text() if path.exists() else None
    if old is None:
        text = body
    else:
        lines = old.splitlines()
        start = lines.index(head) if head is not None and head in lines else None
        if start is None:
            text = old.rstrip("\n") + "\n\n" + body
        else:
            level = _heading(lines[start])
            end = next(
                (i for i in range(start + 1, len(lines)) if 0 < _heading(lines[i]) <= level),
                len(lines),
            )
            after = "\n".join(lines[end:])
            before = "\n".join(lines[:start])
            text = (before + "\n" if before else "") + body + ("\n" + after + "\n" if after else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
