# fleetcare — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Parallel workers: most of the suite waits on brokers, databases and browsers, so 4 workers on
# 2 cores took the suite from ~13 to ~5 minutes. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 4

.PHONY: demo test lint format bench system-deps venv clean help

help:
	@echo "make demo   - install, then run broker + server + simulated fleet (Ctrl-C to stop)"
	@echo "make test   - install, then run the full test suite (real Mosquitto, SQLite, PostgreSQL)"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - run the benchmarks and append to benchmarks/RESULTS.md"

# Debian packages the project needs at run/test time; installed only when missing.
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: system-deps venv
	$(BIN)/fleetcare demo

test: system-deps venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: system-deps venv
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.agent_footprint
	$(BIN)/python -m benchmarks.kpi
	$(BIN)/python -m benchmarks.command_latency
	$(BIN)/python -m benchmarks.suggestions
	$(BIN)/python -m benchmarks.kb_quality
	$(BIN)/python -m benchmarks.web_pages --record
	$(BIN)/python -m benchmarks.fleet_scale

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
