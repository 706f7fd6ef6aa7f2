# Set-up and checks.
# `make train` is the README's main job: on a fresh clone it creates .venv, installs
#   tripletlab (torch pinned by constraints.txt to the CPU build), makes the data sets
#   available offline (scripts/setup_data.sh) and runs `tripletlab train` with the defaults
#   (Fashion-MNIST). Extra flags: make train ARGS="--epochs 3 --out runs/short".
# `make test` is the README's test command and what .ci/run calls: the same set-up plus the
#   dev tools, then lint, type-check and all the tests, the slow end-to-end ones included
#   (about a minute more; `make pytest` leaves them out), with headless Chromium for the
#   report test when it can be installed (scripts/setup_browser.sh), then the fast tests a
#   second time on other CPU kernels (`make pytest-other-kernels`, about 3 minutes: MKL's
#   SSE4.2 code path, PyTorch's unvectorised kernels, oneDNN without AVX-512 or AMX, so
#   bfloat16 emulated), so that a test that holds only on this CPU's kernels fails here
#   rather than on a user's machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
STAMP := $(VENV)/.installed
# Kernels other than this CPU's best: what a CPU without AVX-512, AMX or native bfloat16 runs.
OTHER_KERNELS := MKL_ENABLE_INSTRUCTIONS=SSE4_2 MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default
OTHER_KERNELS += ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: venv data browser train test lint typecheck pytest pytest-all pytest-other-kernels bench
.PHONY: clean

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

pytest-other-kernels: venv browser
	$(OTHER_KERNELS) $(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider

test: lint typecheck pytest-all pytest-other-kernels

bench: venv
	$(BIN)/python benchmarks/bench_losses.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
