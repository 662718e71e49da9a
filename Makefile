# Fusebox: `make help` lists the targets. `make run` and `make test` set themselves up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/demo.toml

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## venv + pip install -e '.[dev]'

run: install ## serve the embedded default (examples/demo.toml) on 127.0.0.1:8080
	$(BIN)/fusebox serve --config $(CONFIG)

demo: install ## a narrated chaos tour on loopback: outage, breaker, fallback, recovery (~1 min)
	$(BIN)/fusebox demo

fmt: install ## ruff format; ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: install ## ruff format --check; ruff check; lint-imports; hadolint Dockerfile
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

type: install ## mypy (strict)
	$(BIN)/mypy

unit: install ## the test suite alone
	$(BIN)/python -m pytest -q

cov: install ## the test suite under branch coverage
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report --skip-covered --fail-under=90

test: lint type cov ## every check; what .ci/run calls

bench: install ## the full benchmark (prints a table, writes benchmarks/results/*.json and a PNG)
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q matplotlib || echo "matplotlib unavailable: the chart will be skipped"
	$(BIN)/python -m benchmarks.run

bench-quick: install ## a benchmark smoke check, under a minute
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m benchmarks.run --quick

clean: ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .fusebox

.PHONY: help install run demo fmt lint type unit cov test bench bench-quick clean
