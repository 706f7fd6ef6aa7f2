"""benchmarks/sections.py: a benchmark's ``--out`` rewrites its own section of a shared page
and keeps every other byte."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest
from benchmark_helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]

PAGE = """# Benchmarks

## Losses: forward + backward

old table

### a subsection

old detail

## Networks

kept
"""


@pytest.fixture(scope="module")
def sections() -> ModuleType:
    return load_benchmark("sections")


def test_a_section_is_replaced_with_its_subsections_and_nothing_else(
    sections: ModuleType, tmp_path: Path
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    sections.write_section(page, "## Losses: forward + backward\n\nnew table\n")
    assert page.read_text() == (
        "# Benchmarks\n\n## Losses: forward + backward\n\nnew table\n\n## Networks\n\nkept\n"
    )


def test_the_last_section_and_a_new_one(sections: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    sections.write_section(page, "## Networks\n\nnew\n\n")
    assert page.read_text() == PAGE.replace("kept", "new")
    sections.write_section(page, "## Search\n\nappended\n")
    assert page.read_text() == PAGE.replace("kept", "new") + "\n## Search\n\nappended\n"
    # The same words at another level are another section.
    sections.write_section(page, "# Networks\n\nlevel one\n")
    assert page.read_text().endswith("appended\n\n# Networks\n\nlevel one\n")
    assert "## Networks\n\nnew\n" in page.read_text()


def test_a_new_file_holds_the_report_alone(sections: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "deeper" / "report.md"
    sections.write_section(out, "## Open-set evaluation\n\nrows\n")
    assert out.read_text() == "## Open-set evaluation\n\nrows\n"
    sections.write_section(out, "no heading at all\n")
    assert out.read_text() == "## Open-set evaluation\n\nrows\n\nno heading at all\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.md"]  # no temporary left


def test_make_bench_rewrites_the_losses_section_of_the_docs_in_place() -> None:
    bench = load_benchmark("bench_losses")
    report = bench._report({}, argparse.Namespace(sizes=[128], threads=2, repeats=3))
    heading = report.splitlines()[0]
    assert heading.startswith("## ")
    assert heading in (ROOT / "docs" / "benchmarks.md").read_text().splitlines()
    assert "--out docs/benchmarks.md" in (ROOT / "Makefile").read_text()
