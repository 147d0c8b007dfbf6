# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lint dashboard clean

install: $(STAMP)

# Re-installs only when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/crypto-service

test: install
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Regenerate the Grafana dashboard JSON from grafana/dashboard.py.
dashboard: install
	$(BIN)/python -m grafana.dashboard

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
