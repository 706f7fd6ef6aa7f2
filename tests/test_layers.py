"""The package's layers: one direction of dependencies (``[tool.importlinter]`` in
pyproject.toml, checked by ``lint-imports`` in ``make lint`` and here), and no import of the
package inside a function (a function-level import is for an optional dependency only)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tripletlab"


def function_level_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every ``import``/``from ... import`` inside a function body."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    found.append((node.lineno, "." * node.level + (node.module or "")))
                elif isinstance(node, ast.Import):
                    found.extend((node.lineno, a.name) for a in node.names)
    return sorted(found)


def test_the_finder_sees_imports_inside_functions() -> None:
    tree = ast.parse("def f():\n    if True:\n        from tripletlab import io\n    import os\n")
    assert function_level_imports(tree) == [(3, "tripletlab"), (4, "os")]


def test_no_module_imports_the_package_inside_a_function() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in function_level_imports(ast.parse(path.read_text()))
        if module.startswith(("tripletlab", "."))
    ]
    assert offenders == [], "import these at the top of the module (or fix the layering)"


def test_the_layers_contract_is_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout
