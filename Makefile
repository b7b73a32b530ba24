# tbib: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tbib-setup
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck services-up services-down bench screenshots clean

# Idempotent: does the work only when pyproject.toml, the constraints or the set-up script changed.
setup: $(STAMP)
$(STAMP): pyproject.toml constraints.txt scripts/setup.sh package.json
	PYTHON=$(PYTHON) scripts/setup.sh
	@touch $(STAMP)

demo: setup
	$(BIN)/tbib demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: lint

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

test: setup lint services-up
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup services-up
	$(BIN)/tbib bench ingest --json

screenshots: setup services-up
	$(BIN)/pytest -m browser tests/dashboard -k screenshots

clean:
	scripts/services.sh down || true
	rm -rf $(VENV) .cache node_modules
