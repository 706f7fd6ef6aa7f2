# Set-up and checks.
# `make train` is the README's main job: on a fresh clone it creates .venv, installs
#   tripletlab (torch pinned by constraints.txt to the CPU build), makes the data sets
#   available offline (scripts/setup_data.sh) and runs `tripletlab train` with the defaults
#   (Fashion-MNIST). Extra flags: make train ARGS="--epochs 3 --out runs/short".
# `make test` is the README's test command and what .ci/run calls: the same set-up plus the
#   dev tools, then lint, type-check and all the tests, the slow end-to-end ones included
#   (about a minute more; `make pytest` leaves them out), with headless Chromium for the
#   report test when it can be installed (scripts/setup_browser.sh).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: venv data browser train test lint typecheck pytest pytest-all bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

data:
	bash scripts/setup_data.sh

browser:
	bash scripts/setup_browser.sh

train: venv data
	$(BIN)/tripletlab train $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv browser
	$(BIN)/python -m pytest -m "not slow" -q

pytest-all: venv browser
	$(BIN)/python -m pytest -q

test: lint typecheck pytest-all

bench: venv
	$(BIN)/python benchmarks/bench_losses.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
