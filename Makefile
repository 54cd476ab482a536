# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install test-deps lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dropbox demo --data-dir ./demo-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r dropbox crypto source_interface case_server journalist_interface --severity-level medium

# Chromium (Debian's, at /usr/bin/chromium) and axe-core for tests/browser.
test-deps: $(STAMP)
	bash scripts/install-test-deps

# The whole suite on SQLite (the default), then again on PostgreSQL: a throwaway
# server (Debian's) that tests/conftest.py starts on a free loopback port and
# removes afterwards. The browser suite starts its own servers and stays on SQLite.
test: lint test-deps
	$(BIN)/pytest
	DROPBOX_TEST_DATABASE=postgresql $(BIN)/pytest -m "not browser"

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis node_modules tests/artifacts
