# tbib: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tbib-setup
PYTEST_ARGS ?=
# `make test`: everything but the cluster and chaos tiers, on 2 pytest-xdist workers (module-scoped
# databases and servers are made once per worker). `make test-slow`: those two tiers, one at a time (each
# starts real clusters or kills real engines). CI (.ci/run) runs both.
PYTEST_WORKERS ?= 2
FAST_MARKERS ?= not cluster and not chaos
SLOW_MARKERS ?= cluster or chaos

.PHONY: setup demo test test-slow test-all lint typecheck services-up services-down bench screenshots clean

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
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

test-slow: setup services-up
	$(BIN)/pytest -m "$(SLOW_MARKERS)" $(PYTEST_ARGS)

test-all: test test-slow

bench: setup services-up
	$(BIN)/tbib bench ingest --json

screenshots: setup services-up
	$(BIN)/pytest -m browser tests/dashboard -k screenshots

clean:
	scripts/services.sh down || true
	rm -rf $(VENV) .cache node_modules
