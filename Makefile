# Set-up and checks. `make test` is the README's test command and what .ci/run calls:
# on a fresh clone it creates .venv, installs tripletlab with its dev tools (torch pinned by
# constraints.txt to the CPU build), then lints, type-checks and runs the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -m "not slow" -q

test: lint typecheck pytest

bench: venv
	$(BIN)/python benchmarks/bench_losses.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
