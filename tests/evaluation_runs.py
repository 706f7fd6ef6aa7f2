"""The two tiny digits runs the evaluation tests share (``pytest_plugins`` of
``test_evaluation_*``): a plain one and one trained with three unseen classes, each trained
once for the session.

PYTEST_DONT_REWRITE: it holds no assert, and ``test_evaluation_runs`` imports it (for
:func:`digits_run`) before pytest loads it as a plugin, too late to rewrite it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tripletlab.evaluation import LoadedRun, load_run
from tripletlab.training import config_from_dict, fit


def digits_run(folder: Path, **kw: object) -> Path:
    base: dict[str, object] = {"dataset": "digits", "epochs": 1, "val_size": 150, "seed": 0}
    base["amp"] = "off"  # float32 on every CPU (auto: bfloat16 where it is native)
    base.update(kw)
    fit(config_from_dict(base), folder)
    return folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_run(tmp_path_factory.mktemp("eval") / "run")


@pytest.fixture(scope="session")
def unseen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_run(tmp_path_factory.mktemp("eval") / "unseen", unseen_classes=3)


@pytest.fixture(scope="session")
def run(run_dir: Path) -> LoadedRun:
    return load_run(run_dir, "cpu")
