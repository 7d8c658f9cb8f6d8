# The two commands a new user needs: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
RELEASE_INSTALLED := $(VENV)/.installed-release
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: demo test lint unit test-e2e test-distributed test-matrix dist docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator,distributed]"
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
	$(BIN)/mypy --strict airflow_provider_crun/protocol

## unit: the fast tests only
unit: $(INSTALLED)
	$(BIN)/pytest -m "not e2e and not integration and not distributed"

## test-e2e: the real-Airflow deployment suite only
test-e2e: $(INSTALLED)
	$(BIN)/pytest -m e2e

## test-distributed: CeleryExecutor + PostgreSQL + Redis, two triggerers and two workers, with kills
## (CRUN_DIST_IMAGES sets the batch size; needs PostgreSQL on :5432 and Redis on :6379)
test-distributed: $(INSTALLED)
	$(BIN)/pytest -m distributed

## test-matrix: unit + integration tests on Airflow 3.1.8/3.2.2/3.3.2 (Python 3.11) and 3.3.2 on every
## Python 3.12/3.13 found, each in a fresh venv under .matrix/ (MATRIX_CELLS selects cells)
test-matrix:
	$(PYTHON) scripts/test_matrix.py

$(RELEASE_INSTALLED): $(INSTALLED)
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator,release]"
	touch $@

## dist: build the wheel and sdist into dist/, twine-check them, smoke-install the wheel in a fresh venv
dist: $(RELEASE_INSTALLED)
	scripts/dist_smoke.sh $(BIN)/python

DOCS_INSTALLED := $(VENV)/.installed-docs

$(DOCS_INSTALLED): $(INSTALLED)
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator,docs]"
	touch $@

## docs: build the HTML documentation into docs/_build/html (any warning fails the build)
docs: $(DOCS_INSTALLED)
	$(BIN)/sphinx-build -E -W --keep-going -b html docs docs/_build/html

## bench: install the peers and run the benchmarks (minutes; prints tables)
bench: $(INSTALLED)
	$(BIN)/pip install $(PIP_QUIET) -e ".[dev,emulator,bench]"
	$(BIN)/python benchmarks/import_cost.py
	$(BIN)/python benchmarks/worker_time.py
	$(BIN)/python benchmarks/trigger_scale.py --triggers 200
	$(BIN)/python benchmarks/trigger_objects.py

clean:
	rm -rf $(VENV) .demo .matrix .e2e-results build dist docs/_build *.egg-info
