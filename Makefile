# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package `make install` puts in the venv, pinned with its hashes (README: Dependencies).
LOCK := requirements.lock
# pip-tools refreshes the lock from a venv of its own: `make install` never needs it.
LOCK_TOOL := $(VENV)/lock-tool
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo test install lock test-deps lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# pip installs uv alone, from its entry in the lock (with its hashes); uv installs
# the whole lock (about 5 s, where pip took about 30), compiled as pip does: else
# the first test processes, which start together, each compiled the same modules.
# The lock holds the build
# backend too (setuptools), so the project itself is built with no download:
# --no-build-isolation uses the venv's locked setuptools.
UV_ENTRY := $(VENV)/uv-requirement.txt
$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	awk '/^uv==/ {on = 1} on {print} on && !/\\$$/ {exit}' $(LOCK) > $(UV_ENTRY)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(UV_ENTRY)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode -r $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

$(LOCK_TOOL)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/pip install --quiet '$(PIP_TOOLS)'

# Rewrites requirements.lock from pyproject.toml (runtime, the dev extra and the
# build backend), resolved for Python 3.11 on Linux x86-64 against PyPI alone
# (no pip settings of this machine: no local index, find-links or constraint).
# Pins already in the lock are kept; LOCK_ARGS='--upgrade-package NAME' bumps one,
# LOCK_ARGS=--upgrade bumps them all.
lock: $(LOCK_TOOL)/bin/pip-compile
	@test "$$(uname -sm)" = "Linux x86_64" || { echo "make lock: run it on Linux x86-64, the platform the lock is for"; exit 1; }
	@$(LOCK_TOOL)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "make lock: PYTHON must be Python 3.11, the version the lock is for"; exit 1; }
	env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT \
		PIP_CONFIG_FILE=/dev/null $(LOCK_TOOL)/bin/pip-compile --quiet \
		--no-header --extra dev --all-build-deps --allow-unsafe --strip-extras \
		--generate-hashes --no-emit-index-url --no-emit-find-links \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml
	{ echo '# Every Python package `make install` installs, pinned with its hashes: the runtime'; \
	  echo '# dependencies and the dev extra of pyproject.toml, and the build backend (setuptools).'; \
	  echo '# For CPython 3.11 on Linux x86-64. Made by pip-compile ($(PIP_TOOLS)): do not edit;'; \
	  echo '# change pyproject.toml and run `make lock` (README.md: Dependencies).'; \
	  cat $(LOCK); } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

demo: $(STAMP)
	$(BIN)/dropbox demo --data-dir ./demo-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r dropbox crypto source_interface case_server journalist_interface launcher --severity-level medium

# Chromium (Debian's, at /usr/bin/chromium) and axe-core for tests/browser.
test-deps: $(STAMP)
	bash scripts/install-test-deps

# The whole suite on SQLite (the default) with the browser suite, then again on
# PostgreSQL the tests marked database_engine (tests/test_suite_layout.py: those
# about the engine itself, and those that send statements no other marked module
# sends): a throwaway server (Debian's) that tests/conftest.py starts on a free
# loopback port and removes afterwards. The last phase checks that PostgreSQL was
# sent every statement SQLite was, but those only the fuzzing drew (tests/sql_sites.py).
# scripts/run_tests.py runs the test phases in two lanes at once. The first runs
# the tests marked `serial` (they measure time or memory: tests/conftest.py,
# SERIAL_MODULES and SERIAL_TESTS) one at a time, on SQLite then PostgreSQL.
# Beside it, with a small CPU share, the bulk lane runs the other tests over
# TEST_WORKERS pytest-xdist workers (default 4: on 2 cores the tests wait on disk,
# subprocesses and sleeps as much as they compute), on SQLite with the browser
# suite, then on PostgreSQL.
# TEST_LANES=1 runs the phases one after the other. Each phase prints its wall time
# (CI's budget: well under 20 minutes); a failed phase stops the run with its own
# exit code. SQL_SITES is where each test process records the statements it sent.
# Python may keep compiled modules here even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): else every pytest process rewrote the assertions of
# about 360 modules again (6 s of CPU each, 12 processes), and every server and
# command the tests start compiled the project again.
SQL_SITES = tests/artifacts/sql-sites

test:
	@unset PYTHONDONTWRITEBYTECODE; \
	started=$$(date +%s); summary=""; workers=$${TEST_WORKERS:-4}; \
	lanes=$$(test "$${TEST_LANES:-2}" = 1 && echo --sequential); \
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
	rm -rf $(SQL_SITES); export DROPBOX_TEST_SQL_SITES=$(SQL_SITES); \
	phase "tests on SQLite and PostgreSQL" $(BIN)/python scripts/run_tests.py --workers $$workers $$lanes; \
	phase "PostgreSQL reached every line that sent SQL" $(BIN)/python -m tests.sql_sites $(SQL_SITES); \
	echo "make test: total $$(clock $$(($$(date +%s) - started)))$$summary"

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis node_modules tests/artifacts
