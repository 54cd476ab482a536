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

# The whole suite on SQLite (the default) with the browser suite, then again on
# PostgreSQL the tests marked database_engine, those that work with the database
# layer (the rule: tests/conftest.py): a throwaway server (Debian's) that
# tests/conftest.py starts on a free loopback port and removes afterwards.
# Each phase prints its wall time (CI's budget: well under 20 minutes); the first
# phase that fails stops the run with its own exit code.
test:
	@started=$$(date +%s); summary=""; \
	clock() { printf '%d:%02d' $$(($$1 / 60)) $$(($$1 % 60)); }; \
	phase() { \
		name=$$1; shift; from=$$(date +%s); echo "make test: $$name: $$*"; \
		"$$@" || { status=$$?; echo "make test: $$name FAILED with exit code $$status after $$(clock $$(($$(date +%s) - from)))"; exit $$status; }; \
		took=$$(clock $$(($$(date +%s) - from))); summary="$$summary, $$name $$took"; \
		echo "make test: $$name took $$took"; \
	}; \
	phase install $(MAKE) --no-print-directory install; \
	phase lint $(MAKE) --no-print-directory lint; \
	phase "test deps" $(MAKE) --no-print-directory test-deps; \
	phase "SQLite and browser pass" $(BIN)/pytest; \
	phase "PostgreSQL pass" env DROPBOX_TEST_DATABASE=postgresql $(BIN)/pytest -m "database_engine and not browser"; \
	echo "make test: total $$(clock $$(($$(date +%s) - started)))$$summary"

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis node_modules tests/artifacts
