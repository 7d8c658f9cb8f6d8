# The two commands a new user needs: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: demo test lint unit test-e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator]"
	touch $@

## demo: run the example multi-face-swap DAG end to end against the local emulator
demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

## test: lint, type-check, and the whole test suite (unit, integration, end-to-end)
test: lint
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy airflow_provider_crun

## unit: the fast tests only
unit: $(INSTALLED)
	$(BIN)/pytest -m "not e2e and not integration"

## test-e2e: the real-Airflow deployment suite only
test-e2e: $(INSTALLED)
	$(BIN)/pytest -m e2e

## bench: install the peers and run the benchmarks (minutes; prints tables)
bench: $(INSTALLED)
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator,bench]"
	$(BIN)/python benchmarks/import_cost.py
	$(BIN)/python benchmarks/worker_time.py
	$(BIN)/python benchmarks/trigger_scale.py --triggers 200

clean:
	rm -rf $(VENV) .demo build *.egg-info
