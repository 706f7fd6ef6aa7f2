"""Drawing runs (:mod:`tripletlab.evaluation.plot`): the default projections, the pictures
and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripletlab.evaluation import LoadedRun, default_projections, plot_run

pytest_plugins = ["evaluation_runs"]


def test_default_projections() -> None:
    assert default_projections(2) == ("direct",) == default_projections(2, quick=True)
    assert default_projections(64, quick=True) == ("pca",)
    assert default_projections(64)[:2] == ("pca", "tsne")


def test_plot_run_writes_pictures_and_report(run_dir: Path, run: LoadedRun) -> None:
    calls: list[tuple[str, int, int]] = []
    result = plot_run(run, quick=True, progress=lambda *a: calls.append(a))
    names = set(result.pictures)
    assert {"embedding_train_pca", "embedding_test_pca", "neighbors_random"} <= names
    assert "learning_curves" in names and not any("tsne" in n for n in names)
    for path in result.pictures.values():
        assert path.is_file() and path.is_relative_to(run_dir / "pictures")
    assert result.report == run_dir / "report.html"
    html = result.report.read_text()
    assert "embedding_test_pca" in html and "precision_at_1" in html
    assert ("embedding train", 0, 1288) in calls and calls[-1][1] == calls[-1][2]
    with pytest.raises(ValueError, match="direct plot needs a 2-D embedding, got D=64"):
        plot_run(run, projections=["direct"])
